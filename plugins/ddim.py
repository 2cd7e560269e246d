"""DDIM update rule — Song, Meng & Ermon (2021), "Denoising Diffusion Implicit Models", eq. 12."""

from __future__ import annotations

import torch
from pydantic import Field

from core import ComponentSpec, StandIn, StepOutput, VPScheduler, hookimpl, schedules
from core.discrete_scheduler import Noise


class Config(schedules.ThresholdingConfig, schedules.ScheduleConfig):
    timestep_spacing: schedules.TimestepSpacing = "leading"
    eta: float = Field(0.0, ge=0.0, le=1.0, description="η: 0 deterministic DDIM, 1 the DDPM posterior's noise")
    clip_sample: bool = Field(True, description="clip x̂0 to [-clip_sample_range, clip_sample_range]")
    clip_sample_range: float = Field(1.0, gt=0.0)
    set_alpha_to_one: bool = Field(True, description="the last step goes to ᾱ = 1 (else to ᾱ_0)")


class DDIM(VPScheduler):
    """x_{t'} = √ᾱ_{t'}·x̂0 + √(1 - ᾱ_{t'} - s²)·ε̂ + s·z,  s = η·√((1-ᾱ_{t'})/(1-ᾱ_t)·(1 - ᾱ_t/ᾱ_{t'})),

    t' the next timestep of the schedule (whatever the spacing), ᾱ after the last one = 1 (`set_alpha_to_one`)
    or ᾱ_0; z ~ N(0, I) only when η > 0.
    """

    config: Config
    _coefficients: list[list[float]]

    def _precompute(self) -> None:
        final = torch.ones(1) if self.config.set_alpha_to_one else self.alphas_cumprod[:1]
        alpha_prod = self.alphas_cumprod[torch.tensor(self.timestep_list).long()]  # (m,) ᾱ_t
        alpha_prod_next = torch.cat([alpha_prod[1:], final])  # (m,) ᾱ_{t'}
        variance = (1 - alpha_prod_next) / (1 - alpha_prod) * (1 - alpha_prod / alpha_prod_next)
        std = self.config.eta * variance**0.5
        of_x_t = [alpha_prod**0.5, (1 - alpha_prod) ** 0.5]  # α, σ of x_t
        of_next = [alpha_prod_next**0.5, (1 - alpha_prod_next - std**2) ** 0.5, std]  # α', √(1-ᾱ'-s²), s
        self._coefficients = torch.stack([*of_x_t, *of_next], dim=1).tolist()

    def _update(self, i: int, model_output: torch.Tensor, sample: torch.Tensor, noise: Noise) -> StepOutput:
        alpha, sigma, alpha_next, direction, std = self._coefficients[i]
        c = self.config
        x0 = schedules.predicted_x0(c.prediction_type, model_output, sample, alpha, sigma)  # (B, C, h, w)
        eps = schedules.predicted_eps(c.prediction_type, model_output, sample, alpha, sigma)
        x0 = schedules.clip_or_threshold(x0, c)
        prev = alpha_next * x0 + direction * eps
        return StepOutput(prev + std * noise() if c.eta > 0 else prev, x0)


@hookimpl
def diffstack_components() -> list[ComponentSpec]:
    about = "DDIM (Song et al. 2021): deterministic at eta=0, DDPM-like noise at eta=1"
    return [
        ComponentSpec(
            "scheduler",
            "ddim",
            DDIM,
            Config,
            description=about,
            example_config={"clip_sample": False},
            stands_in_for=(StandIn("DDIMScheduler"),),
        )
    ]
