"""The probability-flow ODE of Gaussian data, solved exactly: where update rules show their true order.

When every latent element of the data is N(μ, s²), the best prediction of the noise in x_t = a·x0 + σ·ε
(a = √ᾱ_t, σ = √(1 − ᾱ_t)) is known in closed form,

    ε̂(x_t, t) = σ·(x_t − a·μ) / (a²s² + σ²),

and the ODE it defines keeps z = (x_t − a·μ) / √(a²s² + σ²) constant: from any start, the exact state at
every noise level is a·μ + √(a²s² + σ²)·z. Rules end a run at t = 0 in one of three ways, each with its own
exact end (`exact_ends`): they stop at the state there (DPM-Solver with `sigma_min`), jump from it to its
x̂0 = (x_t − σ·ε̂)/a = E[x0 | x_t] (DDIM, Euler), or integrate on to σ = 0, the ODE's limit μ + s·z (LMS) — the
last two a fixed σ_0²/s²-sized distance apart whatever the step count.
Smooth in t, with the solution in hand,
this ODE measures a rule's convergence without a model in the way (a trained network's prediction need not
be smooth in t at the scale of one timestep, which caps what a high-order rule can gain on it) and without a
reference solve.

At a fractional timestep t, σ_t/a_t is interpolated linearly between the neighbouring integers, as the
k-diffusion-style rules (Euler, Heun, LMS) place their fractional timesteps, so every rule, integer or not,
integrates the same ODE.
"""

from __future__ import annotations

from typing import Any

import torch

from core.errors import DiffstackError

MU, S = 0.3, 0.5
"""The data's mean and standard deviation per latent element."""


class GaussianDataDenoiser:
    """Stands in for `like` (every attribute is `like`'s): called as `like` is, it returns the exact prediction
    for Gaussian data, in `like.prediction_type` (epsilon, v_prediction or sample), for the schedule
    `alphas_cumprod` (T,). It remembers the first state it is asked about since `reset()`, the start of a run,
    for `exact_state`."""

    def __init__(self, like: Any, alphas_cumprod: torch.Tensor) -> None:
        self.inner = like
        self.ve_sigmas = ((1 - alphas_cumprod.double()) / alphas_cumprod.double()).sqrt()  # (T,) σ_t / a_t
        self.start: tuple[torch.Tensor, float] | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def reset(self) -> None:
        """Forget the start: the next call begins a new run."""
        self.start = None

    def scales(self, timestep: float) -> tuple[float, float]:
        """(a, σ) at a timestep in [0, T − 1], fractional ones by linear interpolation of σ/a."""
        last = len(self.ve_sigmas) - 1
        if not 0 <= timestep <= last:
            raise DiffstackError(f"the Gaussian-data ODE is defined on timesteps 0..{last}, not {timestep}")
        low = min(int(timestep), last - 1)
        ratio = float(torch.lerp(self.ve_sigmas[low], self.ve_sigmas[low + 1], timestep - low))
        a = (1 + ratio**2) ** -0.5
        return a, a * ratio

    def __call__(self, sample: torch.Tensor, timestep: Any, context: torch.Tensor, **added: Any) -> torch.Tensor:
        """sample (B, C, h, w) at `timestep` (one value for the batch) → the prediction (B, C, h, w)."""
        t = float(torch.as_tensor(timestep).reshape(-1)[0])
        a, sigma = self.scales(t)
        x = sample.double()
        if self.start is None:
            self.start = (x.clone(), t)
        eps = sigma * (x - a * MU) / (a**2 * S**2 + sigma**2)
        kind = self.inner.prediction_type
        x0 = (x - sigma * eps) / a
        prediction = eps if kind == "epsilon" else a * eps - sigma * x0 if kind == "v_prediction" else x0
        return prediction.to(sample.dtype)

    def exact_state(self, timestep: float) -> torch.Tensor:
        """The exact solution through the run's start at `timestep`, (B, C, h, w) in float64."""
        a, sigma = self.scales(timestep)
        return a * MU + (a**2 * S**2 + sigma**2) ** 0.5 * self._invariant()

    def exact_ends(self) -> dict[str, torch.Tensor]:
        """The exact ends of the run from the start, (B, C, h, w) in float64: "state at t = 0", "x̂0 at t = 0"
        (E[x0 | x_0], where a jump from t = 0 to σ = 0 lands) and "σ = 0" (the ODE's limit μ + s·z)."""
        state = self.exact_state(0)
        a0, sigma0 = self.scales(0)
        return {
            "state at t = 0": state,
            "x̂0 at t = 0": MU + a0 * S**2 * (state - a0 * MU) / (a0**2 * S**2 + sigma0**2),
            "σ = 0": MU + S * self._invariant(),
        }

    def _invariant(self) -> torch.Tensor:
        """z = (x_t − a·μ) / √(a²s² + σ²) of the run's start, which the exact flow keeps."""
        if self.start is None:
            raise DiffstackError("no run yet: the exact solution passes through a run's first state")
        x, t = self.start
        a, sigma = self.scales(t)
        return (x - a * MU) / (a**2 * S**2 + sigma**2) ** 0.5
