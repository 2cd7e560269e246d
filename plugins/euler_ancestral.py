"""Euler ancestral update rule — Karras et al. (2022), "Elucidating the Design Space of Diffusion-Based
Generative Models" (k-diffusion's `sample_euler_ancestral`): an Euler step down to σ_down, then fresh noise
back up to σ_{i+1}."""
from __future__ import annotations

import torch

from core import ComponentSpec, StepOutput, hookimpl, schedules


class Config(schedules.ScheduleConfig):
    pass


class EulerAncestral(schedules.SigmaScheduler):
    """σ_up = √(σ_{i+1}²(σ_i² - σ_{i+1}²)/σ_i²), σ_down = √(σ_{i+1}² - σ_up²);
    x̃_{i+1} = x̃_i + (σ_down - σ_i)·(x̃_i - x̂0)/σ_i + σ_up·z,  z ~ N(0, I) drawn every step."""

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self._sigma_up: list[float] = []
        self._sigma_down: list[float] = []

    def set_timesteps(
        self, num_inference_steps: int, device: torch.device | str | None = None, *, strength: float = 1.0
    ) -> None:
        super().set_timesteps(num_inference_steps, device, strength=strength)
        # float32, like diffusers and k-diffusion: when σ_{i+1} ≪ σ_i, σ_down is a difference of near-equal
        # squares and its rounding becomes part of the trajectory
        sigma, sigma_next = self.sigmas[:-1], self.sigmas[1:]                # (m,) each
        sigma_up = (sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2) ** 0.5
        self._sigma_up = sigma_up.tolist()
        self._sigma_down = ((sigma_next**2 - sigma_up**2) ** 0.5).tolist()

    def step(
        self,
        model_output: torch.Tensor,
        timestep: torch.Tensor | float | int,
        sample: torch.Tensor,
        *,
        generator: torch.Generator | None = None,
    ) -> StepOutput:
        i = self._begin_step(timestep, model_output)
        sigma, sigma_up, sigma_down = self.sigma_list[i], self._sigma_up[i], self._sigma_down[i]
        x = sample.to(torch.promote_types(sample.dtype, torch.float32))    # (B, C, h, w), at least float32
        x0 = schedules.predicted_x0_sigma(self.config.prediction_type, model_output, x, sigma)
        prev = x + (x - x0) / sigma * (sigma_down - sigma)
        noise = schedules.randn(model_output.shape, generator, model_output.device, model_output.dtype)
        prev = prev + noise * sigma_up
        return StepOutput(prev.to(sample.dtype), x0.to(sample.dtype))


@hookimpl
def diffstack_components() -> list[ComponentSpec]:
    return [
        ComponentSpec(
            kind="scheduler", name="euler-ancestral", factory=EulerAncestral, config=Config,
            description="Euler ancestral (k-diffusion): Euler step plus fresh noise each step, stochastic",
        )
    ]
