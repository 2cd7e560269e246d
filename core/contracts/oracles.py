"""Oracles and test doubles for the contract suites.

A scheduler's forward process is x_t = a_t·x0 + s_t·ε. Both coefficients are read off the scheduler's own
`add_noise` — a_t = add_noise(1, 0, t), s_t = add_noise(0, 1, t) — so the oracles serve VP rules
(√ᾱ_t, √(1-ᾱ_t)) and σ-space rules (1, σ_t) alike. With the normalised ᾱ = a²/(a²+s²), the exact model
output for a known x0 and noise ε is ε, x0, or v = √ᾱ·ε − √(1-ᾱ)·x0 (Salimans & Ho 2022, "Progressive
Distillation"), per `prediction_type`.
"""

from __future__ import annotations

from typing import Any

import torch

from core.interfaces import PredictionType, Scheduler


def clean_signal(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """A known x0, uniform in [-0.9, 0.9] so that rules which clip x̂0 to [-1, 1] leave it intact."""
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed)) * 1.8 - 0.9


def first_timestep(timestep: torch.Tensor | float | int) -> torch.Tensor | float | int:
    """A scalar timestep: the argument itself, or the first entry of a (B,) tensor."""
    if isinstance(timestep, torch.Tensor) and timestep.ndim > 0:
        return timestep.reshape(-1)[0]
    return timestep


def forward_coefficients(
    scheduler: Scheduler, like: torch.Tensor, timestep: torch.Tensor | float | int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(a_t, s_t) of x_t = a_t·x0 + s_t·ε, shaped like `like`, from the scheduler's `add_noise`."""
    ones, zeros = torch.ones_like(like), torch.zeros_like(like)
    return scheduler.add_noise(ones, zeros, timestep), scheduler.add_noise(zeros, ones, timestep)


def true_prediction(
    prediction_type: PredictionType, x0: torch.Tensor, noise: torch.Tensor, a: torch.Tensor, s: torch.Tensor
) -> torch.Tensor:
    """The model output a perfect denoiser gives for x_t = a·x0 + s·noise."""
    if prediction_type == "epsilon":
        return noise
    if prediction_type == "sample":
        return x0
    alpha_bar = a**2 / (a**2 + s**2)
    return alpha_bar.sqrt() * noise - (1.0 - alpha_bar).sqrt() * x0


def oracle_prediction(
    scheduler: Scheduler,
    prediction_type: PredictionType,
    x0: torch.Tensor,
    sample: torch.Tensor,
    timestep: torch.Tensor | float | int,
) -> torch.Tensor:
    """The exact model output for an (unscaled) `sample` at `timestep` whose clean signal is `x0`.

    The noise is read off the sample itself, ε = (x_t − a_t·x0) / s_t, so the oracle stays exact whatever
    the rule did before (stochastic rules included).
    """
    a, s = forward_coefficients(scheduler, sample, timestep)
    return true_prediction(prediction_type, x0, (sample - a * x0) / s, a, s)


def prediction_type_of(scheduler: Scheduler) -> PredictionType:
    """The scheduler's `config.prediction_type` ("epsilon" when its config has none)."""
    return getattr(scheduler.config, "prediction_type", "epsilon")


class OracleDenoiser:
    """A denoiser that knows x0 (B, C, h, w): it returns the exact prediction for the noise in its input.

    It undoes the scheduler's input scaling, c_in = scale_model_input(1, t), then asks `oracle_prediction`.
    A batch that repeats x0 k times (cond + uncond) gets x0 repeated k times. `calls` counts the calls.
    """

    def __init__(self, x0: torch.Tensor, scheduler: Scheduler, *, context_dim: int) -> None:
        self.x0 = x0
        self.scheduler = scheduler
        self.in_channels = x0.shape[1]
        self.context_dim = context_dim
        self.prediction_type = prediction_type_of(scheduler)
        self.calls = 0

    def __call__(self, sample: torch.Tensor, timestep: torch.Tensor | float | int, context: Any) -> torch.Tensor:
        self.calls += 1
        t = first_timestep(timestep)
        x = sample / self.scheduler.scale_model_input(torch.ones_like(sample), t)  # unscaled x_t
        x0 = self.x0.repeat(sample.shape[0] // self.x0.shape[0], *[1] * (self.x0.ndim - 1))
        return oracle_prediction(self.scheduler, self.prediction_type, x0, x, t)


def stand_in_output(sample: torch.Tensor, timestep: torch.Tensor | float | int) -> torch.Tensor:
    """A deterministic, element-wise, bounded model output standing in for a trained network."""
    t = torch.as_tensor(timestep, dtype=torch.float32, device=sample.device).reshape(-1, *[1] * (sample.ndim - 1))
    return 0.5 * torch.tanh(sample) + (0.01 * torch.cos(t / 100.0)).to(sample.dtype)


class StandInDenoiser:
    """A context-dependent stand-in denoiser: `stand_in_output` plus a shift by the mean of each context.

    Per-sample and deterministic, so batching cond + uncond or splitting a batch changes nothing.
    `calls` counts the calls.
    """

    prediction_type: PredictionType = "epsilon"

    def __init__(self, in_channels: int, context_dim: int) -> None:
        self.in_channels = in_channels
        self.context_dim = context_dim
        self.calls = 0

    def __call__(
        self, sample: torch.Tensor, timestep: torch.Tensor | float | int, context: torch.Tensor
    ) -> torch.Tensor:
        self.calls += 1
        shift = 0.1 * context.mean(dim=(1, 2)).reshape(-1, *[1] * (sample.ndim - 1))  # (B, 1, 1, 1)
        return stand_in_output(sample, timestep) + shift.to(sample.dtype)


class AddedInputDenoiser(StandInDenoiser):
    """A stand-in that takes the added input `pooled` (per-sample shape (context_dim,)) and checks, on every
    call, that each row of it is the first token of the same row's context — so a sampler that drops the added
    inputs, or batches them in another order than the contexts, fails. Its output also depends on `pooled`."""

    def __init__(self, in_channels: int, context_dim: int) -> None:
        super().__init__(in_channels, context_dim)
        self.added_inputs = {"pooled": (context_dim,)}

    def __call__(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float | int,
        context: torch.Tensor,
        *,
        pooled: torch.Tensor | None = None,
    ) -> torch.Tensor:
        assert pooled is not None, "the denoiser declares the added input 'pooled' but was called without it"
        assert tuple(pooled.shape) == (len(context), self.context_dim), (
            f"pooled {tuple(pooled.shape)} does not match the context batch ({len(context)}, {self.context_dim})"
        )
        assert torch.equal(pooled, context[:, 0]), "the added input 'pooled' is not batched like the context"
        shift = 0.1 * pooled.mean(dim=1).reshape(-1, *[1] * (sample.ndim - 1))  # (B, 1, 1, 1)
        return super().__call__(sample, timestep, context) + shift.to(sample.dtype)
