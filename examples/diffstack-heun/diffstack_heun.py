"""Heun's second-order update rule — Karras et al. (2022), "Elucidating the Design Space of Diffusion-Based
Generative Models", Algorithm 1: an Euler prediction, corrected with the slope at its end point."""

from __future__ import annotations

import numpy as np
import torch
from pydantic import Field

from core import ComponentSpec, InputError, SigmaScheduler, StepOutput, hookimpl, schedules
from core.discrete_scheduler import Noise


class Config(schedules.ScheduleConfig):
    beta_start: float = Field(0.00085, gt=0.0, lt=1.0)
    beta_end: float = Field(0.012, gt=0.0, lt=1.0)
    use_karras_sigmas: bool = Field(False, description="respace σ as in Karras et al. (2022), ρ = 7")


class Heun(SigmaScheduler):
    """d = (x̃ - x̂0)/σ_i;  x̃' = x̃ + (σ_{i+1} - σ_i)·d;  d' = (x̃' - x̂0')/σ_{i+1};
    x̃_{i+1} = x̃ + (σ_{i+1} - σ_i)·(d + d')/2.

    Timesteps t0, t1, t1, t2, t2, …: even visits predict (σ_i → σ_{i+1}), odd ones correct; σ_list[i] is the
    noise level of visit i. The last step, down to σ = 0, is a plain Euler step. `history` holds the
    prediction's (x̃, d) until its correction.
    """

    order = 2  # two model calls per step

    def _schedule(self, num_steps: int) -> tuple[np.ndarray, np.ndarray]:
        t, s = super()._schedule(num_steps)  # (n,), (n+1,) ending in σ = 0
        return np.concatenate([t[:1], t[1:].repeat(2)]), np.concatenate([s[:1], s[1:-1].repeat(2), s[-1:]])

    def _update(self, i: int, model_output: torch.Tensor, sample: torch.Tensor, noise: Noise) -> StepOutput:
        x0 = schedules.predicted_x0_sigma(self.config.prediction_type, model_output, sample, self.sigma_list[i])
        if i % 2 == 0:  # predict
            sigma, sigma_next = self.sigma_list[i], self.sigma_list[i + 1]
            self.history = [(sample, (sample - x0) / sigma)]
            return StepOutput(sample + self.history[0][1] * (sigma_next - sigma), x0)
        if not self.history:
            raise InputError(f"Heun: correction at step {i} without its prediction", hint="step in timestep order")
        [(start, slope)], self.history = self.history, []  # correct
        sigma, sigma_next = self.sigma_list[i - 1], self.sigma_list[i]
        return StepOutput(start + (slope + (sample - x0) / sigma_next) / 2 * (sigma_next - sigma), x0)


@hookimpl
def diffstack_components() -> list[ComponentSpec]:
    return [ComponentSpec(kind="scheduler", name="heun", factory=Heun, config=Config, description="Heun, 2nd order")]
