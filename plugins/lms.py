"""Linear multistep (LMS) update rule — Karras et al. (2022), "Elucidating the Design Space of Diffusion-Based
Generative Models" (k-diffusion's `sample_lms`): Adams–Bashforth on the probability-flow ODE in σ-space,
with variable steps, order 1–4."""
from __future__ import annotations

import numpy as np
import torch
from pydantic import Field

from core import ComponentSpec, StepOutput, hookimpl, schedules


class Config(schedules.ScheduleConfig):
    use_karras_sigmas: bool = Field(False, description="respace σ as in Karras et al. (2022), ρ = 7")
    solver_order: int = Field(4, ge=1, le=4, description="how many past derivatives each step combines")


class LMS(schedules.SigmaScheduler):
    """d_i = (x̃_i - x̂0_i)/σ_i;  x̃_{i+1} = x̃_i + Σ_{j<k} c_{ij}·d_{i-j}, where c_{ij} = ∫_{σ_i}^{σ_{i+1}} ℓ_j(σ)dσ
    integrates the Lagrange polynomial through the last k σ's, k = min(steps so far, solver_order).

    The weights are exact and computed once per `set_timesteps` (`schedules.lms_coefficients`); a step is
    k multiply-adds on the latents with host scalars, no integration and no device synchronisation.
    """

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self._coefficients: list[list[list[float]]] = []
        self._derivatives: list[torch.Tensor] = []                       # newest first, each (B, C, h, w)

    def set_timesteps(
        self, num_inference_steps: int, device: torch.device | str | None = None, *, strength: float = 1.0
    ) -> None:
        super().set_timesteps(num_inference_steps, device, strength=strength)
        self._coefficients = schedules.lms_coefficients(np.array(self.sigma_list), self.config.solver_order)
        self._derivatives = []

    def step(
        self,
        model_output: torch.Tensor,
        timestep: torch.Tensor | float | int,
        sample: torch.Tensor,
        *,
        generator: torch.Generator | None = None,
    ) -> StepOutput:
        expected = self._next
        i = self._begin_step(timestep, model_output)
        if i != expected:                                                   # not continuing the run: no history
            self._derivatives = []
        sigma = self.sigma_list[i]
        x0 = schedules.predicted_x0_sigma(self.config.prediction_type, model_output, sample, sigma)
        self._derivatives = [(sample - x0) / sigma, *self._derivatives][: self.config.solver_order]
        weights = self._coefficients[i][len(self._derivatives) - 1]
        # summed apart from the sample (the first step cancels most of x̃), in diffusers' order and rounding
        update = sum(weight * derivative for weight, derivative in zip(weights, self._derivatives))
        return StepOutput(sample + update, x0)


@hookimpl
def diffstack_components() -> list[ComponentSpec]:
    return [
        ComponentSpec(
            kind="scheduler", name="lms", factory=LMS, config=Config,
            description="linear multistep (k-diffusion): exact Adams–Bashforth weights, order 1-4, deterministic",
        )
    ]
