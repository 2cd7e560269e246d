"""Parity of the built-in schedulers with diffusers (a test-only oracle; the product never imports diffusers).

For every rule × schedule × spacing × prediction type: timesteps identical, and full loops with diffusers'
dummy model x·t/(t+1) on (2, 4, 8, 8) float32 latents equal within 1e-5 of the trajectory's magnitude at every
step. 7 and 10 steps run for every combination; 25 and 50 steps for the Stable Diffusion schedule
(scaled_linear) with every spacing, ε at 25 and 50 steps, v at 25. Rule options run at 10 steps.

Where diffusers is itself wrong the oracle is given the intended input, and the test says so:
- diffusers' DDIM steps to t - ⌊T/n⌋, the next scheduled timestep only for `leading` spacing (and
  `trailing` when n divides T); its oracle is handed that next timestep, so the comparison is of the update;
- diffusers' σ-space schedulers find their first step by value and pick the second of repeated timesteps
  (cosine + Karras); the oracle gets `set_begin_index(0)`, as diffusers' own img2img pipeline does.
"""

from __future__ import annotations

import inspect
import itertools
from typing import Any

import numpy as np
import pytest
import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    LMSDiscreteScheduler,
)

from core.plugin_manager import PluginManager

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:diffusers", "ignore::UserWarning:diffusers")

REFERENCE = {
    "ddpm": DDPMScheduler,
    "ddim": DDIMScheduler,
    "lms": LMSDiscreteScheduler,
    "euler": EulerDiscreteScheduler,
    "euler-ancestral": EulerAncestralDiscreteScheduler,
    "dpmpp-2m": DPMSolverMultistepScheduler,
}
SCHEDULES: dict[str, dict[str, Any]] = {
    "linear": {"beta_schedule": "linear"},
    "scaled_linear": {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012},
    "cosine": {"beta_schedule": "squaredcos_cap_v2"},
    "trained_betas": {"trained_betas": (np.linspace(0.0002, 0.015, 1000) ** 1.2).tolist()},
}
SPACINGS = ("linspace", "leading", "trailing")
PREDICTIONS = ("epsilon", "v_prediction", "sample")
OPTIONS: dict[str, list[dict[str, Any]]] = {
    "ddpm": [
        {"variance_type": "fixed_large"},
        {"variance_type": "fixed_small_log"},
        {"clip_sample": False},
        {"thresholding": True},
        {"variance_type": "learned_range"},
        {"variance_type": "learned"},
    ],
    "ddim": [{"eta": 1.0}, {"eta": 0.5, "clip_sample": False}, {"set_alpha_to_one": False}, {"thresholding": True}],
    "lms": [{"use_karras_sigmas": True}, {"solver_order": 1}, {"solver_order": 2}, {"solver_order": 3}],
    "euler": [{"use_karras_sigmas": True}],
    "euler-ancestral": [],
    "dpmpp-2m": [
        {"use_karras_sigmas": True},
        {"solver_order": 1},
        {"solver_order": 3},
        {"solver_type": "heun"},
        {"final_sigmas_type": "sigma_min"},
        {"euler_at_final": True},
        {"lower_order_final": False},
        {"thresholding": True},
    ],
}
STOCHASTIC = {"ddpm", "euler-ancestral"}
PLUGINS = PluginManager.discover(entry_points=False)
DIFFUSERS_LMS_WEIGHT = LMSDiscreteScheduler.get_lms_coefficient


@pytest.fixture(autouse=True, scope="module")
def shared_diffusers_lms_weights() -> Any:
    """diffusers' LMS integrates each weight with scipy at every step (~10 ms a step); a weight depends only on
    σ, so runs over the same σ (the prediction types) reuse diffusers' own results."""
    weights: dict[tuple[Any, ...], float] = {}

    def memoised(self: LMSDiscreteScheduler, order: int, t: int, current_order: int) -> float:
        key = (self.sigmas.numpy().tobytes(), order, t, current_order)
        if key not in weights:
            weights[key] = DIFFUSERS_LMS_WEIGHT(self, order, t, current_order)
        return weights[key]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(LMSDiscreteScheduler, "get_lms_coefficient", memoised)
        yield


def ours(name: str, **config: Any) -> Any:
    """Our rule `name`; `lms` without its stability cap, which is diffusers' LMS exactly."""
    spec = PLUGINS.get("scheduler", name).spec
    if name == "lms":
        config.setdefault("stability_cap", False)
    return spec.build(spec.config(**config))


def reference(name: str, **config: Any) -> tuple[Any, dict[str, Any]]:
    """The diffusers scheduler and the extra `step` arguments our config turns into."""
    config = dict(config)
    step_kwargs = {}
    if name == "ddim":
        step_kwargs["eta"] = config.pop("eta", 0.0)
    if name == "lms":
        step_kwargs["order"] = config.pop("solver_order", 4)
        config.pop("stability_cap", None)
    return REFERENCE[name](**config), step_kwargs


def dummy_model(sample: torch.Tensor, t: torch.Tensor, variance: str | None = None) -> torch.Tensor:
    """diffusers' scheduler-test model x·t/(t+1); with a learned variance, C more channels for it."""
    out = sample * t / (t + 1)
    if variance == "learned_range":
        return torch.cat([out, torch.tanh(sample)], dim=1)  # in [-1, 1]
    if variance == "learned":
        return torch.cat([out, 0.01 * torch.sigmoid(sample)], dim=1)  # a positive variance
    return out


class NextTimestep(int):
    """A timestep whose `t - ⌊T/n⌋` (diffusers' DDIM) is the schedule's next timestep."""

    def __new__(cls, value: int, following: int) -> NextTimestep:
        self = super().__new__(cls, value)
        self.following = following
        return self

    def __sub__(self, other: Any) -> int:
        return self.following


def noise(seed: int = 0) -> torch.Tensor:
    return torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(seed))


def run(
    scheduler: Any,
    sample: torch.Tensor,
    *,
    step_kwargs: dict[str, Any] | None = None,
    variance: str | None = None,
    ddim_oracle: bool = False,
) -> list[torch.Tensor]:
    """The classic loop over `scheduler.timesteps` from `sample`; the sample after every step."""
    step_kwargs = dict(step_kwargs or {})
    if "generator" in inspect.signature(scheduler.step).parameters:  # diffusers' LMS takes none
        step_kwargs["generator"] = torch.Generator().manual_seed(1)
    timesteps = scheduler.timesteps
    following = [*timesteps.tolist()[1:], -1]
    out = []
    for t, t_next in zip(timesteps, following, strict=True):
        model_output = dummy_model(scheduler.scale_model_input(sample, t), t, variance)
        t_arg = NextTimestep(int(t), t_next) if ddim_oracle else t
        sample = scheduler.step(model_output, t_arg, sample, **step_kwargs).prev_sample
        out.append(sample)
    return out


def assert_same_trajectory(actual: list[torch.Tensor], expected: list[torch.Tensor]) -> None:
    assert len(actual) == len(expected)
    scale = max(x.abs().max().item() for x in expected)
    for i, (a, b) in enumerate(zip(actual, expected, strict=True)):
        error = (a - b).abs().max().item()
        assert error <= 1e-5 * scale, f"step {i}: max |Δ| {error:.3g} > 1e-5 × {scale:.3g}"


def check(name: str, steps: int, **config: Any) -> None:
    mine = ours(name, **config)
    theirs, step_kwargs = reference(name, **config)
    mine.set_timesteps(steps)
    theirs.set_timesteps(steps)
    assert torch.equal(mine.timesteps, theirs.timesteps), (mine.timesteps, theirs.timesteps)
    assert mine.init_noise_sigma == pytest.approx(float(theirs.init_noise_sigma), rel=1e-6)
    if hasattr(theirs, "set_begin_index"):
        theirs.set_begin_index(0)
    variance = config.get("variance_type") if name == "ddpm" else None
    expected = run(
        theirs,
        noise() * float(theirs.init_noise_sigma),
        step_kwargs=step_kwargs,
        variance=variance,
        ddim_oracle=name == "ddim",
    )
    assert_same_trajectory(run(mine, noise() * mine.init_noise_sigma, variance=variance), expected)


def config_for(schedule: str, spacing: str, prediction_type: str) -> dict[str, Any]:
    return {
        **SCHEDULES[schedule],
        "timestep_spacing": spacing,
        "prediction_type": prediction_type,
        "steps_offset": 1 if spacing == "leading" else 0,
    }


GRID = [
    (name, schedule, spacing, prediction, steps)
    for name, schedule, spacing, prediction, steps in itertools.product(
        REFERENCE, SCHEDULES, SPACINGS, PREDICTIONS, (7, 10, 25, 50)
    )
    if not (name == "euler-ancestral" and prediction == "sample")  # diffusers: NotImplementedError
]


@pytest.mark.parametrize("name, schedule, spacing, prediction_type, steps", GRID)
def test_trajectory_matches_diffusers(name: str, schedule: str, spacing: str, prediction_type: str, steps: int) -> None:
    check(name, steps, **config_for(schedule, spacing, prediction_type))


@pytest.mark.parametrize(
    "name, options, schedule, spacing",
    [
        (name, options, schedule, spacing)
        for name in REFERENCE
        for options in OPTIONS[name]
        for schedule in ("scaled_linear", "cosine")
        for spacing in SPACINGS
    ],
)
def test_options_match_diffusers(name: str, options: dict[str, Any], schedule: str, spacing: str) -> None:
    check(name, 10, **config_for(schedule, spacing, "epsilon"), **options)


def test_lms_golden_numbers() -> None:
    """diffusers' own LMS test (T=1100, linear 1e-4..0.02, 10 steps), including its loop, which hands the
    *scaled* sample to `step`: Σ|x| ≈ 1006.388, mean |x| ≈ 1.31."""
    lms = ours("lms", num_train_timesteps=1100, beta_start=0.0001, beta_end=0.02, beta_schedule="linear")
    lms.set_timesteps(10)
    sample = torch.arange(4 * 3 * 8 * 8).reshape(3, 8, 8, 4).permute(3, 0, 1, 2) / (4 * 3 * 8 * 8)
    sample = sample * lms.init_noise_sigma
    for t in lms.timesteps:
        sample = lms.scale_model_input(sample, t)
        sample = lms.step(sample * t / (t + 1), t, sample).prev_sample
    assert abs(sample.abs().sum().item() - 1006.388) < 1e-2
    assert abs(sample.abs().mean().item() - 1.31) < 1e-3


def test_euler_ancestral_sample_prediction_equals_epsilon_run() -> None:
    """diffusers has no x0 prediction for Euler ancestral; fed the x0 that the ε model implies, ours must
    retrace its ε trajectory, noise draws included."""
    runs = []
    for prediction_type in ("epsilon", "sample"):
        scheduler = ours("euler-ancestral", prediction_type=prediction_type)
        scheduler.set_timesteps(10)
        sample = noise() * scheduler.init_noise_sigma
        generator = torch.Generator().manual_seed(1)
        for t, sigma in zip(scheduler.timesteps, scheduler.sigma_list, strict=False):
            eps = dummy_model(scheduler.scale_model_input(sample, t), t)
            output = eps if prediction_type == "epsilon" else sample - sigma * eps
            sample = scheduler.step(output, t, sample, generator=generator).prev_sample
        runs.append(sample)
    torch.testing.assert_close(runs[1], runs[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", list(REFERENCE))
@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("strength", [0.3, 0.5, 0.75, 1.0])
def test_img2img_start_matches_diffusers(name: str, spacing: str, strength: float) -> None:
    """StableDiffusionImg2ImgPipeline.get_timesteps: keep timesteps[t_start·order:], t_start = n - ⌊n·strength⌋,
    and noise the init latents at the first kept timestep."""
    steps, config = 10, {**SCHEDULES["scaled_linear"], "timestep_spacing": spacing}
    mine = ours(name, **config)
    mine.set_timesteps(steps, strength=strength)
    theirs, _ = reference(name, **config)
    theirs.set_timesteps(steps)
    t_start = max(steps - min(int(steps * strength), steps), 0)
    begin = t_start * theirs.order
    assert torch.equal(mine.timesteps, theirs.timesteps[begin:])
    if hasattr(theirs, "set_begin_index"):
        theirs.set_begin_index(begin)
    x0, eps, first = noise(2), noise(), theirs.timesteps[begin : begin + 1].repeat(2)
    torch.testing.assert_close(mine.add_noise(x0, eps, first), theirs.add_noise(x0, eps, first), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["ddpm", "ddim", "euler", "euler-ancestral", "dpmpp-2m"])
def test_img2img_trajectory_matches_diffusers(name: str) -> None:
    steps, strength, config = 10, 0.6, SCHEDULES["scaled_linear"]
    mine = ours(name, **config)
    mine.set_timesteps(steps, strength=strength)
    theirs, step_kwargs = reference(name, **config)
    theirs.set_timesteps(steps)
    begin = (steps - int(steps * strength)) * theirs.order
    if hasattr(theirs, "set_begin_index"):
        theirs.set_begin_index(begin)
    theirs.timesteps = theirs.timesteps[begin:]  # what the pipeline iterates over
    x0 = noise(2)
    start = mine.add_noise(x0, noise(), mine.timesteps[:1])
    torch.testing.assert_close(start, theirs.add_noise(x0, noise(), theirs.timesteps[:1]))
    expected = run(theirs, start, step_kwargs=step_kwargs, ddim_oracle=name == "ddim")
    assert_same_trajectory(run(mine, start), expected)


def test_lms_img2img_starts_a_fresh_multistep_run() -> None:
    """diffusers' LMS starting at begin_index uses order-4 weights with one derivative of history; ours starts
    at the kept σ with the history it has (order 1, then 2, …), i.e. exactly an LMS run over the kept σ."""
    steps, strength, config = 10, 0.6, SCHEDULES["scaled_linear"]
    mine = ours("lms", **config)
    mine.set_timesteps(steps, strength=strength)
    fresh, _ = reference("lms", **config)
    fresh.set_timesteps(steps)
    begin = steps - int(steps * strength)
    fresh.timesteps, fresh.sigmas = fresh.timesteps[begin:], fresh.sigmas[begin:]
    fresh.set_begin_index(0)
    start = mine.add_noise(noise(2), noise(), mine.timesteps[:1])
    assert_same_trajectory(run(mine, start), run(fresh, start))
