"""DPM-Solver++ (2M) update rule — Lu et al. (2022), "DPM-Solver++: Fast Solver for Guided Sampling of Diffusion
Probabilistic Models", Algorithm 2 (multistep, data prediction), orders 1–3."""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from pydantic import Field

from core import ComponentSpec, StandIn, StepOutput, VPScheduler, hookimpl, schedules
from core.discrete_scheduler import Noise


class Config(schedules.ThresholdingConfig, schedules.ScheduleConfig):
    solver_order: int = Field(2, ge=1, le=3, description="how many past x̂0 each step combines (2 = 2M)")
    solver_type: Literal["midpoint", "heun"] = Field("midpoint", description="second-order term of the update")
    lower_order_final: bool = Field(True, description="first/second order for the last steps of runs under 15 steps")
    euler_at_final: bool = Field(False, description="always take the last step at first order")
    use_karras_sigmas: bool = Field(False, description="respace σ as in Karras et al. (2022), ρ = 7")
    final_sigmas_type: Literal["zero", "sigma_min"] = Field(
        "zero", description="noise level after the last step: 0, or σ of training timestep 0"
    )


class DPMSolverPP2M(VPScheduler):
    """With α_t = 1/√(σ_t²+1), σ'_t = σ_t·α_t, λ_t = log(α_t/σ'_t), h = λ_t - λ_s and x̂0 history m0, m1, m2:

    x_t = σ'_t/σ'_s·x_s - α_t(e^{-h} - 1)·D0 + (order 2, midpoint) -½α_t(e^{-h} - 1)·D1
                                             | (order 2, heun)      α_t((e^{-h} - 1)/h + 1)·D1,
    D0 = m0, D1 = (m0 - m1)/r0, r0 = h_prev/h; order 3 adds the D2 term of Algorithm 2 (Lu et al. 2022).
    The order ramps up over the first steps and drops for the last ones (`lower_order_final`, `euler_at_final`).
    `history` holds the last `solver_order` x̂0, newest first.
    """

    config: Config
    _first: list[list[float]]  # per order: scalars of each step
    _second: list[list[float]]
    _third: list[list[float]]
    _alpha_sigma: list[tuple[float, float]]

    def _schedule(self, num_steps: int) -> tuple[np.ndarray, np.ndarray]:
        c, train = self.config, self.train_sigmas
        timesteps = schedules.solver_timesteps(c.timestep_spacing, num_steps, c.num_train_timesteps, c.steps_offset)
        if c.use_karras_sigmas:  # between the training extremes
            sigmas = schedules.karras_sigmas(float(train[0]), float(train[-1]), num_steps)
            timesteps = schedules.timesteps_from_sigmas(sigmas, train)
            if c.beta_schedule not in ("squaredcos_cap_v2", "cosine"):
                timesteps = timesteps.round()
        else:
            sigmas = schedules.interpolate_sigmas(timesteps, train)
        last = train[0] if c.final_sigmas_type == "sigma_min" else 0.0
        return timesteps, np.append(sigmas, last).astype(np.float32)

    def _precompute(self) -> None:
        sigma = self.sigmas  # (m+1,) float32, as diffusers
        alpha = 1 / (sigma**2 + 1) ** 0.5
        sigma_vp = sigma * alpha
        self._alpha_sigma = list(zip(alpha.tolist(), sigma_vp.tolist(), strict=True))  # (α_t, σ'_t) per step
        lam = (torch.log(alpha) - torch.log(sigma_vp)).double().numpy()  # (m+1,) λ, +inf at σ = 0
        a64, s64 = alpha.double().numpy(), sigma_vp.double().numpy()  # α_t, σ'_t in float64
        # entries that would divide by a missing history or by σ = 0 come out inf/NaN and are never used
        with np.errstate(divide="ignore", invalid="ignore"):
            h = lam[1:] - lam[:-1]  # (m,) step in λ
            r0 = np.append(np.nan, h[:-1]) / h  # h_{i-1}/h_i
            r1 = np.append([np.nan, np.nan], h[:-2]) / h  # h_{i-2}/h_i
            keep = s64[1:] / s64[:-1]  # weight of x_s
            a = -a64[1:] * np.expm1(-h)  # of D0
            b = a64[1:] * (np.expm1(-h) / h + 1)  # of D1 (heun, third order)
            c = -a64[1:] * ((np.expm1(-h) + h) / h**2 - 0.5)  # of D2
            d1 = -0.5 * a64[1:] * np.expm1(-h) if self.config.solver_type == "midpoint" else b
            # per step, the scalars of each order's update as `step` writes it out
            self._first = np.stack([keep, a], axis=1).tolist()
            self._second = np.stack([keep, a, d1 / r0], axis=1).tolist()
            self._third = np.stack([keep, a, b / r0, (b * r0 + c) / (r0 + r1), 1 / r0, 1 / r1], axis=1).tolist()

    def _order(self, i: int, history: int) -> int:
        """diffusers' order rule: ramp up with the history, lower it at the end of short runs."""
        c, last, n = self.config, len(self.timestep_list) - 1, self.num_inference_steps or 0
        short = c.lower_order_final and n < 15
        lower_final = i == last and (c.euler_at_final or short or c.final_sigmas_type == "zero")
        lower_second = i == last - 1 and short
        if c.solver_order == 1 or history < 1 or lower_final:
            return 1
        if c.solver_order == 2 or history < 2 or lower_second:
            return 2
        return 3

    def _update(self, i: int, model_output: torch.Tensor, sample: torch.Tensor, noise: Noise) -> StepOutput:
        c = self.config
        alpha, sigma = self._alpha_sigma[i]
        x0 = schedules.predicted_x0(c.prediction_type, model_output, sample, alpha, sigma)  # (B, C, h, w)
        x0 = schedules.clip_or_threshold(x0, c)
        order = self._order(i, len(self.history))
        self.history = m = [x0, *self.history][: c.solver_order]
        x = sample.to(torch.promote_types(sample.dtype, torch.float32))  # at least float32 for the update
        if order == 1:
            keep, a = self._first[i]
            prev = keep * x + a * m[0]
        elif order == 2:
            keep, a, d1 = self._second[i]
            prev = keep * x + a * m[0] + d1 * (m[0] - m[1])
        else:
            keep, a, b_r0, c12, inv_r0, inv_r1 = self._third[i]
            d1_0, d1_1 = inv_r0 * (m[0] - m[1]), inv_r1 * (m[1] - m[2])
            prev = keep * x + a * m[0] + b_r0 * (m[0] - m[1]) + c12 * (d1_0 - d1_1)
        return StepOutput(prev.to(sample.dtype), x0)


@hookimpl
def diffstack_components() -> list[ComponentSpec]:
    about = "DPM-Solver++ 2M (Lu et al. 2022): second-order multistep, deterministic"
    return [
        ComponentSpec(
            "scheduler",
            "dpmpp-2m",
            DPMSolverPP2M,
            Config,
            description=about,
            stands_in_for=(StandIn("DPMSolverMultistepScheduler"),),
        )
    ]
