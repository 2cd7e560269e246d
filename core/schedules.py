"""Noise schedules and the shared machinery of discrete-time schedulers — Ho et al. (2020), "Denoising
Diffusion Probabilistic Models"; Nichol & Dhariwal (2021), "Improved DDPM" (cosine schedule); Karras et al.
(2022), "Elucidating the Design Space of Diffusion-Based Generative Models" (σ-space view, Karras sigmas).

A training schedule is T betas β_t; ᾱ_t = Π_{s≤t}(1-β_s); the forward process is
x_t = √ᾱ_t·x0 + √(1-ᾱ_t)·ε ("VP"), or equivalently, dividing by √ᾱ_t, x̃ = x0 + σ_t·ε with
σ_t = √((1-ᾱ_t)/ᾱ_t) ("σ-space", the denoiser then sees x̃/√(σ²+1) = x_t).

Everything here is computed once per `set_timesteps`, on the host, with the same float32/float64 steps as
diffusers so that timesteps and σ come out bit-identical; update rules then use the per-step numbers as
Python scalars, which cost no device transfer and no synchronisation inside `step`.
Third-party rules subclass `SigmaScheduler` (σ-space: Euler, LMS, Heun, …) or `VPScheduler` (DDPM, DDIM, …).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal, get_args, get_origin

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator

from core.errors import InputError
from core.interfaces import PredictionType

BetaSchedule = Literal["linear", "scaled_linear", "squaredcos_cap_v2", "cosine"]
TimestepSpacing = Literal["linspace", "leading", "trailing"]
Generator = torch.Generator | Sequence[torch.Generator] | None
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
        "linear", description="linear: β linear; scaled_linear: √β linear (Stable Diffusion); "
        "squaredcos_cap_v2 (alias cosine): Nichol & Dhariwal's cosine ᾱ"
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


def img2img_start(num_steps: int, strength: float) -> int:
    """Index of the first of n steps an img2img run with `strength` in (0, 1] performs: n - ⌊n·strength⌋.

    Multiply by the rule's `order` to index its timesteps (diffusers' StableDiffusionImg2ImgPipeline).
    """
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not 0.0 < strength <= 1.0:
        raise InputError(f"strength must be a number in (0, 1], got {strength!r}", hint="1.0 denoises from pure noise")
    kept = min(int(num_steps * strength), num_steps)
    if kept == 0:
        raise InputError(
            f"strength={strength} with {num_steps} steps keeps no step (⌊{num_steps}·{strength}⌋ = 0)",
            hint="raise strength or the number of steps",
        )
    return num_steps - kept


def check_num_steps(num_inference_steps: int, num_train_timesteps: int) -> int:
    """`num_inference_steps` as an int in [1, T], else an InputError naming it."""
    n = num_inference_steps
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= num_train_timesteps:
        raise InputError(
            f"num_inference_steps must be an integer in [1, {num_train_timesteps}] (num_train_timesteps), got {n!r}"
        )
    return int(n)


def interpolate_sigmas(timesteps: np.ndarray, train_sigmas: np.ndarray) -> np.ndarray:
    """σ at (possibly fractional) timesteps, linear in σ between training timesteps; float64."""
    return np.interp(timesteps, np.arange(len(train_sigmas)), train_sigmas)


def timesteps_from_sigmas(sigmas: np.ndarray, train_sigmas: np.ndarray) -> np.ndarray:
    """Inverse of `interpolate_sigmas` up to interpolating in log σ (as diffusers does); float64, same shape.

    σ outside the training range clamp to timestep 0 or T-1.
    """
    log_train = np.log(train_sigmas)                                   # (T,) in the table's dtype
    log_sigma = np.log(np.maximum(sigmas, 1e-10))                      # (n,)
    at_or_below = np.cumsum(log_sigma[None, :] - log_train[:, None] >= 0, axis=0)  # (T, n)
    low = at_or_below.argmax(axis=0).clip(max=len(log_train) - 2)      # (n,)
    weight = np.clip((log_train[low] - log_sigma) / (log_train[low] - log_train[low + 1]), 0, 1)
    return (1 - weight) * low + weight * (low + 1)


def karras_sigmas(sigma_min: float, sigma_max: float, num_steps: int, rho: float = 7.0) -> np.ndarray:
    """Karras et al. (2022) eq. 5: σ_i = (σ_max^{1/ρ} + i/(n-1)·(σ_min^{1/ρ} - σ_max^{1/ρ}))^ρ; (n,) float64."""
    ramp = np.linspace(0, 1, num_steps)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return (hi + ramp * (lo - hi)) ** rho


def sigma_schedule(
    config: ScheduleConfig, num_steps: int, *, karras: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Timesteps (n,) float32 and σ (n+1,) float32 ending in 0, as the σ-space rules use them.

    karras: σ respaced by `karras_sigmas` between the first and last spaced σ, timesteps mapped back.
    """
    train = sigmas_from_alphas_cumprod(alphas_cumprod(config)).numpy()    # (T,) float32
    timesteps = spaced_timesteps(
        config.timestep_spacing, num_steps, config.num_train_timesteps, config.steps_offset
    ).astype(np.float32)
    sigmas = interpolate_sigmas(timesteps, train)                          # (n,) float64
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
        s = torch.tensor(sigma, dtype=torch.float32)                   # scalars rounded as diffusers rounds them
        return model_output * float(-s / (s**2 + 1) ** 0.5) + sample / float(s**2 + 1)
    return model_output


def threshold(x0: torch.Tensor, ratio: float, max_value: float) -> torch.Tensor:
    """Dynamic thresholding: s = clamp(quantile_ratio(|x0|), 1, max_value) per sample; x0 ← clip(x0, -s, s)/s."""
    flat = x0.reshape(x0.shape[0], -1).float()                          # (B, C·h·w)
    s = torch.quantile(flat.abs(), ratio, dim=1).clamp(1, max_value)[:, None]  # (B, 1)
    return (torch.clamp(flat, -s, s) / s).reshape(x0.shape).to(x0.dtype)


def randn(shape: Sequence[int], generator: Generator, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Standard normal noise drawn exactly as diffusers' `randn_tensor`: on the generator's device and then
    moved, or one draw of shape (1, ...) per generator when given a list of B generators."""
    if isinstance(generator, Sequence):
        if len(generator) != shape[0]:
            raise InputError(f"got {len(generator)} generators for a batch of {shape[0]}", hint="pass one per sample")
        return torch.cat([randn((1, *shape[1:]), g, device, dtype) for g in generator])
    where = generator.device if generator is not None else device
    return torch.randn(tuple(shape), generator=generator, device=where, dtype=dtype).to(device)


def lms_coefficients(sigmas: np.ndarray, max_order: int) -> list[list[list[float]]]:
    """Linear multistep weights, exact: c[i][k-1][j] = ∫_{σ_i}^{σ_{i+1}} ℓ_j(τ) dτ for the k-th order rule at
    step i, ℓ_j the Lagrange basis polynomial through σ_i, σ_{i-1}, …, σ_{i-k+1} that is 1 at σ_{i-j}.

    With u = τ - σ_i, ℓ_j = Π_{m≠j}(u - a_m)/(a_j - a_m), a_m = σ_{i-m} - σ_i, a polynomial of degree < 4
    integrated term by term over [0, h], h = σ_{i+1} - σ_i. sigmas: (n+1,); entries for k > i+1 stay 0.
    """
    s = sigmas.astype(np.float64)
    n = len(s) - 1
    out = np.zeros((n, max_order, max_order))
    h = s[1:] - s[:-1]                                                 # (n,)
    for k in range(1, max_order + 1):
        idx = np.arange(k - 1, n)                                      # steps with k derivatives available
        a = [s[idx - m] - s[idx] for m in range(k)]                    # k × (len(idx),)
        for j in range(k):
            poly = [np.ones_like(idx, dtype=np.float64)]               # coefficients of u^0, u^1, …
            denom = np.ones_like(poly[0])
            for m in range(k):
                if m != j:
                    padded = [*poly, 0.0]                              # times (u - a_m)
                    poly = [(padded[p - 1] if p else 0.0) - a[m] * padded[p] for p in range(len(padded))]
                    denom = denom * (a[j] - a[m])
            integral = sum(c * h[idx] ** (p + 1) / (p + 1) for p, c in enumerate(poly))
            out[idx, k - 1, j] = integral / denom
    return out.tolist()


# --------------------------------------------------------------------------------------- scheduler bases


class DiscreteScheduler:
    """What every scheduler over a discrete training schedule shares: the config, ᾱ and σ tables, the
    current timesteps, looking a timestep up, `strength`, and the checks of `step`.

    Subclasses implement `_schedule(n)` → (timesteps (m,), σ (m+1,) or None), `scale_model_input`,
    `add_noise` and `step`. In `step`, `i = self._begin_step(timestep, model_output)` resolves and checks
    the timestep; per-step numbers are then read from host lists (`self.sigma_list`, …) by index.
    """

    order = 1
    _timestep_dtype = torch.float32

    def __init__(self, config: ScheduleConfig) -> None:
        self.config = config
        self.alphas_cumprod = alphas_cumprod(config)                   # (T,) float32, CPU
        self.train_sigmas = sigmas_from_alphas_cumprod(self.alphas_cumprod).numpy()  # (T,) float32
        self.num_inference_steps: int | None = None
        self.timesteps = torch.empty(0, dtype=self._timestep_dtype)
        self.sigmas = torch.empty(0, dtype=torch.float32)
        self.timestep_list: list[float] = []
        self.sigma_list: list[float] = []
        self.init_noise_sigma = 1.0
        self._first_index: dict[float, int] = {}
        self._next = 0                                                 # index the next step is expected at
        self._nonfinite: torch.Tensor | None = None                    # per-step NaN/inf flags off the CPU

    def _schedule(self, num_steps: int) -> tuple[np.ndarray, np.ndarray | None]:
        raise NotImplementedError

    def set_timesteps(
        self, num_inference_steps: int, device: torch.device | str | None = None, *, strength: float = 1.0
    ) -> None:
        """Timesteps for n steps (the last ⌊n·strength⌋ of them, img2img), on `device`."""
        n = check_num_steps(num_inference_steps, self.config.num_train_timesteps)
        start = img2img_start(n, strength) * self.order
        timesteps, sigmas = self._schedule(n)
        if timesteps.max() >= self.config.num_train_timesteps:
            raise InputError(
                f"steps_offset={self.config.steps_offset} puts timestep {timesteps.max():g} past "
                f"num_train_timesteps={self.config.num_train_timesteps} with {n} steps",
                hint="lower steps_offset or the number of steps",
            )
        host = torch.from_numpy(np.ascontiguousarray(timesteps[start:])).to(self._timestep_dtype)  # (m,) kept
        self.num_inference_steps = n
        self.timestep_list = [float(t) for t in host.tolist()]
        self.timesteps = host.to(device)
        self._first_index = {}
        for i, t in enumerate(self.timestep_list):
            self._first_index.setdefault(t, i)
        if sigmas is not None:
            self.sigmas = torch.from_numpy(sigmas[start:].astype(np.float32))
            self.sigma_list = self.sigmas.tolist()
        self._next = 0
        self._nonfinite = None

    # -- timesteps → indices

    def index_of(self, timestep: Timestep) -> int:
        """Position of `timestep` in `self.timesteps` (its first occurrence), or an InputError.

        An element of `self.timesteps` itself (as the classic loop passes it) is located by its storage
        offset, so a timestep on an accelerator is never copied to the host.
        """
        if isinstance(timestep, torch.Tensor):
            if timestep.numel() != 1:
                raise InputError(f"timestep must be a scalar, got a tensor of shape {tuple(timestep.shape)}")
            own = self.timesteps
            if (
                timestep.dim() == 0 and own.numel() and timestep.device == own.device and timestep.dtype == own.dtype
                and timestep.untyped_storage().data_ptr() == own.untyped_storage().data_ptr()
            ):
                return timestep.storage_offset() - own.storage_offset()
            timestep = timestep.item()
        index = self._first_index.get(float(np.float32(timestep)))
        if index is None:
            raise InputError(
                f"timestep {timestep!r} is not in the current schedule"
                + (f" ({self._describe_schedule()})" if self.timestep_list else " (set_timesteps was not called)"),
                hint="call set_timesteps first and pass the values of scheduler.timesteps",
            )
        return index

    def _describe_schedule(self) -> str:
        ts = self.timestep_list
        shown = ", ".join(f"{t:g}" for t in ts[:4]) + (", …" if len(ts) > 4 else "")
        return f"{len(ts)} timesteps: {shown}"

    def _begin_step(self, timestep: Timestep, model_output: torch.Tensor) -> int:
        """The index of this step; raises InputError before `set_timesteps`, for a timestep outside the
        schedule, and (naming the step) when `model_output` holds NaN or inf."""
        if not self.timestep_list:
            raise InputError(
                f"{type(self).__name__}.step called before set_timesteps",
                hint="call scheduler.set_timesteps(num_inference_steps) first",
            )
        i, expected = self.index_of(timestep), self._next
        if i < expected < len(self.timestep_list) and self.timestep_list[expected] == self.timestep_list[i]:
            i = expected                                               # repeated timestep: the loop's one
        self._check_finite(model_output, i)
        self._next = i + 1
        return i

    def _check_finite(self, model_output: torch.Tensor, i: int) -> None:
        """On the CPU: raise now. Elsewhere the flag stays on the device (no synchronisation) and is read at
        the last step, where the error still names the first step that went wrong.

        One NaN or inf makes the float32 sum non-finite, and a sum is one fast reduction (a finite one would
        overflow only for values near 1e34)."""
        total = model_output.sum(dtype=torch.float32)
        if model_output.device.type == "cpu":
            if math.isfinite(total):
                return
        else:
            flags = self._nonfinite
            if flags is None or flags.device != model_output.device:
                flags = torch.zeros(len(self.timestep_list), dtype=torch.bool, device=model_output.device)
                self._nonfinite = flags
            flags[i] = ~torch.isfinite(total)
            if i < len(self.timestep_list) - 1 or not bool(flags.any()):
                return
            i = int(flags.nonzero()[0])
        raise InputError(
            f"model_output contains NaN or inf at step {i + 1} of {len(self.timestep_list)} "
            f"(timestep {self.timestep_list[i]:g})",
            hint="check the denoiser, its dtype (float16 overflow) and the guidance scale",
        )

    # -- noise levels of arbitrary timesteps

    def sigmas_at(self, timesteps: Timestep) -> list[float]:
        """σ of each timestep: the current schedule's where the timestep is in it, else interpolated from the
        training table (any t in [0, T-1])."""
        values = timesteps.reshape(-1).tolist() if isinstance(timesteps, torch.Tensor) else [timesteps]
        last = self.config.num_train_timesteps - 1
        out = []
        for t in values:
            i = self._first_index.get(float(np.float32(t)))
            if i is not None and self.sigma_list:
                out.append(self.sigma_list[i])
            elif 0 <= t <= last:
                out.append(float(interpolate_sigmas(np.float64(t), self.train_sigmas)))
            else:
                raise InputError(f"timestep {t!r} is outside the training range [0, {last}]")
        return out


def _per_sample(values: list[float], like: torch.Tensor) -> torch.Tensor:
    """(B,) or scalar values as a tensor broadcastable against `like` (B, C, h, w)."""
    out = torch.tensor(values, dtype=like.dtype, device=like.device)
    return out.reshape(-1, *([1] * (like.dim() - 1))) if len(values) > 1 else out.reshape(())


class SigmaScheduler(DiscreteScheduler):
    """Base of the σ-space rules (Karras et al. 2022): the sample is x̃ = x0 + σ·ε, the denoiser sees
    x̃/√(σ²+1), pure noise starts at σ_max. Timesteps are float32 (fractional with `linspace`).

    `_schedule` defaults to `sigma_schedule` (with Karras sigmas when the config has `use_karras_sigmas`);
    `self.sigma_list[i]` is σ at step i and `self.sigma_list[i + 1]` the one it steps to (0 at the end).
    """

    def __init__(self, config: ScheduleConfig) -> None:
        super().__init__(config)
        self.init_noise_sigma = self._noise_sigma(float(self.train_sigmas.max()))
        self._input_divisors: list[float] = []

    def _noise_sigma(self, sigma_max: float) -> float:
        # diffusers' convention: `leading` starts below T-1 and adds the unit variance of x0
        return sigma_max if self.config.timestep_spacing != "leading" else (sigma_max**2 + 1) ** 0.5

    def _schedule(self, num_steps: int) -> tuple[np.ndarray, np.ndarray]:
        return sigma_schedule(self.config, num_steps, karras=getattr(self.config, "use_karras_sigmas", False))

    def set_timesteps(
        self, num_inference_steps: int, device: torch.device | str | None = None, *, strength: float = 1.0
    ) -> None:
        super().set_timesteps(num_inference_steps, device, strength=strength)
        self.init_noise_sigma = self._noise_sigma(max(self.sigma_list))
        self._input_divisors = ((self.sigmas**2 + 1) ** 0.5).tolist()  # float32 √(σ²+1), diffusers' rounding

    def scale_model_input(self, sample: torch.Tensor, timestep: Timestep) -> torch.Tensor:
        """x̃/√(σ_t²+1), the VP sample the denoiser was trained on. Pure: reads the schedule, writes nothing."""
        return sample / self._input_divisors[self.index_of(timestep)]

    def add_noise(self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: Timestep) -> torch.Tensor:
        """x0 + σ_t·ε; timesteps a scalar or (B,), read on the host."""
        return original_samples + noise * _per_sample(self.sigmas_at(timesteps), original_samples)


class VPScheduler(DiscreteScheduler):
    """Base of the rules that work on the VP sample x_t = √ᾱ_t·x0 + √(1-ᾱ_t)·ε: no input scaling, pure noise
    has unit variance. `_schedule` defaults to integer timesteps of the config's spacing (σ None)."""

    _timestep_dtype = torch.int64

    def _schedule(self, num_steps: int) -> tuple[np.ndarray, np.ndarray | None]:
        c = self.config
        spaced = spaced_timesteps(c.timestep_spacing, num_steps, c.num_train_timesteps, c.steps_offset)
        return np.round(spaced).astype(np.int64), None

    def scale_model_input(self, sample: torch.Tensor, timestep: Timestep) -> torch.Tensor:
        """The sample itself (VP rules feed x_t unchanged)."""
        return sample

    def add_noise(self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: Timestep) -> torch.Tensor:
        """√ᾱ_t·x0 + √(1-ᾱ_t)·ε = α·x0 + ασ·ε with α = 1/√(σ_t²+1); timesteps a scalar or (B,), read on the host."""
        sigma = np.array(self.sigmas_at(timesteps))                   # (B,) float64
        alpha = (sigma**2 + 1) ** -0.5
        return (
            _per_sample(alpha.tolist(), original_samples) * original_samples
            + _per_sample((alpha * sigma).tolist(), original_samples) * noise
        )

