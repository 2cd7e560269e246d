"""A batch's plan: every image of every job, grouped into the pipeline calls that make them.

Images that share the settings of a call (steps, guidance, size, scheduler) go into one call of up to
`batch_size` images, ordered by (job id, k), each with its own prompt, negative prompt and seed. The plan
depends on the set of job lines and `batch_size` alone — not on the order of the lines, the engine, the worker
count, the order calls run in, or what an earlier run already wrote (a resumed call is re-run whole, and
writes only its missing images) — so every image comes out of the same call, and so with the same bytes,
however the batch is run. (CPU and GPU kernels sum in an order that depends on the batch size, so another
`batch_size` can move a pixel by one 8-bit level; at `batch_size` 1 image k of a job is the one
`diffstack generate PROMPT --seed S+k` makes with the job's other settings.)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from core.batch.jobs import ResolvedJob
from core.recipe import recipe_of

IMAGES = "images"
"""The folder of the output directory the PNGs go to."""


@dataclass(frozen=True)
class Item:
    """One image: image `k` of job `job`, drawn from `seed`; `file` is relative to the output directory;
    `recipe` is what its PNG records (a one-image `diffstack generate` recipe, plus the registry)."""

    job: str
    k: int
    seed: int
    prompt: str
    negative_prompt: str
    file: str
    recipe: dict[str, Any]


@dataclass(frozen=True)
class Call:
    """One pipeline call: its images and the settings they share (`steps`, `guidance_scale`, `height`,
    `width`, `scheduler`)."""

    items: tuple[Item, ...]
    shared: dict[str, Any]


def plan(jobs: list[ResolvedJob], batch_size: int, registry: str) -> list[Call]:
    """The calls that make every image of `jobs`, ordered by their shared settings, then by (job id, k)."""
    groups: dict[str, tuple[dict[str, Any], list[Item]]] = {}
    for job in jobs:
        s = job.settings
        shared = {"steps": s.steps, "guidance_scale": s.guidance_scale, "height": s.height, "width": s.width,
                  "scheduler": s.scheduler}  # fmt: skip
        key = json.dumps([shared, s.scheduler_config], sort_keys=True)
        items = groups.setdefault(key, (shared, []))[1]
        for k, seed in enumerate(s.seeds):
            recipe = {**recipe_of(s), "seed": seed, "num_images": 1, "registry": registry}
            file = f"{IMAGES}/{job.id}-{k}.png"
            items.append(Item(job.id, k, seed, s.prompts[0], s.negative_prompts[0], file, recipe))
    calls = []
    for key in sorted(groups):
        shared, items = groups[key]
        items.sort(key=lambda item: (item.job, item.k))
        calls += [Call(tuple(items[i : i + batch_size]), shared) for i in range(0, len(items), batch_size)]
    return calls
