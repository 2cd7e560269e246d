"""Batch throughput (`diffstack batch`, shapes-tiny at its defaults): seconds per image, PNGs and manifest
included, each run into a fresh folder.

- local: the jobs as calls of 8 images against the same jobs as one pipeline call per image (`--batch-size 1`,
  what a loop over `diffstack generate` or `pipe(prompt)` does);
- ray (with `diffstack[ray]`): 2 actors against 1, on one local Ray instance started before the timing (each
  run still starts its actors and builds their pipelines: that is part of what a user waits for).
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import os
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

from bench.row import Row
from bench.timing import measure
from core.batch.run import BatchReport, Engine, run_batch
from core.registry import load_registry

JOBS, IMAGES_PER_JOB, BATCH = 24, 2, 8
PROMPTS = ("a large red circle on a blue background", "a small green square on a white background",
           "a blue triangle on a yellow background", "a large white circle on a black background")  # fmt: skip


def rows(device: torch.device, repeats: int) -> list[Row]:
    warnings.simplefilter("ignore")
    registry = load_registry()
    pipe = registry.build(device=device)
    work = Path(tempfile.mkdtemp(prefix="diffstack-bench-batch-"))
    jobs = work / "jobs.jsonl"
    jobs.write_text("".join(
        json.dumps({"prompt": PROMPTS[i % 4], "id": f"j{i}", "seed": i, "num_images": IMAGES_PER_JOB}) + "\n"
        for i in range(JOBS)
    ))  # fmt: skip
    images = JOBS * IMAGES_PER_JOB
    runs = itertools.count()

    def batch(batch_size: int, engine: Callable[[Path], Engine] | None = None) -> Callable[[], BatchReport]:
        def run() -> BatchReport:
            out = work / f"run{next(runs)}"
            return run_batch(jobs, out, pipe, str(registry.path), engine(out) if engine else None,
                             batch_size=batch_size)  # fmt: skip

        return run

    local = measure({"batched": batch(BATCH), "one per call": batch(1)}, device, repeats)
    found = [Row("batch", f"local: {images} images, calls of {BATCH} vs of 1 (per image)",
                 local["batched"].median / images, local["one per call"].median / images)]  # fmt: skip
    if importlib.util.find_spec("ray") is None:
        return found
    import ray

    from core.batch.ray_engine import ray_engine

    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    try:

        def on_ray(workers: int) -> Callable[[], BatchReport]:
            return batch(BATCH, lambda out: ray_engine(str(registry.path), pipe.name, str(device), out, workers, None))

        timed = measure({"2 actors": on_ray(2), "1 actor": on_ray(1)}, device, repeats, warmup=0)
    finally:
        ray.shutdown()
    found.append(Row("batch", f"ray: {images} images, 2 actors vs 1 (per image, actor start-up included)",
                     timed["2 actors"].median / images, timed["1 actor"].median / images))  # fmt: skip
    return found
