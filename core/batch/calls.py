"""Running one planned call: generate its images, write the ones still to do, describe them for the manifest.

Engines differ only in where this runs: in the batch's own process (`local`) or in Ray actors (`ray`).
"""

from __future__ import annotations

import hashlib
import time
import warnings
from pathlib import Path
from typing import Any

from core.batch.output import Key, entry
from core.batch.plan import Call
from core.errors import FewStepsWarning
from core.images import save_png
from core.pipeline import Pipeline


def run_call(pipe: Pipeline, call: Call, todo: frozenset[Key], out: Path, worker: str) -> list[dict[str, Any]]:
    """Generate every image of `call` (the whole call, so each image comes out as in any other run of the
    plan), write those in `todo` ((id, k) pairs) into `out` atomically → their manifest lines. A rule run at
    fewer steps than it needs is not warned about here: the job lines asking for it were (`ResolvedJob`)."""
    began = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FewStepsWarning)
        generation = pipe(
            [item.prompt for item in call.items],
            seed=[item.seed for item in call.items],
            negative_prompt=[item.negative_prompt for item in call.items],
            progress=False,
            **call.shared,
        )
    seconds = (time.perf_counter() - began) / len(call.items)
    written = []
    for item, image in zip(call.items, generation.images, strict=True):
        if (item.job, item.k) in todo:
            path = save_png(image, out / item.file, item.recipe, overwrite=True)
            written.append(entry(item, hashlib.sha256(path.read_bytes()).hexdigest(), seconds, worker))
    return written
