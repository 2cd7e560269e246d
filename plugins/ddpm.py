"""DDPM update rule — Ho, Jain & Abbeel (2020), "Denoising Diffusion Probabilistic Models", eqs. 6–7; learned
variances after Nichol & Dhariwal (2021), "Improved Denoising Diffusion Probabilistic Models"."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from core import ComponentSpec, InputError, StandIn, StepOutput, VPScheduler, hookimpl, schedules
from core.discrete_scheduler import Noise

VarianceType = Literal["fixed_small", "fixed_small_log", "fixed_large", "fixed_large_log", "learned", "learned_range"]


class Config(schedules.ThresholdingConfig, schedules.ScheduleConfig):
    timestep_spacing: schedules.TimestepSpacing = "leading"
    variance_type: VarianceType = Field(
        "fixed_small",
        description="fixed_small: β̃ (posterior); fixed_large: β; *_log: the same, through log; "
        "learned: the model's extra C channels are the variance; learned_range: they interpolate log β̃..log β",
    )
    clip_sample: bool = Field(True, description="clip x̂0 to [-clip_sample_range, clip_sample_range]")
    clip_sample_range: float = Field(1.0, gt=0.0)


class DDPM(VPScheduler):
    """Ancestral sampling from the posterior q(x_{t'} | x_t, x̂0), t' the next timestep of the schedule:

    mean = √ᾱ_{t'}·β_t/(1-ᾱ_t)·x̂0 + √α_t·(1-ᾱ_{t'})/(1-ᾱ_t)·x_t, with α_t = ᾱ_t/ᾱ_{t'}, β_t = 1 - α_t;
    x_{t'} = mean + std·z, std² = β̃_t = (1-ᾱ_{t'})/(1-ᾱ_t)·β_t (or β_t, or learned); ᾱ after the last step = 1.
    z is drawn whenever t > 0.
    """

    config: Config
    _coefficients: list[list[float]]

    def _precompute(self) -> None:
        alpha_prod = self.alphas_cumprod[torch.tensor(self.timestep_list).long()]  # (m,) ᾱ_t
        alpha_prod_next = torch.cat([alpha_prod[1:], torch.ones(1)])  # (m,) ᾱ_{t'}
        alpha = alpha_prod / alpha_prod_next
        beta, beta_prod, beta_prod_next = 1 - alpha, 1 - alpha_prod, 1 - alpha_prod_next
        posterior = torch.clamp(beta_prod_next / beta_prod * beta, min=1e-20)  # β̃_t
        variance = posterior if self.config.variance_type.startswith("fixed_small") else beta  # learned: per step
        std = torch.exp(0.5 * torch.log(variance)) if self.config.variance_type.endswith("_log") else variance**0.5
        of_x_t = [alpha_prod**0.5, beta_prod**0.5]  # α, σ of x_t
        weights = [alpha_prod_next**0.5 * beta / beta_prod, alpha**0.5 * beta_prod_next / beta_prod]  # of x̂0, x_t
        self._coefficients = torch.stack([*of_x_t, *weights, std, posterior.log(), beta.log()], dim=1).tolist()

    def _update(self, i: int, model_output: torch.Tensor, sample: torch.Tensor, noise: Noise) -> StepOutput:
        alpha, sigma, weight_x0, weight_x, std, log_small, log_large = self._coefficients[i]
        c = self.config
        if c.variance_type in ("learned", "learned_range"):
            if model_output.shape[1] != 2 * sample.shape[1]:
                raise InputError(
                    f"variance_type={c.variance_type!r} needs a model_output with 2·C = {2 * sample.shape[1]} "
                    f"channels (prediction, variance); got {model_output.shape[1]}",
                    hint="use variance_type='fixed_small' for a model that predicts only the noise",
                )
            model_output, predicted_variance = model_output.split(sample.shape[1], dim=1)  # (B, C, h, w) each
        x0 = schedules.predicted_x0(c.prediction_type, model_output, sample, alpha, sigma)  # (B, C, h, w)
        x0 = schedules.clip_or_threshold(x0, c)
        prev = weight_x0 * x0 + weight_x * sample
        if self.timestep_list[i] > 0:
            spread: float | torch.Tensor = std
            if c.variance_type == "learned":
                spread = predicted_variance**0.5
            elif c.variance_type == "learned_range":
                fraction = (predicted_variance + 1) / 2  # in [0, 1]
                spread = torch.exp(0.5 * (fraction * log_large + (1 - fraction) * log_small))
            prev = prev + spread * noise()
        return StepOutput(prev, x0)


@hookimpl
def diffstack_components() -> list[ComponentSpec]:
    about = "DDPM (Ho et al. 2020): ancestral sampling from the posterior, stochastic"
    return [
        ComponentSpec(
            "scheduler",
            "ddpm",
            DDPM,
            Config,
            description=about,
            example_config={"clip_sample": False},
            stands_in_for=(StandIn("DDPMScheduler"),),
        )
    ]
