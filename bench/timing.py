"""Timing and memory measurement shared by the benchmarks: interleaved repeats, medians, peak memory.

Ours and the reference run alternately, round after round, so slow drifts of the machine (another job, CPU
frequency) hit both alike; the figure reported is the median of the timed rounds. Peak memory is measured
per call: on CUDA the allocator's peak (`torch.cuda.max_memory_allocated`), on the CPU the process's peak
resident set (VmHWM, reset before each call through /proc/self/clear_refs).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch


@dataclass
class Measurement:
    """Seconds of each timed round, the largest peak memory (bytes, None: unknown) of one call, and what the
    last call returned."""

    seconds: list[float] = field(default_factory=list)
    peak_bytes: int | None = None
    output: object = None

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def resident_peak() -> int | None:
    """This process's peak resident set size in bytes since the last `reset_resident_peak` (Linux only)."""
    status = Path("/proc/self/status")
    if not status.exists():
        return None
    for line in status.read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return None


def reset_resident_peak() -> None:
    """Set the peak RSS back to the current RSS (Linux ≥ 4.0; a no-op elsewhere)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def measure(
    calls: dict[str, Callable[[], object]],
    device: torch.device,
    repeats: int,
    warmup: int = 1,
    warmup_calls: dict[str, Callable[[], object]] | None = None,
) -> dict[str, Measurement]:
    """Time each call `repeats` times after `warmup` untimed rounds, interleaved: round r runs every call once.
    If given, `warmup_calls` replace the calls in the warm-up rounds (e.g. a one-step generation), and only
    the calls named there are warmed up (those with one-time work: packing, compiling)."""
    results = {name: Measurement() for name in calls}
    for round_ in range(warmup + repeats):
        for name, call in calls.items():
            if round_ < warmup and warmup_calls is not None and name not in warmup_calls:
                continue
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            else:
                reset_resident_peak()
            synchronize(device)
            start = time.perf_counter()
            output = (warmup_calls or calls)[name]() if round_ < warmup else call()
            synchronize(device)
            elapsed = time.perf_counter() - start
            peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else resident_peak()
            result = results[name]
            if peak is not None:
                result.peak_bytes = max(result.peak_bytes or 0, peak)
            if round_ >= warmup:
                result.seconds.append(elapsed)
                result.output = output
    return results


def warmups(calls: dict[str, Callable[[], object]], device: torch.device) -> dict[str, Callable[[], object]]:
    """The calls that need an untimed first round: on the CPU only the fast path's ("… fast": it packs its
    weights or compiles on its first call; eager code has no one-time work), on CUDA every one (context,
    cuBLAS and cuDNN set-up)."""
    return {name: call for name, call in calls.items() if device.type == "cuda" or name.endswith("fast")}
