"""diffstack core: interfaces, plugin manager, registry, pipeline, weights, errors, CLI and contract suites.

Public surface (docs/architecture.md)::

    reg = core.load_registry()                     # explicit path, $DIFFSTACK_REGISTRY, ./registry.yaml, bundled
    pipe = reg.build("shapes-tiny", device="cpu")  # a core.Pipeline holding the five parts
    core.create("scheduler", "ddim", eta=0.0)      # one component, no registry
    core.available_plugins()                       # {kind: [names]}
"""

from core import schedules
from core.checkpoint_layout import CheckpointLayout, FileTensor
from core.component_spec import ComponentSpec
from core.create import available_plugins, create
from core.discrete_scheduler import SigmaScheduler, VPScheduler
from core.errors import (
    ConfigError,
    DiffstackError,
    InputError,
    PluginError,
    RegistryError,
    UnknownComponentError,
    WeightsError,
)
from core.generation import Generation, Settings
from core.hookspecs import hookimpl
from core.interfaces import (
    KINDS,
    Conditioning,
    Dataset,
    Denoiser,
    Encoder,
    Kind,
    PredictionType,
    Sampler,
    SamplerInputs,
    Scheduler,
    StepCallback,
    StepEvent,
    StepOutput,
    TextConditioner,
)
from core.pipeline import Pipeline
from core.plugin_manager import PluginManager
from core.registry import Registry, load_registry
from core.scheduler_from_diffusers import scheduler_from_diffusers
from core.stand_in import StandIn
from core.version import __version__

__all__ = [
    "KINDS",
    "CheckpointLayout",
    "FileTensor",
    "StandIn",
    "ComponentSpec",
    "ConfigError",
    "Dataset",
    "Denoiser",
    "DiffstackError",
    "Encoder",
    "Generation",
    "InputError",
    "Kind",
    "Pipeline",
    "PluginError",
    "PluginManager",
    "PredictionType",
    "Registry",
    "RegistryError",
    "Sampler",
    "SamplerInputs",
    "Scheduler",
    "Settings",
    "SigmaScheduler",
    "StepCallback",
    "StepEvent",
    "StepOutput",
    "TextConditioner",
    "Conditioning",
    "UnknownComponentError",
    "VPScheduler",
    "WeightsError",
    "available_plugins",
    "create",
    "hookimpl",
    "load_registry",
    "scheduler_from_diffusers",
    "schedules",
    "__version__",
]
