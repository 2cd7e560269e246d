"""The scheduler base classes: everything a discrete-time update rule shares, so a rule is its Config, its
per-run precomputation and its update.

`DiscreteScheduler` owns `set_timesteps` (spacing, img2img `strength`, the timestep → index table), the
step bookkeeping (`step` looks the timestep up, checks the model output for NaN/inf, resets the multistep
history when a run does not continue, hands out noise from the step's generators) and the error checks.
A rule subclasses `SigmaScheduler` (σ-space: Euler, LMS, Heun, …) or `VPScheduler` (DDPM, DDIM, …) and writes

    _precompute(self)                                   per-run tables from `timestep_list` / `sigma_list`
    _update(self, i, model_output, sample, noise)       step i → StepOutput(prev_sample, pred_original_sample)

where `noise()` draws standard-normal noise shaped like `sample` exactly as diffusers'
`randn_tensor` does, and `self.history` (newest first) is the rule's multistep memory, emptied by the base
whenever a run starts or does not continue from the previous step. A rule with its own timesteps overrides
`_schedule(n)`. Per-step numbers are Python floats read by index, so a step costs no device transfer.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from core.errors import InputError
from core.interfaces import Generators, StepOutput
from core.schedules import (
    ScheduleConfig,
    Timestep,
    alphas_cumprod,
    check_num_steps,
    img2img_start,
    interpolate_sigmas,
    sigma_schedule,
    sigmas_from_alphas_cumprod,
    spaced_timesteps,
)

Noise = Callable[[], torch.Tensor]
"""Draws one standard-normal tensor shaped like the step's sample, in the model output's dtype, from the step's
generator(s)."""


def draw_noise(shape: Sequence[int], generator: Generators, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Standard normal noise of `shape` (B, ...), drawn exactly as diffusers' `randn_tensor`: on the
    generator's device and then moved, or one draw of shape (1, ...) per generator for a list of B."""
    if generator is not None and not isinstance(generator, torch.Generator):
        if len(generator) != shape[0]:
            raise InputError(f"got {len(generator)} generators for a batch of {shape[0]}", hint="pass one per sample")
        return torch.cat([draw_noise((1, *shape[1:]), g, device, dtype) for g in generator])
    where = generator.device if generator is not None else device
    return torch.randn(tuple(shape), generator=generator, device=where, dtype=dtype).to(device)


class DiscreteScheduler:
    """What every scheduler over a discrete training schedule shares: the config, ᾱ and σ tables, the
    current timesteps, looking a timestep up, `strength`, the multistep history and the checks of `step`.

    Subclasses implement `scale_model_input` and `add_noise` (the two families below do) and `_update`;
    `_schedule(n)` → (timesteps (m,), σ (m+1,) or None) and `_precompute()` have defaults.
    """

    order = 1
    _timestep_dtype = torch.float32

    def __init__(self, config: ScheduleConfig) -> None:
        self.config = config
        self.alphas_cumprod = alphas_cumprod(config)  # (T,) float32, CPU
        self.train_sigmas = sigmas_from_alphas_cumprod(self.alphas_cumprod).numpy()  # (T,) float32
        self.num_inference_steps: int | None = None
        self.timesteps = torch.empty(0, dtype=self._timestep_dtype)
        self.sigmas = torch.empty(0, dtype=torch.float32)
        self.timestep_list: list[float] = []
        self.sigma_list: list[float] = []
        self.init_noise_sigma = 1.0
        self._first_index: dict[float, int] = {}
        self.history: list[Any] = []  # the rule's multistep memory, newest first
        self._next = 0  # index the next step is expected at
        self._nonfinite: torch.Tensor | None = None  # per-step NaN/inf flags off the CPU

    def _schedule(self, num_steps: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Timesteps (m,) and σ (m+1,) or None for n steps, before `strength` cuts them; m is n for one model
        call per step, up to n·order for rules that call the model more than once per step."""
        raise NotImplementedError

    def _precompute(self) -> None:
        """Per-run tables of the rule, read from `timestep_list`, `sigma_list`, `sigmas`, `alphas_cumprod`."""

    def _update(self, i: int, model_output: torch.Tensor, sample: torch.Tensor, noise: Noise) -> StepOutput:
        """Step i of the current schedule: the sample at the next noise level, and x̂0."""
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
        self.history = []
        self._next = 0
        self._nonfinite = None
        self._precompute()

    def step(
        self,
        model_output: torch.Tensor,
        timestep: Timestep,
        sample: torch.Tensor,
        *,
        generator: Generators = None,
    ) -> StepOutput:
        """One step from `timestep` to the next of the schedule: `model_output` and `sample` (B, C, h, w) →
        StepOutput of the same shape and dtype. `generator`: one, or a list of B (sample j draws only from
        generator j); only stochastic rules draw from it."""
        expected = self._next
        i = self._begin_step(timestep, model_output)
        if i != expected:  # not continuing the run: no history
            self.history = []
        return self._update(
            i,
            model_output,
            sample,
            lambda: draw_noise(sample.shape, generator, model_output.device, model_output.dtype),
        )

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
                timestep.dim() == 0
                and own.numel()
                and timestep.device == own.device
                and timestep.dtype == own.dtype
                and timestep.untyped_storage().data_ptr() == own.untyped_storage().data_ptr()
            ):
                return int(timestep.storage_offset() - own.storage_offset())
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
            i = expected  # repeated timestep: the loop's one
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
                out.append(float(interpolate_sigmas(np.array(t, dtype=np.float64), self.train_sigmas)))
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
        sigma = np.array(self.sigmas_at(timesteps))  # (B,) float64
        alpha = (sigma**2 + 1) ** -0.5
        return (
            _per_sample(alpha.tolist(), original_samples) * original_samples
            + _per_sample((alpha * sigma).tolist(), original_samples) * noise
        )
