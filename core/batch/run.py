"""`run_batch`: read the jobs, plan the calls, skip what an earlier run finished, run the rest on an engine,
keep the manifest.

Engines: `local_engine` runs the calls in this process on the pipeline already built; `core.batch.ray_engine`
runs them in Ray actors. An engine takes the calls still to do and yields, as each call finishes, the manifest
lines of the images it wrote.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from core.batch.calls import run_call
from core.batch.jobs import BadLine, read_jobs
from core.batch.output import (
    Key,
    append_manifest,
    done_sha256,
    entry,
    read_manifest,
    remove_partial,
    write_manifest,
)
from core.batch.plan import IMAGES, Call, plan
from core.errors import InputError
from core.pipeline import Pipeline

Pending = tuple[Call, frozenset[Key]]
"""A call to run and the (id, k) of its images still to write."""
Engine = Callable[[list[Pending]], Iterable[list[dict[str, Any]]]]


@dataclass(frozen=True)
class BatchReport:
    """What a batch run did: images in the plan, found done, written now; lines left out; wall seconds."""

    planned: int
    found_done: int
    written: int
    bad_lines: list[BadLine]
    seconds: float


def local_engine(pipe: Pipeline, out: Path) -> Engine:
    """Run the calls one after another in this process, on `pipe`."""

    def run(pending: list[Pending]) -> Iterator[list[dict[str, Any]]]:
        for call, todo in pending:
            yield run_call(pipe, call, todo, out, "local")

    return run


def run_batch(
    jobs_file: Path,
    out: Path,
    pipe: Pipeline,
    registry: str,
    engine: Engine | None = None,
    *,
    batch_size: int = 4,
    strict: bool = False,
    progress: bool = False,
    on_bad_line: Callable[[BadLine], None] = lambda bad: None,
    on_warning: Callable[[list[int], str], None] = lambda lines, message: None,
) -> BatchReport:
    """Make every image of `jobs_file` with `pipe` into `out`, skipping the images already there and valid.

    `pipe` resolves and checks every job, and makes the images unless another `engine` is given (default:
    `local_engine(pipe, out)`); `registry` is
    the registry file recorded in each PNG's recipe. Each line left out is passed to `on_bad_line`; with
    `strict`, any such line stops the batch before anything runs (an InputError). Each distinct warning about
    the jobs' settings goes once to `on_warning`, with the numbers of the lines it applies to.
    """
    began = time.perf_counter()
    if batch_size < 1:
        raise InputError(f"--batch-size must be at least 1, got {batch_size}")
    jobs, bad = read_jobs(jobs_file, pipe)
    for line in bad:
        on_bad_line(line)
    if bad and strict:
        raise InputError(f"{len(bad)} of the lines of {jobs_file} cannot run; with --strict nothing runs",
                         hint="fix the lines above, or drop --strict to run the others")  # fmt: skip
    if not jobs:
        raise InputError(f"{jobs_file} has no job that can run", hint='one JSON object per line: {"prompt": "…"}')
    warned: dict[str, list[int]] = {}
    for job in jobs:
        for message in job.warnings:
            warned.setdefault(message, []).append(job.line)
    for message, lines in warned.items():
        on_warning(lines, message)
    calls = plan(jobs, batch_size, registry)
    (out / IMAGES).mkdir(parents=True, exist_ok=True)
    remove_partial(out)
    listed = read_manifest(out)
    done: dict[Key, dict[str, Any]] = {}
    pending: list[Pending] = []
    for call in calls:
        todo = []
        for item in call.items:
            key = (item.job, item.k)
            sha256 = done_sha256(out, item)
            listed_sha256 = listed.get(key, {}).get("sha256")
            if sha256 is None or listed_sha256 not in (None, sha256):  # unreadable, or changed since it was listed
                todo.append(key)
            elif listed_sha256 == sha256 and listed[key].get("recipe") == item.recipe:
                done[key] = listed[key]
            else:
                done[key] = entry(item, sha256, None, None)
        if todo:
            pending.append((call, frozenset(todo)))
    order = [(item.job, item.k) for call in calls for item in call.items]
    write_manifest(out, [done[key] for key in order if key in done])
    found = len(done)
    with tqdm(total=len(order), initial=found, desc="images", unit="image", disable=not progress) as bar:
        for written in (engine or local_engine(pipe, out))(pending):
            append_manifest(out, written)
            done |= {(e["id"], e["k"]): e for e in written}
            bar.update(len(written))
    write_manifest(out, [done[key] for key in order])
    return BatchReport(len(order), found, len(done) - found, bad, time.perf_counter() - began)
