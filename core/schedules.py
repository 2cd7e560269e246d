"""Noise schedules: the pure maths discrete-time schedulers share — Ho et al. (2020), "Denoising Diffusion
Probabilistic Models"; Nichol & Dhariwal (2021), "Improved DDPM" (cosine schedule); Karras et al. (2022),
"Elucidating the Design Space of Diffusion-Based Generative Models" (σ-space view, Karras sigmas).

A training schedule is T betas β_t; ᾱ_t = Π_{s≤t}(1-β_s); the forward process is
x_t = √ᾱ_t·x0 + √(1-ᾱ_t)·ε ("VP"), or equivalently, dividing by √ᾱ_t, x̃ = x0 + σ_t·ε with
σ_t = √((1-ᾱ_t)/ᾱ_t) ("σ-space", the denoiser then sees x̃/√(σ²+1) = x_t).

Everything here is computed once per `set_timesteps`, on the host, with the same float32/float64 steps as
diffusers so that timesteps and σ come out bit-identical. The scheduler base classes that use it live in
`core.discrete_scheduler` (`SigmaScheduler`, `VPScheduler`); they are also reachable here under their old
names, so rules written against `core.schedules.SigmaScheduler` keep working.
"""

from __future__ import annotations

import inspect
import math
from typing import Any, Literal, get_args, get_origin

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator

from core.errors import InputError
from core.interfaces import PredictionType, Scheduler

BetaSchedule = Literal["linear", "scaled_linear", "squaredcos_cap_v2", "cosine"]
TimestepSpacing = Literal["linspace", "leading", "trailing"]
Timestep = torch.Tensor | float | int


# ----------------------------------------------------------------------------------------------- config


class ScheduleConfig(BaseModel):
    """The config fields every discrete scheduler shares, under diffusers' names.

    Literal-typed fields (here and in subclasses) reject unknown values with an error that lists the
    valid ones, read from the Literal itself. Mix `ThresholdingConfig` in first: `Config(ThresholdingConfig,
    ScheduleConfig)`, so the schedule's fields come first.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    num_train_timesteps: int = Field(1000, ge=1, description="T, the length of the training schedule")
    beta_start: float = Field(0.0001, gt=0.0, lt=1.0, description="β_0 (linear and scaled_linear schedules)")
    beta_end: float = Field(0.02, gt=0.0, lt=1.0, description="β_{T-1} (linear and scaled_linear schedules)")
    beta_schedule: BetaSchedule = Field(
        "linear",
        description="linear: β linear; scaled_linear: √β linear (Stable Diffusion); "
        "squaredcos_cap_v2 (alias cosine): Nichol & Dhariwal's cosine ᾱ",
    )
    trained_betas: list[float] | None = Field(None, description="explicit β_0..β_{T-1}; overrides beta_schedule")
    prediction_type: PredictionType = Field("epsilon", description="what the denoiser predicts: ε, v or x0")
    timestep_spacing: TimestepSpacing = Field("linspace", description="how inference timesteps are spread over T")
    steps_offset: int = Field(0, ge=0, description="added to every timestep of the `leading` spacing")

    @field_validator("*", mode="before")
    @classmethod
    def _known_choice(cls, value: Any, info: Any) -> Any:
        annotation = cls.model_fields[info.field_name].annotation
        if get_origin(annotation) is Literal and value not in get_args(annotation):
            choices = ", ".join(str(choice) for choice in get_args(annotation))
            raise ValueError(f"unknown {info.field_name} {value!r}; valid values: {choices}")
        return value

    @field_validator("beta_end")
    @classmethod
    def _growing(cls, beta_end: float, info: Any) -> float:
        beta_start = info.data.get("beta_start")
        if beta_start is not None and beta_end <= beta_start:
            raise ValueError(f"beta_end ({beta_end}) must be greater than beta_start ({beta_start}): β grows with t")
        return beta_end

    @field_validator("trained_betas")
    @classmethod
    def _one_beta_per_timestep(cls, trained_betas: list[float] | None, info: Any) -> list[float] | None:
        total = info.data.get("num_train_timesteps")
        if trained_betas is not None:
            if total is not None and len(trained_betas) != total:
                raise ValueError(
                    f"trained_betas has {len(trained_betas)} values but num_train_timesteps is {total}; "
                    "give one beta per training timestep"
                )
            outside = [b for b in trained_betas if not 0.0 < b < 1.0]
            if outside:
                raise ValueError(f"trained_betas must lie in (0, 1); found {outside[:3]}")
        return trained_betas


class ThresholdingConfig(BaseModel):
    """Dynamic thresholding of x̂0 (Saharia et al. 2022, "Imagen"), diffusers' option names."""

    thresholding: bool = Field(False, description="clip x̂0 per sample to a quantile of |x̂0| (overrides clip_sample)")
    dynamic_thresholding_ratio: float = Field(0.995, gt=0.0, lt=1.0, description="quantile of |x̂0| used as s")
    sample_max_value: float = Field(1.0, gt=0.0, description="upper bound of s")


# ------------------------------------------------------------------------------------- training schedule


def betas(config: ScheduleConfig) -> torch.Tensor:
    """(T,) float32 betas of the config's schedule."""
    n = config.num_train_timesteps
    if config.trained_betas is not None:
        return torch.tensor(config.trained_betas, dtype=torch.float32)
    if config.beta_schedule == "linear":
        return torch.linspace(config.beta_start, config.beta_end, n, dtype=torch.float32)
    if config.beta_schedule == "scaled_linear":
        return torch.linspace(config.beta_start**0.5, config.beta_end**0.5, n, dtype=torch.float32) ** 2
    return cosine_betas(n)


def cosine_betas(num_train_timesteps: int, max_beta: float = 0.999) -> torch.Tensor:
    """β_t = min(1 - ᾱ((t+1)/T)/ᾱ(t/T), max_beta), ᾱ(s) = cos²((s + 0.008)/1.008 · π/2)."""

    def alpha_bar(s: float) -> float:
        return math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2

    n = num_train_timesteps
    return torch.tensor(
        [min(1 - alpha_bar((i + 1) / n) / alpha_bar(i / n), max_beta) for i in range(n)], dtype=torch.float32
    )


def alphas_cumprod(config: ScheduleConfig) -> torch.Tensor:
    """(T,) float32 ᾱ_t = Π_{s≤t}(1-β_s), decreasing in t."""
    return torch.cumprod(1.0 - betas(config), dim=0)


def sigmas_from_alphas_cumprod(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """σ_t = √((1-ᾱ_t)/ᾱ_t), same shape and dtype, increasing in t."""
    return ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5


# ----------------------------------------------------------------------------------- inference timesteps


def spaced_timesteps(
    spacing: TimestepSpacing, num_steps: int, num_train_timesteps: int, steps_offset: int = 0
) -> np.ndarray:
    """(n,) float64 descending timesteps in [0, T) (Lin et al. 2024, "Common Diffusion Noise Schedules and
    Sample Steps are Flawed", Table 2); integer-valued except `linspace`, which callers may round.

    linspace: linspace(0, T-1, n); leading: i·⌊T/n⌋ + steps_offset; trailing: round(T - i·T/n) - 1.
    """
    n, total = num_steps, num_train_timesteps
    if spacing == "linspace":
        return np.linspace(0, total - 1, n)[::-1].copy()
    if spacing == "leading":
        return (np.arange(n) * (total // n))[::-1] + float(steps_offset)
    # np.arange with a float step sometimes yields n+1 values (a last "-1" timestep); keep the first n
    return np.round(np.arange(total, 0, -total / n))[:n] - 1.0


def solver_timesteps(
    spacing: TimestepSpacing, num_steps: int, num_train_timesteps: int, steps_offset: int = 0
) -> np.ndarray:
    """(n,) float64 integer-valued descending timesteps as DPM-Solver (and UniPC, DEIS) space them in diffusers:
    `trailing` as `spaced_timesteps`; otherwise n+1 points of the spacing, rounded, with the last one (t = 0)
    dropped, so the run ends by stepping from a timestep above 0 to noise level 0."""
    if spacing == "trailing":
        return spaced_timesteps("trailing", num_steps, num_train_timesteps)
    return np.round(spaced_timesteps(spacing, num_steps + 1, num_train_timesteps, steps_offset)[:-1])


def check_strength(strength: float) -> float:
    """`strength` as a float in (0, 1], else an InputError naming it (the one check of img2img strength)."""
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not 0.0 < strength <= 1.0:
        raise InputError(f"strength must be a number in (0, 1], got {strength!r}", hint="1.0 denoises from pure noise")
    return float(strength)


def img2img_start(num_steps: int, strength: float) -> int:
    """Index of the first of n steps an img2img run with `strength` in (0, 1] performs: n - ⌊n·strength⌋.

    Multiply by the rule's `order` to index its timesteps (diffusers' StableDiffusionImg2ImgPipeline).
    """
    kept = min(int(num_steps * check_strength(strength)), num_steps)
    if kept == 0:
        raise InputError(
            f"strength={strength} with {num_steps} steps keeps no step (⌊{num_steps}·{strength}⌋ = 0)",
            hint="raise strength or the number of steps",
        )
    return num_steps - kept


def img2img_timesteps(
    scheduler: Scheduler, steps: int, strength: float, device: torch.device | str | None = None
) -> torch.Tensor:
    """Set `scheduler` up for a run of `steps` at img2img `strength` and return the timesteps that run takes:
    the last ⌊steps·strength⌋ steps (times the rule's `order`). A scheduler whose `set_timesteps` takes
    `strength` (diffstack's) cuts them itself; any other (a diffusers-style one) gets `set_timesteps(steps,
    device)` and the run starts part-way as diffusers' img2img pipeline starts it, with `set_begin_index`
    when the scheduler has one."""
    if "strength" in inspect.signature(scheduler.set_timesteps).parameters:
        scheduler.set_timesteps(steps, device=device, strength=strength)
        return scheduler.timesteps
    scheduler.set_timesteps(steps, device=device)
    start = img2img_start(steps, strength) * scheduler.order
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(start)
    return scheduler.timesteps[start:]


def check_num_steps(num_inference_steps: int, num_train_timesteps: int) -> int:
    """`num_inference_steps` as an int in [1, T], else an InputError naming it (the one check of a step count)."""
    n = num_inference_steps
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= num_train_timesteps:
        raise InputError(
            f"steps (num_inference_steps) must be an integer in [1, {num_train_timesteps}] "
            f"(the scheduler's num_train_timesteps), got {n!r}"
        )
    return int(n)


def interpolate_sigmas(timesteps: np.ndarray, train_sigmas: np.ndarray) -> np.ndarray:
    """σ at (possibly fractional) timesteps, linear in σ between training timesteps; float64."""
    return np.interp(timesteps, np.arange(len(train_sigmas)), train_sigmas)


def timesteps_from_sigmas(sigmas: np.ndarray, train_sigmas: np.ndarray) -> np.ndarray:
    """Inverse of `interpolate_sigmas` up to interpolating in log σ (as diffusers does); float64, same shape.

    σ outside the training range clamp to timestep 0 or T-1.
    """
    log_train = np.log(train_sigmas)  # (T,) in the table's dtype
    log_sigma = np.log(np.maximum(sigmas, 1e-10))  # (n,)
    at_or_below = np.cumsum(log_sigma[None, :] - log_train[:, None] >= 0, axis=0)  # (T, n)
    low = at_or_below.argmax(axis=0).clip(max=len(log_train) - 2)  # (n,)
    weight = np.clip((log_train[low] - log_sigma) / (log_train[low] - log_train[low + 1]), 0, 1)
    return (1 - weight) * low + weight * (low + 1)


def karras_sigmas(sigma_min: float, sigma_max: float, num_steps: int, rho: float = 7.0) -> np.ndarray:
    """Karras et al. (2022) eq. 5: σ_i = (σ_max^{1/ρ} + i/(n-1)·(σ_min^{1/ρ} - σ_max^{1/ρ}))^ρ; (n,) float64."""
    ramp = np.linspace(0, 1, num_steps)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return (hi + ramp * (lo - hi)) ** rho


def sigma_schedule(config: ScheduleConfig, num_steps: int, *, karras: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Timesteps (n,) float32 and σ (n+1,) float32 ending in 0, as the σ-space rules use them.

    karras: σ respaced by `karras_sigmas` between the first and last spaced σ, timesteps mapped back.
    """
    train = sigmas_from_alphas_cumprod(alphas_cumprod(config)).numpy()  # (T,) float32
    timesteps = spaced_timesteps(
        config.timestep_spacing, num_steps, config.num_train_timesteps, config.steps_offset
    ).astype(np.float32)
    sigmas = interpolate_sigmas(timesteps, train)  # (n,) float64
    if karras:
        sigmas = karras_sigmas(float(sigmas[-1]), float(sigmas[0]), num_steps)
        timesteps = timesteps_from_sigmas(sigmas, train).astype(np.float32)
    return timesteps, np.append(sigmas, 0.0).astype(np.float32)


# ------------------------------------------------------------------------------------- model-output math


def predicted_x0(
    prediction_type: PredictionType, model_output: torch.Tensor, sample: torch.Tensor, alpha: float, sigma: float
) -> torch.Tensor:
    """x̂0 from a VP sample x_t = α·x0 + σ·ε (α = √ᾱ_t, σ = √(1-ᾱ_t)): ε → (x - σε)/α; v → αx - σv; x0 → x0."""
    if prediction_type == "epsilon":
        return (sample - sigma * model_output) / alpha
    if prediction_type == "v_prediction":
        return alpha * sample - sigma * model_output
    return model_output


def predicted_eps(
    prediction_type: PredictionType, model_output: torch.Tensor, sample: torch.Tensor, alpha: float, sigma: float
) -> torch.Tensor:
    """ε̂ from a VP sample x_t = α·x0 + σ·ε: ε → ε; v → αv + σx; x0 → (x - αx0)/σ."""
    if prediction_type == "epsilon":
        return model_output
    if prediction_type == "v_prediction":
        return alpha * model_output + sigma * sample
    return (sample - alpha * model_output) / sigma


def predicted_x0_sigma(
    prediction_type: PredictionType, model_output: torch.Tensor, sample: torch.Tensor, sigma: float
) -> torch.Tensor:
    """x̂0 from a σ-space sample x̃ = x0 + σ·ε whose denoiser saw x̃/√(σ²+1):
    ε → x̃ - σε; v → x̃/(σ²+1) - σ/√(σ²+1)·v; x0 → x0."""
    if prediction_type == "epsilon":
        return sample - sigma * model_output
    if prediction_type == "v_prediction":
        s = torch.tensor(sigma, dtype=torch.float32)  # scalars rounded as diffusers rounds them
        return model_output * float(-s / (s**2 + 1) ** 0.5) + sample / float(s**2 + 1)
    return model_output


def threshold(x0: torch.Tensor, ratio: float, max_value: float) -> torch.Tensor:
    """Dynamic thresholding: s = clamp(quantile_ratio(|x0|), 1, max_value) per sample; x0 ← clip(x0, -s, s)/s."""
    flat = x0.reshape(x0.shape[0], -1).float()  # (B, C·h·w)
    s = torch.quantile(flat.abs(), ratio, dim=1).clamp(1, max_value)[:, None]  # (B, 1)
    return (torch.clamp(flat, -s, s) / s).reshape(x0.shape).to(x0.dtype)


def clip_or_threshold(x0: torch.Tensor, config: ThresholdingConfig) -> torch.Tensor:
    """x̂0 dynamically thresholded (`config.thresholding`), else clipped to ±`clip_sample_range` when the config
    has `clip_sample` set, else unchanged."""
    if config.thresholding:
        return threshold(x0, config.dynamic_thresholding_ratio, config.sample_max_value)
    if getattr(config, "clip_sample", False):
        return x0.clamp(-config.clip_sample_range, config.clip_sample_range)  # type: ignore[attr-defined]
    return x0


def __getattr__(name: str) -> object:
    """The scheduler bases under their old home (`core.schedules.SigmaScheduler` …), loaded on first use."""
    if name in ("DiscreteScheduler", "SigmaScheduler", "VPScheduler"):
        from core import discrete_scheduler

        return getattr(discrete_scheduler, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
