"""DDPM update rule — Ho, Jain & Abbeel (2020), "Denoising Diffusion Probabilistic Models", eqs. 6–7; learned
variances after Nichol & Dhariwal (2021), "Improved Denoising Diffusion Probabilistic Models"."""
from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from core import ComponentSpec, InputError, StepOutput, hookimpl, schedules

VarianceType = Literal["fixed_small", "fixed_small_log", "fixed_large", "fixed_large_log", "learned", "learned_range"]


class Config(schedules.ThresholdingConfig, schedules.ScheduleConfig):
    timestep_spacing: schedules.TimestepSpacing = "leading"
    variance_type: VarianceType = Field(
        "fixed_small", description="fixed_small: β̃ (posterior); fixed_large: β; *_log: the same, through log; "
        "learned: the model's extra C channels are the variance; learned_range: they interpolate log β̃..log β"
    )
    clip_sample: bool = Field(True, description="clip x̂0 to [-clip_sample_range, clip_sample_range]")
    clip_sample_range: float = Field(1.0, gt=0.0)


class DDPM(schedules.VPScheduler):
    """Ancestral sampling from the posterior q(x_{t'} | x_t, x̂0), t' the next timestep of the schedule:

    mean = √ᾱ_{t'}·β_t/(1-ᾱ_t)·x̂0 + √α_t·(1-ᾱ_{t'})/(1-ᾱ_t)·x_t, with α_t = ᾱ_t/ᾱ_{t'}, β_t = 1 - α_t;
    x_{t'} = mean + std·z, std² = β̃_t = (1-ᾱ_{t'})/(1-ᾱ_t)·β_t (or β_t, or learned); ᾱ after the last step = 1.
    z is drawn whenever t > 0.
    """

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self._coefficients: list[tuple[float, ...]] = []

    def set_timesteps(
        self, num_inference_steps: int, device: torch.device | str | None = None, *, strength: float = 1.0
    ) -> None:
        super().set_timesteps(num_inference_steps, device, strength=strength)
        alpha_prod = self.alphas_cumprod[torch.tensor(self.timestep_list).long()]     # (m,) ᾱ_t
        alpha_prod_next = torch.cat([alpha_prod[1:], torch.ones(1)])                 # (m,) ᾱ_{t'}
        alpha = alpha_prod / alpha_prod_next
        beta, beta_prod, beta_prod_next = 1 - alpha, 1 - alpha_prod, 1 - alpha_prod_next
        posterior = torch.clamp(beta_prod_next / beta_prod * beta, min=1e-20)       # β̃_t
        std = {
            "fixed_small": posterior**0.5,
            "fixed_small_log": torch.exp(0.5 * torch.log(posterior)),
            "fixed_large": beta**0.5,
            "fixed_large_log": torch.exp(0.5 * torch.log(beta)),
        }.get(self.config.variance_type, torch.zeros_like(beta))
        self._coefficients = list(zip(
            (alpha_prod**0.5).tolist(), (beta_prod**0.5).tolist(),                   # α, σ of x_t
            (alpha_prod_next**0.5 * beta / beta_prod).tolist(),                      # weight of x̂0
            (alpha**0.5 * beta_prod_next / beta_prod).tolist(),                      # weight of x_t
            std.tolist(), torch.log(posterior).tolist(), torch.log(beta).tolist(),
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
        alpha, sigma, weight_x0, weight_x, std, log_small, log_large = self._coefficients[i]
        c = self.config
        if c.variance_type in ("learned", "learned_range"):
            if model_output.shape[1] != 2 * sample.shape[1]:
                raise InputError(
                    f"variance_type={c.variance_type!r} needs a model_output with 2·C = {2 * sample.shape[1]} "
                    f"channels (prediction, variance); got {model_output.shape[1]}",
                    hint="use variance_type='fixed_small' for a model that predicts only the noise",
                )
            model_output, predicted_variance = model_output.split(sample.shape[1], dim=1)   # (B, C, h, w) each
        x0 = schedules.predicted_x0(c.prediction_type, model_output, sample, alpha, sigma)   # (B, C, h, w)
        if c.thresholding:
            x0 = schedules.threshold(x0, c.dynamic_thresholding_ratio, c.sample_max_value)
        elif c.clip_sample:
            x0 = x0.clamp(-c.clip_sample_range, c.clip_sample_range)
        prev = weight_x0 * x0 + weight_x * sample
        if self.timestep_list[i] > 0:
            noise = schedules.randn(model_output.shape, generator, model_output.device, model_output.dtype)
            if c.variance_type == "learned":
                std = predicted_variance**0.5
            elif c.variance_type == "learned_range":
                fraction = (predicted_variance + 1) / 2                             # in [0, 1]
                std = torch.exp(0.5 * (fraction * log_large + (1 - fraction) * log_small))
            prev = prev + std * noise
        return StepOutput(prev, x0)


@hookimpl
def diffstack_components() -> list[ComponentSpec]:
    return [
        ComponentSpec(
            kind="scheduler", name="ddpm", factory=DDPM, config=Config, example_config={"clip_sample": False},
            description="DDPM (Ho et al. 2020): ancestral sampling from the posterior, stochastic",
        )
    ]
