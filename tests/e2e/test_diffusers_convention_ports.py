"""Schedulers written the way diffusers users write them pass the scheduler contract as they are.

`KwargsDDIM`: a keyword-argument constructor (also taking its own pydantic config), `set_timesteps(n,
device=None)` without `strength`, and a `RuntimeError` when `step` comes first. `PLMS`: a faithful port of
diffusers' PNDMScheduler with `skip_prk_steps` — order 1, n + 1 timesteps, the extra one declared as
`warmup_timesteps = 1`. Both are checked against diffusers (test-only oracle) step for step, and the DDIM one
runs img2img through a pipeline, starting where diffusers' img2img pipeline starts.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest
import torch
from pydantic import BaseModel, ConfigDict

from core import StepOutput, schedules
from core.contracts import run_contract

diffusers = pytest.importorskip("diffusers")


class Config(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    num_train_timesteps: int = 1000
    beta_start: float = 0.00085
    beta_end: float = 0.012
    beta_schedule: schedules.BetaSchedule = "scaled_linear"
    prediction_type: schedules.PredictionType = "epsilon"
    steps_offset: int = 1


class DiffusersStyle:
    """What the two ports share: construction from keyword arguments or a Config, ᾱ, `add_noise`."""

    order = 1
    init_noise_sigma = 1.0

    def __init__(self, config: Config | None = None, **kwargs: Any) -> None:
        self.config = config if config is not None else Config(**kwargs)
        schedule = schedules.ScheduleConfig(**self.config.model_dump(exclude={"steps_offset"}))
        self.alphas_cumprod = schedules.alphas_cumprod(schedule).double()
        self.num_inference_steps: int | None = None
        self.timesteps = torch.tensor([])

    def scale_model_input(self, sample: torch.Tensor, timestep: Any) -> torch.Tensor:
        return sample

    def add_noise(self, original: torch.Tensor, noise: torch.Tensor, timesteps: Any) -> torch.Tensor:
        t = torch.as_tensor(timesteps).long().reshape(-1)
        alpha = self.alphas_cumprod[t].to(original.dtype).reshape(-1, *([1] * (original.ndim - 1)))
        return alpha.sqrt() * original + (1 - alpha).sqrt() * noise

    def alpha(self, t: int) -> float:
        """ᾱ_t, and 1 below t = 0 (diffusers' `set_alpha_to_one`)."""
        return float(self.alphas_cumprod[t]) if t >= 0 else 1.0

    def require_timesteps(self) -> int:
        if self.num_inference_steps is None:
            raise RuntimeError("Number of inference steps is 'None', you need to run 'set_timesteps' first")
        return self.config.num_train_timesteps // self.num_inference_steps


class KwargsDDIM(DiffusersStyle):
    """DDIM, η = 0, `leading` spacing: x_prev = √ᾱ_prev·x̂0 + √(1-ᾱ_prev)·ε."""

    def set_timesteps(self, num_inference_steps: int, device: torch.device | str | None = None) -> None:
        self.num_inference_steps = num_inference_steps
        ratio = self.config.num_train_timesteps // num_inference_steps
        steps = np.arange(num_inference_steps)[::-1] * ratio + self.config.steps_offset
        self.timesteps = torch.from_numpy(steps.copy()).to(device)

    def step(self, model_output: torch.Tensor, timestep: Any, sample: torch.Tensor, **_: Any) -> StepOutput:
        t = int(timestep)
        prev = self.alpha(t - self.require_timesteps())
        a = self.alpha(t)
        x0 = (sample - (1 - a) ** 0.5 * model_output) / a**0.5
        return StepOutput(prev**0.5 * x0 + (1 - prev) ** 0.5 * model_output, x0)


class PLMS(DiffusersStyle):
    """Pseudo linear multistep (Liu et al. 2022), diffusers' PNDM with `skip_prk_steps`: the first step is taken
    twice (Euler, then the mean of both ε's from the same start), then Adams–Bashforth on ε of order 2 to 4."""

    warmup_timesteps = 1

    def set_timesteps(self, num_inference_steps: int, device: torch.device | str | None = None) -> None:
        self.num_inference_steps = num_inference_steps
        ratio = self.config.num_train_timesteps // num_inference_steps
        ascending = np.arange(num_inference_steps) * ratio + self.config.steps_offset
        steps = np.concatenate([ascending[:-1], ascending[-2:-1], ascending[-1:]])[::-1]
        self.timesteps = torch.from_numpy(steps.copy()).to(device)
        self.ets: list[torch.Tensor] = []
        self.counter = 0
        self.first_sample: torch.Tensor | None = None

    def step(self, model_output: torch.Tensor, timestep: Any, sample: torch.Tensor, **_: Any) -> StepOutput:
        ratio, t = self.require_timesteps(), int(timestep)
        prev = t - ratio
        if self.counter == 1:  # the repeated first timestep: step again from the first sample
            prev, t = t, t + ratio
            eps = (model_output + self.ets[-1]) / 2
            sample, self.first_sample = self.first_sample, None
        else:
            self.ets = [*self.ets[-3:], model_output]
            if self.counter == 0:
                self.first_sample = sample
            eps = self.multistep(self.ets)
        self.counter += 1
        a, a_prev = self.alpha(t), self.alpha(prev)
        denominator = a * (1 - a_prev) ** 0.5 + (a * (1 - a) * a_prev) ** 0.5
        return StepOutput((a_prev / a) ** 0.5 * sample - (a_prev - a) * eps / denominator)

    @staticmethod
    def multistep(ets: list[torch.Tensor]) -> torch.Tensor:
        weights = {1: [1], 2: [3, -1], 3: [23, -16, 5], 4: [55, -59, 37, -9]}[len(ets)]
        total = {1: 1, 2: 2, 3: 12, 4: 24}[len(ets)]
        return sum(w * e for w, e in zip(weights, reversed(ets), strict=False)) / total


REFERENCES = {
    KwargsDDIM: lambda c: diffusers.DDIMScheduler(**c, set_alpha_to_one=True, clip_sample=False),
    PLMS: lambda c: diffusers.PNDMScheduler(**c, skip_prk_steps=True, set_alpha_to_one=True),
}


@pytest.mark.parametrize("port", [KwargsDDIM, PLMS], ids=lambda p: p.__name__)
def test_a_diffusers_convention_port_passes_every_check(port):
    results = run_contract("scheduler", port)
    assert [r.name for r in results if not r.passed] == [], [(r.name, r.detail) for r in results if not r.passed]
    assert port().order == 1  # PLMS passes the timestep count by declaring its warm-up, not by a larger order


@pytest.mark.parametrize("port", [KwargsDDIM, PLMS], ids=lambda p: p.__name__)
def test_a_port_follows_diffusers_step_for_step(port):
    ours, theirs = port(), REFERENCES[port](Config().model_dump())
    ours.set_timesteps(10)
    theirs.set_timesteps(10)
    assert ours.timesteps.tolist() == theirs.timesteps.tolist()
    mine = reference = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for t in ours.timesteps:
        eps = torch.sin(3 * mine) * (t / 1000)
        mine = ours.step(eps, t, mine).prev_sample
        reference = theirs.step(eps, t, reference).prev_sample
        torch.testing.assert_close(mine, reference, rtol=1e-6, atol=1e-6)


def test_step_before_set_timesteps_may_raise_runtime_error():
    [result] = [r for r in run_contract("scheduler", KwargsDDIM) if r.name == "step_before_set_timesteps_raises"]
    assert result.passed
    with pytest.raises(RuntimeError, match="set_timesteps"):
        KwargsDDIM().step(torch.zeros(1), 500, torch.zeros(1))


@pytest.mark.parametrize("strength", [0.3, 0.75])
def test_img2img_through_a_pipeline_starts_at_diffusers_timestep(tiny_pipeline, strength):
    """pipe(image=…) with the strength-less DDIM: the sampler keeps timesteps[t_start:], t_start = n − ⌊n·s⌋, as
    StableDiffusionImg2ImgPipeline.get_timesteps does with diffusers' DDIMScheduler on the same schedule."""
    steps = 10
    pipe = dataclasses.replace(tiny_pipeline, scheduler=KwargsDDIM())
    [source] = pipe("a red circle", seed=1, steps=steps).images
    events: list[Any] = []
    pipe("a red circle", seed=2, steps=steps, image=source, strength=strength, callback=events.append)
    reference = REFERENCES[KwargsDDIM](Config().model_dump())
    reference.set_timesteps(steps)
    t_start = steps - min(int(steps * strength), steps)
    assert [int(e.timestep) for e in events] == reference.timesteps[t_start:].tolist()
