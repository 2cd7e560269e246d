"""Linear multistep (LMS) update rule — Karras et al. (2022), "Elucidating the Design Space of Diffusion-Based
Generative Models" (k-diffusion's `sample_lms`): Adams–Bashforth on the probability-flow ODE in σ-space,
with variable steps, order 1–4."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from pydantic import Field

from core import ComponentSpec, SigmaScheduler, StepOutput, hookimpl, schedules
from core.discrete_scheduler import Noise


class Config(schedules.ScheduleConfig):
    use_karras_sigmas: bool = Field(False, description="respace σ as in Karras et al. (2022), ρ = 7")
    solver_order: int = Field(4, ge=1, le=4, description="how many past derivatives each step combines")


def lms_coefficients(sigmas: np.ndarray, max_order: int) -> list[list[list[float]]]:
    """Linear multistep weights, exact: c[i][k-1][j] = ∫_{σ_i}^{σ_{i+1}} ℓ_j(τ) dτ for the k-th order rule at
    step i, ℓ_j the Lagrange basis polynomial through σ_i, σ_{i-1}, …, σ_{i-k+1} that is 1 at σ_{i-j}.

    With u = τ - σ_i, ℓ_j = Π_{m≠j}(u - a_m)/(a_j - a_m), a_m = σ_{i-m} - σ_i, a polynomial of degree < 4
    integrated term by term over [0, h], h = σ_{i+1} - σ_i. sigmas: (n+1,); entries for k > i+1 stay 0.
    """
    s = sigmas.astype(np.float64)
    n = len(s) - 1
    out = np.zeros((n, max_order, max_order))
    h = s[1:] - s[:-1]  # (n,)
    for k in range(1, max_order + 1):
        idx = np.arange(k - 1, n)  # steps with k derivatives available
        a = [s[idx - m] - s[idx] for m in range(k)]  # k × (len(idx),)
        for j in range(k):
            poly: list[Any] = [np.ones_like(idx, dtype=np.float64)]  # coefficients of u^0, u^1, …
            denom = np.ones_like(poly[0])
            for m in range(k):
                if m != j:
                    padded = [*poly, 0.0]  # times (u - a_m)
                    poly = [(padded[p - 1] if p else 0.0) - a[m] * padded[p] for p in range(len(padded))]
                    denom = denom * (a[j] - a[m])
            integral = sum(c * h[idx] ** (p + 1) / (p + 1) for p, c in enumerate(poly))
            out[idx, k - 1, j] = integral / denom
    return out.tolist()


class LMS(SigmaScheduler):
    """d_i = (x̃_i - x̂0_i)/σ_i;  x̃_{i+1} = x̃_i + Σ_{j<k} c_{ij}·d_{i-j}, where c_{ij} = ∫_{σ_i}^{σ_{i+1}} ℓ_j(σ)dσ
    integrates the Lagrange polynomial through the last k σ's, k = min(steps so far, solver_order).

    The weights are exact and computed once per `set_timesteps` (`lms_coefficients`); a step is k
    multiply-adds on the latents with host scalars, no integration and no device synchronisation.
    `history` holds the last k derivatives d, newest first.
    """

    config: Config

    def _precompute(self) -> None:
        self._coefficients = lms_coefficients(np.array(self.sigma_list), self.config.solver_order)

    def _update(self, i: int, model_output: torch.Tensor, sample: torch.Tensor, noise: Noise) -> StepOutput:
        sigma = self.sigma_list[i]
        x0 = schedules.predicted_x0_sigma(self.config.prediction_type, model_output, sample, sigma)
        self.history = [(sample - x0) / sigma, *self.history][: self.config.solver_order]
        weights = self._coefficients[i][len(self.history) - 1]
        # summed apart from the sample (the first step cancels most of x̃), in diffusers' order and rounding
        update = sum(weight * derivative for weight, derivative in zip(weights, self.history, strict=False))
        return StepOutput(sample + update, x0)


@hookimpl
def diffstack_components() -> list[ComponentSpec]:
    about = "linear multistep (k-diffusion): exact Adams–Bashforth weights, order 1-4, deterministic"
    return [ComponentSpec("scheduler", "lms", LMS, Config, description=about)]
