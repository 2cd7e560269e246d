"""The hooks a diffstack plugin can implement (pluggy project name "diffstack").

A plugin is a module (or object) with functions decorated by `core.hookimpl`. Each hook's docstring is
its contract.
"""

from __future__ import annotations

from pathlib import Path

import pluggy
import torch

from core.component_spec import ComponentSpec
from core.interfaces import StepEvent

PROJECT_NAME = "diffstack"
hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def diffstack_components() -> list[ComponentSpec]:
    """Return the components this plugin provides.

    Called when the plugin is loaded (to check what it returns) and whenever the plugin manager builds its
    component table. Two plugins may not provide the same (kind, name); that clash is an error naming both
    providers.
    """
    raise NotImplementedError


@hookspec
def diffstack_step_end(event: StepEvent) -> None:
    """Called after every denoising step of every pipeline run, in order.

    For progress, previews and logging; call `event.request_stop()` to end the run early. Must not modify
    `event.latents` in place.
    """


@hookspec(firstresult=True)
def diffstack_load_weights(path: Path, kind: str, format: str) -> dict[str, torch.Tensor] | None:
    """Read a checkpoint format diffstack does not know.

    path: the file or folder named in the registry; kind: the component kind being loaded; format: the
    `format` named in the registry (`auto` when unspecified). Return a state dict in the component's native
    key names, or None to let the next plugin (and finally the built-in readers) try.
    """
