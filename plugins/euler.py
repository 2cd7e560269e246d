"""Euler update rule — Karras et al. (2022), "Elucidating the Design Space of Diffusion-Based Generative
Models", Algorithm 2 without churn: one explicit Euler step of the probability-flow ODE in σ-space."""

from __future__ import annotations

import torch
from pydantic import Field

from core import ComponentSpec, SigmaScheduler, StandIn, StepOutput, hookimpl, schedules
from core.discrete_scheduler import Noise


class Config(schedules.ScheduleConfig):
    use_karras_sigmas: bool = Field(False, description="respace σ as in Karras et al. (2022), ρ = 7")


class Euler(SigmaScheduler):
    """dx̃/dσ = (x̃ - x̂0)/σ;  x̃_{i+1} = x̃_i + (σ_{i+1} - σ_i)·(x̃_i - x̂0)/σ_i."""

    config: Config

    def _update(self, i: int, model_output: torch.Tensor, sample: torch.Tensor, noise: Noise) -> StepOutput:
        sigma, sigma_next = self.sigma_list[i], self.sigma_list[i + 1]
        x = sample.to(torch.promote_types(sample.dtype, torch.float32))  # (B, C, h, w), at least float32
        x0 = schedules.predicted_x0_sigma(self.config.prediction_type, model_output, x, sigma)
        derivative = (x - x0) / sigma
        prev = x + derivative * (sigma_next - sigma)
        return StepOutput(prev.to(sample.dtype), x0.to(sample.dtype))


@hookimpl
def diffstack_components() -> list[ComponentSpec]:
    about = "Euler (Karras et al. 2022): first-order ODE step in σ-space, deterministic"
    return [
        ComponentSpec(
            "scheduler", "euler", Euler, Config, description=about, stands_in_for=(StandIn("EulerDiscreteScheduler"),)
        )
    ]
