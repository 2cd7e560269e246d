"""Benchmark: diffstack's schedulers against diffusers' on the CPU, same config, same process.

Per rule: the scheduler's time per denoising step (`scale_model_input` + `step` on a (1, 4, 64, 64) latent,
median of several 50-step runs) for both libraries and their ratio, and the time of `set_timesteps(50)`.

    python bench/schedulers.py [--steps 50] [--runs 5] [--threads 1]
"""
from __future__ import annotations

import argparse
import statistics
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch

from core.plugin_manager import PluginManager

SD_SCHEDULE = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}
RULES = {
    "ddpm": "DDPMScheduler",
    "ddim": "DDIMScheduler",
    "lms": "LMSDiscreteScheduler",
    "euler": "EulerDiscreteScheduler",
    "euler-ancestral": "EulerAncestralDiscreteScheduler",
    "dpmpp-2m": "DPMSolverMultistepScheduler",
}


def seconds_per_step(scheduler: Any, steps: int, runs: int, takes_generator: bool) -> float:
    """Median over `runs` loops of the time spent in the scheduler per step."""
    latents = torch.randn(1, 4, 64, 64, generator=torch.Generator().manual_seed(0))
    model_output = 0.1 * torch.randn(1, 4, 64, 64, generator=torch.Generator().manual_seed(1))
    per_run = []
    for _ in range(runs + 1):                                                # the first run warms up
        scheduler.set_timesteps(steps)
        sample = latents * float(scheduler.init_noise_sigma)
        kwargs = {"generator": torch.Generator().manual_seed(2)} if takes_generator else {}
        elapsed = 0.0
        for t in scheduler.timesteps:
            start = time.perf_counter()
            scheduler.scale_model_input(sample, t)
            sample = scheduler.step(model_output, t, sample, **kwargs).prev_sample
            elapsed += time.perf_counter() - start
        per_run.append(elapsed / steps)
    return statistics.median(per_run[1:])


def seconds_per_call(call: Callable[[], Any], repeats: int = 50) -> float:
    call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1: stable timings)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")                                          # diffusers' deprecation notices
    import diffusers

    plugins = PluginManager.discover(entry_points=False)
    print(f"CPU, torch {torch.__version__}, diffusers {diffusers.__version__}, {args.threads} thread(s), "
          f"latent (1, 4, 64, 64), {args.steps} steps, scaled_linear schedule; "
          "time per step = scale_model_input + step")
    print(f"{'rule':<16}{'ours/step':>12}{'diffusers/step':>16}{'speed-up':>10}"
          f"{'ours set_timesteps':>20}{'diffusers set_t.':>18}")
    speedups = {}
    for name, class_name in RULES.items():
        spec = plugins.get("scheduler", name).spec
        ours = spec.build(spec.config(**SD_SCHEDULE))
        theirs = getattr(diffusers, class_name)(**SD_SCHEDULE)
        ours_step = seconds_per_step(ours, args.steps, args.runs, True)
        theirs_step = seconds_per_step(theirs, args.steps, args.runs, class_name != "LMSDiscreteScheduler")
        ours_set = seconds_per_call(lambda s=ours: s.set_timesteps(args.steps))
        theirs_set = seconds_per_call(lambda s=theirs: s.set_timesteps(args.steps))
        speedups[name] = theirs_step / ours_step
        print(f"{name:<16}{ours_step * 1e6:>9.1f} µs{theirs_step * 1e6:>13.1f} µs{speedups[name]:>9.1f}×"
              f"{ours_set * 1e3:>17.3f} ms{theirs_set * 1e3:>15.3f} ms")
    slowest = min(speedups, key=speedups.get)
    print(f"LMS per step: {speedups['lms']:.0f}× faster than diffusers (target ≥ 10×): "
          f"{'met' if speedups['lms'] >= 10 else 'NOT met'}")
    print(f"slowest relative to diffusers: {slowest} at {speedups[slowest]:.2f}× (target ≥ 1×): "
          f"{'met' if speedups[slowest] >= 1 else 'NOT met'}")


if __name__ == "__main__":
    main()
