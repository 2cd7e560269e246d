"""Jobs files and output readers shared by the `diffstack batch` tests (tests/e2e/test_batch*.py)."""

from __future__ import annotations

import json
from pathlib import Path

PROMPTS = [
    "a large red circle on a blue background",
    "a small green square on a white background",
    "a blue triangle on a yellow background",
    "a large white circle on a black background",
]


def mixed_jobs(n: int) -> list[dict]:
    """n jobs of 2 images, ids given, with mixed steps, guidance, scheduler and negative prompt (few steps)."""
    jobs = []
    for i in range(n):
        job = {"prompt": PROMPTS[i % 4], "id": f"job{i:02d}", "seed": 10 * i, "num_images": 2, "steps": 4 + i % 3}
        if i % 3 == 1:
            job["guidance_scale"] = 2.5
        if i % 5 == 2:
            job["scheduler"] = "euler"
        if i % 4 == 3:
            job["negative_prompt"] = "a circle"
        jobs.append(job)
    return jobs


def write_jobs(path: Path, jobs: list[dict]) -> Path:
    path.write_text("".join(json.dumps(job) + "\n" for job in jobs))
    return path


def images(out: Path) -> dict[str, bytes]:
    """File name → bytes of every image in `out/images`."""
    return {path.name: path.read_bytes() for path in sorted((out / "images").iterdir())}


def manifest(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


def made(out: Path) -> set[tuple]:
    """What the manifest says was made, less how long it took and where: (id, k, file, sha256, recipe)."""
    return {(e["id"], e["k"], e["file"], e["sha256"], json.dumps(e["recipe"], sort_keys=True)) for e in manifest(out)}
