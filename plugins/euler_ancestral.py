"""Euler ancestral update rule — Karras et al. (2022), "Elucidating the Design Space of Diffusion-Based
Generative Models" (k-diffusion's `sample_euler_ancestral`): an Euler step down to σ_down, then fresh noise
back up to σ_{i+1}."""

from __future__ import annotations

import torch

from core import ComponentSpec, SigmaScheduler, StandIn, StepOutput, hookimpl, schedules
from core.discrete_scheduler import Noise


class Config(schedules.ScheduleConfig):
    pass


class EulerAncestral(SigmaScheduler):
    """σ_up = √(σ_{i+1}²(σ_i² - σ_{i+1}²)/σ_i²), σ_down = √(σ_{i+1}² - σ_up²);
    x̃_{i+1} = x̃_i + (σ_down - σ_i)·(x̃_i - x̂0)/σ_i + σ_up·z,  z ~ N(0, I) drawn every step."""

    config: Config

    def _precompute(self) -> None:
        # float32, like diffusers and k-diffusion: when σ_{i+1} ≪ σ_i, σ_down is a difference of near-equal
        # squares and its rounding becomes part of the trajectory
        sigma, sigma_next = self.sigmas[:-1], self.sigmas[1:]  # (m,) each
        sigma_up = (sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2) ** 0.5
        self._sigma_up = sigma_up.tolist()
        self._sigma_down = ((sigma_next**2 - sigma_up**2) ** 0.5).tolist()

    def _update(self, i: int, model_output: torch.Tensor, sample: torch.Tensor, noise: Noise) -> StepOutput:
        sigma, sigma_up, sigma_down = self.sigma_list[i], self._sigma_up[i], self._sigma_down[i]
        x = sample.to(torch.promote_types(sample.dtype, torch.float32))  # (B, C, h, w), at least float32
        x0 = schedules.predicted_x0_sigma(self.config.prediction_type, model_output, x, sigma)
        prev = x + (x - x0) / sigma * (sigma_down - sigma) + noise() * sigma_up
        return StepOutput(prev.to(sample.dtype), x0.to(sample.dtype))


@hookimpl
def diffstack_components() -> list[ComponentSpec]:
    about = "Euler ancestral (k-diffusion): Euler step plus fresh noise each step, stochastic"
    return [
        ComponentSpec(
            "scheduler",
            "euler-ancestral",
            EulerAncestral,
            Config,
            description=about,
            stands_in_for=(StandIn("EulerAncestralDiscreteScheduler"),),
        )
    ]
