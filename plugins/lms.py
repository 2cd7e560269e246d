"""Linear multistep (LMS) update rule — Karras et al. (2022), "Elucidating the Design Space of Diffusion-Based
Generative Models" (k-diffusion's `sample_lms`): Adams–Bashforth on the probability-flow ODE in σ-space,
with variable steps, order 1–4, each step's order capped where a higher one would be unstable."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from pydantic import Field

from core import ComponentSpec, SigmaScheduler, StandIn, StepOutput, hookimpl, schedules
from core.discrete_scheduler import Noise


class Config(schedules.ScheduleConfig):
    use_karras_sigmas: bool = Field(False, description="respace σ as in Karras et al. (2022), ρ = 7")
    solver_order: int = Field(4, ge=1, le=4, description="how many past derivatives each step combines")
    stability_cap: bool = Field(
        True, description="lower a step's order where it would be unstable (`stable_orders`); False = diffusers' LMS"
    )


AB_STABILITY = (2.0, 1.0, 6 / 11, 3 / 10)
"""Adams–Bashforth of order k = 1…4 is stable for hλ in (−AB_STABILITY[k-1], 0) on the negative real axis."""
STABILITY_MARGIN = 0.75
"""Fraction of that interval a step may use, as variable steps and a learned x̂0 stray from the test equation.
Chosen on shapes-tiny, where LMS at its 20 default steps draws the prompt with it and not without the cap
(tests/e2e/test_scheduler_swap.py)."""


def stable_orders(sigmas: np.ndarray, max_order: int) -> list[int]:
    """The highest stable order of each of the n steps over `sigmas` (n+1,), at most `max_order`.

    Near a clean signal the probability-flow ODE dx/dσ = (x - x̂0)/σ behaves like the test equation
    dx/dσ = x/σ, so a step from σ_i to σ_{i+1} has hλ = -(σ_i - σ_{i+1})/σ_i, the relative step; a step takes
    the highest order k whose interval, times `STABILITY_MARGIN`, holds it (order 1 when none does).
    """
    relative = (sigmas[:-1] - sigmas[1:]) / sigmas[:-1]
    bounds = [STABILITY_MARGIN * bound for bound in AB_STABILITY[:max_order]]
    return [max([1] + [k for k, bound in enumerate(bounds, 1) if r <= bound]) for r in relative]


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
    integrates the Lagrange polynomial through the last k σ's, k = min(steps so far, solver_order), and, with
    `stability_cap`, at most the step's stable order (`stable_orders`).

    The weights are exact and computed once per `set_timesteps` (`lms_coefficients`); a step is k
    multiply-adds on the latents with host scalars, no integration and no device synchronisation.
    `history` holds the last k derivatives d, newest first.
    """

    config: Config

    def _precompute(self) -> None:
        sigmas, most = np.array(self.sigma_list), self.config.solver_order
        self._coefficients = lms_coefficients(sigmas, most)
        self._orders = stable_orders(sigmas, most) if self.config.stability_cap else [most] * (len(sigmas) - 1)

    def _update(self, i: int, model_output: torch.Tensor, sample: torch.Tensor, noise: Noise) -> StepOutput:
        sigma = self.sigma_list[i]
        x0 = schedules.predicted_x0_sigma(self.config.prediction_type, model_output, sample, sigma)
        self.history = [(sample - x0) / sigma, *self.history][: self.config.solver_order]
        order = min(len(self.history), self._orders[i])
        weights = self._coefficients[i][order - 1]
        # summed apart from the sample (the first step cancels most of x̃), in diffusers' order and rounding
        update = sum(weight * derivative for weight, derivative in zip(weights, self.history[:order], strict=False))
        return StepOutput(sample + update, x0)


@hookimpl
def diffstack_components() -> list[ComponentSpec]:
    about = "linear multistep (k-diffusion): exact Adams–Bashforth weights, order 1-4, deterministic"
    plms = StandIn(
        "PNDMScheduler",
        note="PNDMScheduler (PLMS) has no diffstack implementation; using 'lms', the linear multistep rule of the "
        "same order (4), with the same noise schedule and timesteps",
        dropped=frozenset({"skip_prk_steps", "set_alpha_to_one"}),
        defaults={"timestep_spacing": "leading"},
    )
    stand_ins = (StandIn("LMSDiscreteScheduler"), plms)
    return [ComponentSpec("scheduler", "lms", LMS, Config, description=about, stands_in_for=stand_ins)]
