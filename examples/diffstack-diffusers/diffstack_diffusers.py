"""diffusers' scheduler classes as diffstack scheduler plugins: one adapter class per diffusers class, generated.

Each adapter wraps an instance of its diffusers class (`adapter.scheduler`) and delegates to it; what it adds is
diffstack's side of the `core.Scheduler` contract: a frozen pydantic `Config` generated from the diffusers
class's `__init__` signature (diffusers' names and defaults), `type(s)(s.config)` rebuilding an identical
scheduler, `step` refusing to run before `set_timesteps`, and `StepOutput` results.

Plugin names: `diffusers-` + the class name without `Scheduler` and `Discrete`, and without `Multistep` unless
diffusers also has the family's `Singlestep` class; lower case, with a `-` before `Ancestral`, `Multistep`,
`Singlestep` and `Parallel`: DDIMScheduler → diffusers-ddim, EulerAncestralDiscreteScheduler →
diffusers-euler-ancestral, UniPCMultistepScheduler → diffusers-unipc, DPMSolverMultistepScheduler →
diffusers-dpmsolver-multistep, KDPM2DiscreteScheduler → diffusers-kdpm2.
"""

from __future__ import annotations

import inspect
import types
from typing import Any, ClassVar, Literal, Union, get_args, get_origin

import diffusers
import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, create_model

from core import ComponentSpec, InputError, StepOutput, hookimpl
from core.interfaces import Generators
from core.schedules import check_num_steps
from core.validation import validate_config

ADAPTED: tuple[str, ...] = (
    "DDIMScheduler",
    "DDIMParallelScheduler",
    "DDPMScheduler",
    "DDPMParallelScheduler",
    "PNDMScheduler",
    "LMSDiscreteScheduler",
    "EulerDiscreteScheduler",
    "EulerAncestralDiscreteScheduler",
    "HeunDiscreteScheduler",
    "DPMSolverMultistepScheduler",
    "DPMSolverSinglestepScheduler",
    "UniPCMultistepScheduler",
    "LCMScheduler",
)
"""The diffusers classes registered as diffstack schedulers: each passes every check of diffstack's scheduler
contract with diffusers' defaults, overridden by its `EXAMPLE_CONFIGS` entry."""

EXAMPLE_CONFIGS: dict[str, dict[str, Any]] = {
    # diffusers' default PNDM runs Runge-Kutta warm-up steps, which fail for fewer than 4 steps (a numpy
    # broadcast error), and ends at ᾱ_0 < 1; Stable Diffusion's config skips them, and ᾱ = 1 ends at x0
    "PNDMScheduler": {"skip_prk_steps": True, "set_alpha_to_one": True},
}
"""Per class, the settings `diffstack check` and the contract tests use on top of diffusers' defaults."""

EXCLUDED: dict[str, str] = {
    "KDPM2DiscreteScheduler": "add_noise at an interpolated midpoint timestep uses the σ of the next full step, so "
    "a²/s² does not grow as t falls (fails add_noise_matches_forward_process)",
    "KDPM2AncestralDiscreteScheduler": "an interpolated midpoint timestep rounds to just below the full one after "
    "it (554.99994, 555), and add_noise at midpoints uses the σ of the next full step (fails timesteps_descending, "
    "add_noise_matches_forward_process)",
    "DEISMultistepScheduler": "its last step ends at σ of training timestep 0, √((1 - ᾱ_0)/ᾱ_0), not at σ = 0 "
    "(fails true_noise_ends_at_x0)",
    "SASolverScheduler": "a run fed the true noise misses x0 by 0.03 (it draws noise only for 200 ≤ t ≤ 800; fails "
    "true_noise_ends_at_x0)",
    "TCDScheduler": "a run fed the true noise misses x0 by 0.1 (fails true_noise_ends_at_x0)",
    "IPNDMScheduler": "no add_noise (so no img2img)",
    "EDMEulerScheduler": "EDM formulation: its timesteps are c_noise = ln(σ)/4, not training timesteps, and its "
    "model output is EDM-preconditioned (fails timesteps_in_range, true_noise_ends_at_x0)",
    "EDMDPMSolverMultistepScheduler": "EDM formulation: its timesteps are c_noise = ln(σ)/4, not training "
    "timesteps, and its model output is EDM-preconditioned (fails timesteps_in_range, true_noise_ends_at_x0)",
    "CMStochasticIterativeScheduler": "consistency models: its timesteps are 250·ln(σ), outside "
    "[0, num_train_timesteps) (fails timesteps_in_range)",
    "FlowMatchEulerDiscreteScheduler": "flow matching: no add_noise, scale_model_input or init_noise_sigma",
    "FlowMatchHeunDiscreteScheduler": "flow matching: no add_noise, scale_model_input or init_noise_sigma",
    "DDIMInverseScheduler": "inversion (image → noise): ascending timesteps, and no add_noise "
    "(fails timesteps_descending)",
    "DPMSolverMultistepInverseScheduler": "inversion (image → noise): ascending timesteps (fails timesteps_descending)",
    "ScoreSdeVeScheduler": "no step: its predictor and corrector are step_pred and step_correct",
    "RePaintScheduler": "inpainting: step needs original_image and mask",
    "KarrasVeScheduler": "no num_train_timesteps in its config, and step takes σ values (sigma_hat, sigma_prev)",
    "UnCLIPScheduler": "no order attribute",
    "DPMSolverSDEScheduler": "needs torchsde, which is not installed",
    "CosineDPMSolverMultistepScheduler": "needs torchsde, which is not installed",
}
"""The diffusers classes tried and left out, with the reason each one fails (at diffusers' defaults)."""

PNDM_ORDER = 4
"""diffusers' `PNDMScheduler.pndm_order`: the Runge-Kutta warm-up's model calls per step, and PLMS's order."""

VARIANTS = ("Ancestral", "Multistep", "Singlestep", "Parallel")


def plugin_name(class_name: str) -> str:
    """The diffstack name of a diffusers scheduler class (the rule is in the module docstring)."""
    stem = class_name.removesuffix("Scheduler").replace("Discrete", "")
    if "Multistep" in stem and not hasattr(diffusers, stem.replace("Multistep", "Singlestep") + "Scheduler"):
        stem = stem.replace("Multistep", "")
    for variant in VARIANTS:
        stem = stem.replace(variant, f"-{variant}")
    return "diffusers-" + stem.lower()


def json_type(annotation: Any) -> Any:
    """`annotation` with numpy arrays read as `list[float]`, or None when it holds a type JSON cannot carry."""
    if annotation is np.ndarray:
        return list[float]
    if annotation in (bool, int, float, str, type(None)) or get_origin(annotation) is Literal:
        return annotation
    if get_origin(annotation) is list:
        return annotation if all(json_type(arg) is arg for arg in get_args(annotation)) else None
    if get_origin(annotation) in (Union, types.UnionType):
        members = [json_type(arg) for arg in get_args(annotation)]
        return None if None in members else Union[tuple(dict.fromkeys(members))]  # noqa: UP007 (built at runtime)
    return None


class DiffusersConfig(BaseModel):
    """Base of the generated configs: frozen, typos rejected, defaults validated, ±inf kept through JSON."""

    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True, ser_json_inf_nan="constants")


def config_model(cls: type) -> type[DiffusersConfig]:
    """A pydantic Config with one field per `__init__` argument of diffusers class `cls`, at diffusers' default.

    An argument whose type JSON cannot carry (UniPC's `solver_p`, a scheduler object) is left out when its
    default is None: the wrapped class then keeps that default. Any other such argument is a TypeError.
    """
    fields: dict[str, Any] = {}
    for parameter in inspect.signature(cls).parameters.values():
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        annotation = json_type(parameter.annotation)
        if annotation is None:
            if parameter.default is None:
                continue
            raise TypeError(f"{cls.__name__}.{parameter.name}: {parameter.annotation} has no JSON form")
        if parameter.default is None:
            annotation = annotation | None
        fields[parameter.name] = (annotation, parameter.default)
    return create_model(f"{cls.__name__}Config", __base__=DiffusersConfig, __module__=__name__, **fields)


def warmup_timesteps(class_name: str, config: Any) -> int:
    """Timesteps beyond n·order that n steps of diffusers class `class_name` take: 0, except for PNDM.

    diffusers' `PNDMScheduler.set_timesteps`: with `skip_prk_steps` the PLMS timesteps repeat the second one
    (n + 1 timesteps). Without, Runge-Kutta spends `pndm_order` = 4 visits on each of the first 3 steps
    (12 timesteps), then PLMS takes the other n - 3: n + 3·pndm_order - 3 = n + 9.
    """
    if class_name != "PNDMScheduler":
        return 0
    return 1 if config.skip_prk_steps else 3 * PNDM_ORDER - 3


def fewest_steps(class_name: str, config: Any) -> int:
    """The fewest steps diffusers class `class_name` can set up: 1, except PNDM with its Runge-Kutta warm-up,
    whose `set_timesteps` fails (a numpy broadcast error) below `PNDM_ORDER` steps."""
    return PNDM_ORDER if class_name == "PNDMScheduler" and not config.skip_prk_steps else 1


class DiffusersScheduler:
    """A diffstack scheduler delegating to `self.scheduler`, an instance of `diffusers_class` built from `config`.

    Shapes: samples and model outputs (B, C, h, w); timesteps a number, a 0-d tensor or (for `add_noise`) a
    (B,) tensor, read in the dtype of `timesteps` (diffusers' Euler-type classes refuse integer ones).
    """

    diffusers_class: ClassVar[type]
    Config: ClassVar[type[DiffusersConfig]]
    name: ClassVar[str]
    order: ClassVar[int]
    takes_generator: ClassVar[bool]  # whether the diffusers class's step() draws noise from a `generator`

    def __init__(self, config: BaseModel | dict[str, Any] | None = None, **overrides: Any) -> None:
        """`config` (this class's Config, or a dict of its fields; None: diffusers' defaults), then `overrides`.
        The config remembers which fields were given (`model_fields_set`): what a scheduler swap carries."""
        given = config.model_dump(exclude_unset=True) if isinstance(config, BaseModel) else dict(config or {})
        self.config = validate_config(self.Config, given | overrides, where=f"scheduler {self.name!r}")
        self.scheduler = self.diffusers_class(**self.config.model_dump())
        self.warmup_timesteps = warmup_timesteps(self.diffusers_class.__name__, self.config)
        self._timesteps_set = False

    @property
    def timesteps(self) -> torch.Tensor:
        """(m,) descending, n ≤ m ≤ n·order + warmup_timesteps for n steps, in [0, num_train_timesteps)."""
        return self.scheduler.timesteps

    @property
    def init_noise_sigma(self) -> float:
        """The standard deviation of the starting noise: 1 for VP rules, ≈ the largest σ for σ-space ones."""
        return float(self.scheduler.init_noise_sigma)

    def set_timesteps(self, num_inference_steps: int, device: torch.device | str | None = None) -> None:
        """Fill `timesteps` for a run of `num_inference_steps` (an int in [1, num_train_timesteps]) on `device`."""
        steps = check_num_steps(num_inference_steps, self.config.num_train_timesteps)  # type: ignore[attr-defined]
        fewest = fewest_steps(self.diffusers_class.__name__, self.config)
        if steps < fewest:
            raise InputError(
                f"scheduler {self.name!r} with this config needs at least {fewest} steps, got {steps}",
                hint="use more steps, or set skip_prk_steps: true (Stable Diffusion's PNDM setting)",
            )
        self.scheduler.set_timesteps(steps, device=device)
        self._timesteps_set = True

    def scale_model_input(self, sample: torch.Tensor, timestep: torch.Tensor | float | int) -> torch.Tensor:
        """The denoiser input for `sample` at `timestep`: same shape, dtype and device."""
        return self.scheduler.scale_model_input(sample, self._timestep(timestep))

    def step(
        self,
        model_output: torch.Tensor,
        timestep: torch.Tensor | float | int,
        sample: torch.Tensor,
        *,
        generator: Generators = None,
    ) -> StepOutput:
        """One step of the rule from `sample` at `timestep`; stochastic rules draw their noise from `generator`."""
        if not self._timesteps_set:
            raise InputError(
                f"scheduler {self.name!r}: step() before set_timesteps()",
                hint="call set_timesteps(num_inference_steps) before the first step",
            )
        extra = {"generator": generator} if self.takes_generator else {}
        output = self.scheduler.step(model_output, self._timestep(timestep), sample, return_dict=True, **extra)
        return StepOutput(output.prev_sample, getattr(output, "pred_original_sample", None))

    def add_noise(
        self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor | float | int
    ) -> torch.Tensor:
        """x_t = a_t·x0 + s_t·noise at `timesteps` (a scalar, or (B,) with one per sample)."""
        t = self._timestep(timesteps).to(original_samples.device).reshape(-1)
        return self.scheduler.add_noise(original_samples, noise, t)

    def _timestep(self, timestep: torch.Tensor | float | int) -> torch.Tensor:
        return torch.as_tensor(timestep).to(self.scheduler.timesteps.dtype)


class BeginIndex:
    """`set_begin_index`, for adapters of diffusers classes that have it (the sampler then calls it for img2img)."""

    scheduler: Any

    def set_begin_index(self, begin_index: int = 0) -> None:
        """Start the run at index `begin_index` of `timesteps`, as diffusers' img2img pipeline does."""
        self.scheduler.set_begin_index(begin_index)


def adapter(class_name: str) -> type[DiffusersScheduler]:
    """The adapter class of diffusers class `class_name` (`diffusers.<class_name>`)."""
    cls = getattr(diffusers, class_name)
    bases = (DiffusersScheduler, BeginIndex) if hasattr(cls, "set_begin_index") else (DiffusersScheduler,)
    namespace = {
        "__doc__": f"diffusers' `{class_name}`, as the diffstack scheduler `{plugin_name(class_name)}`.",
        "__module__": __name__,
        "diffusers_class": cls,
        "Config": config_model(cls),
        "name": plugin_name(class_name),
        "order": int(cls.order),
        "takes_generator": "generator" in inspect.signature(cls.step).parameters,
    }
    return type(class_name.removesuffix("Scheduler"), bases, namespace)


ADAPTERS: dict[str, type[DiffusersScheduler]] = {plugin_name(name): adapter(name) for name in ADAPTED}
"""Plugin name → adapter class, for every class in `ADAPTED`."""


@hookimpl
def diffstack_components() -> list[ComponentSpec]:
    return [
        ComponentSpec(
            kind="scheduler",
            name=name,
            factory=cls,
            config=cls.Config,
            example_config=EXAMPLE_CONFIGS.get(cls.diffusers_class.__name__, {}),
            description=f"diffusers' {cls.diffusers_class.__name__}",
        )
        for name, cls in ADAPTERS.items()
    ]
