"""DDIM update rule — Song, Meng & Ermon (2021), "Denoising Diffusion Implicit Models", eq. 12."""
from __future__ import annotations

import torch
from pydantic import Field

from core import ComponentSpec, StepOutput, hookimpl, schedules


class Config(schedules.ThresholdingConfig, schedules.ScheduleConfig):
    timestep_spacing: schedules.TimestepSpacing = "leading"
    eta: float = Field(0.0, ge=0.0, le=1.0, description="η: 0 deterministic DDIM, 1 the DDPM posterior's noise")
    clip_sample: bool = Field(True, description="clip x̂0 to [-clip_sample_range, clip_sample_range]")
    clip_sample_range: float = Field(1.0, gt=0.0)
    set_alpha_to_one: bool = Field(True, description="the last step goes to ᾱ = 1 (else to ᾱ_0)")


class DDIM(schedules.VPScheduler):
    """x_{t'} = √ᾱ_{t'}·x̂0 + √(1 - ᾱ_{t'} - s²)·ε̂ + s·z,  s = η·√((1-ᾱ_{t'})/(1-ᾱ_t)·(1 - ᾱ_t/ᾱ_{t'})),

    t' the next timestep of the schedule (whatever the spacing), ᾱ after the last one = 1 (`set_alpha_to_one`)
    or ᾱ_0; z ~ N(0, I) only when η > 0.
    """

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self._coefficients: list[tuple[float, float, float, float, float]] = []

    def set_timesteps(
        self, num_inference_steps: int, device: torch.device | str | None = None, *, strength: float = 1.0
    ) -> None:
        super().set_timesteps(num_inference_steps, device, strength=strength)
        final = torch.ones(1) if self.config.set_alpha_to_one else self.alphas_cumprod[:1]
        alpha_prod = self.alphas_cumprod[torch.tensor(self.timestep_list).long()]     # (m,) ᾱ_t
        alpha_prod_next = torch.cat([alpha_prod[1:], final])                         # (m,) ᾱ_{t'}
        variance = (1 - alpha_prod_next) / (1 - alpha_prod) * (1 - alpha_prod / alpha_prod_next)
        std = self.config.eta * variance**0.5
        self._coefficients = list(zip(
            (alpha_prod**0.5).tolist(), ((1 - alpha_prod) ** 0.5).tolist(),         # α, σ of x_t
            (alpha_prod_next**0.5).tolist(), ((1 - alpha_prod_next - std**2) ** 0.5).tolist(), std.tolist(),
        ))

    def step(
        self,
        model_output: torch.Tensor,
        timestep: torch.Tensor | float | int,
        sample: torch.Tensor,
        *,
        generator: torch.Generator | None = None,
    ) -> StepOutput:
        i = self._begin_step(timestep, model_output)
        alpha, sigma, alpha_next, direction, std = self._coefficients[i]
        c = self.config
        x0 = schedules.predicted_x0(c.prediction_type, model_output, sample, alpha, sigma)   # (B, C, h, w)
        eps = schedules.predicted_eps(c.prediction_type, model_output, sample, alpha, sigma)
        if c.thresholding:
            x0 = schedules.threshold(x0, c.dynamic_thresholding_ratio, c.sample_max_value)
        elif c.clip_sample:
            x0 = x0.clamp(-c.clip_sample_range, c.clip_sample_range)
        prev = alpha_next * x0 + direction * eps
        if c.eta > 0:
            prev = prev + std * schedules.randn(model_output.shape, generator, model_output.device, model_output.dtype)
        return StepOutput(prev, x0)


@hookimpl
def diffstack_components() -> list[ComponentSpec]:
    return [
        ComponentSpec(
            kind="scheduler", name="ddim", factory=DDIM, config=Config, example_config={"clip_sample": False},
            description="DDIM (Song et al. 2021): deterministic at eta=0, DDPM-like noise at eta=1",
        )
    ]
