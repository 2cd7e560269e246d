"""Scheduler overhead: diffstack's update rules against diffusers', same config, same process.

Per rule, the time the scheduler takes per denoising step (`scale_model_input` + `step` on a (1, 4, 64, 64)
latent, the median of several 50-step loops), with the model output held fixed so only the scheduler counts.
"""

from __future__ import annotations

import statistics
import time
import warnings
from typing import Any

import torch

from bench.row import Row
from core.create import create

SD_SCHEDULE = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}
RULES = {
    "ddpm": "DDPMScheduler",
    "ddim": "DDIMScheduler",
    "lms": "LMSDiscreteScheduler",
    "euler": "EulerDiscreteScheduler",
    "euler-ancestral": "EulerAncestralDiscreteScheduler",
    "dpmpp-2m": "DPMSolverMultistepScheduler",
}


def seconds_per_step(
    scheduler: Any, steps: int, repeats: int, device: torch.device, takes_generator: bool
) -> list[float]:
    """Seconds per step of each of `repeats` loops (after one warm-up loop)."""
    latents = torch.randn(1, 4, 64, 64, generator=torch.Generator().manual_seed(0)).to(device)
    model_output = 0.1 * torch.randn(1, 4, 64, 64, generator=torch.Generator().manual_seed(1)).to(device)
    per_loop = []
    for _ in range(repeats + 1):
        scheduler.set_timesteps(steps, device=device)
        sample = latents * float(scheduler.init_noise_sigma)
        kwargs = {"generator": torch.Generator(device).manual_seed(2)} if takes_generator else {}
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        for t in scheduler.timesteps:
            scheduler.scale_model_input(sample, t)
            sample = scheduler.step(model_output, t, sample, **kwargs).prev_sample
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        per_loop.append((time.perf_counter() - start) / steps)
    return per_loop[1:]


def rows(device: torch.device, repeats: int, steps: int = 50) -> list[Row]:
    warnings.simplefilter("ignore")  # diffusers' deprecation notices
    import diffusers

    out = []
    for name, class_name in RULES.items():
        same_rule = {"stability_cap": False} if name == "lms" else {}  # diffusers' LMS exactly: the same work
        ours = create("scheduler", name, **SD_SCHEDULE, **same_rule)
        theirs = getattr(diffusers, class_name)(**SD_SCHEDULE)
        mine = statistics.median(seconds_per_step(ours, steps, repeats, device, True))
        reference = statistics.median(
            seconds_per_step(theirs, steps, repeats, device, class_name != "LMSDiscreteScheduler")
        )
        out.append(Row("scheduler step", f"{name} ({steps} steps, 1×4×64×64)", mine, reference))
    return out
