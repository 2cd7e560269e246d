"""A batch's output directory: the PNGs, checked before they are trusted, and `manifest.jsonl`.

    DIR/images/<id>-<k>.png    written atomically (a temporary file renamed into place), with its recipe
    DIR/manifest.jsonl         one line per image: id, k, file, sha256, recipe, seconds, worker

An image counts as done only when its file decodes whole, carries exactly the recipe its job line asks for
and, when the manifest lists it, still has the SHA-256 listed; anything else (a truncated or edited file,
another job's image, a temporary file left by a killed run) is redone.
The manifest is appended to as images are written and rewritten whole, in plan order, when the batch starts
and when it ends, so a run killed at any point leaves a manifest the next run can repair.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from PIL import Image

from core.batch.plan import IMAGES, Item
from core.images import RECIPE_KEY, current_umask

MANIFEST = "manifest.jsonl"
Key = tuple[str, int]


def entry(item: Item, sha256: str, seconds: float | None, worker: str | None) -> dict[str, Any]:
    """The manifest line of an image (`seconds` and `worker` None for one found done by an earlier run
    whose manifest line was lost)."""
    return {"id": item.job, "k": item.k, "file": item.file, "sha256": sha256, "recipe": item.recipe,
            "seconds": seconds, "worker": worker}  # fmt: skip


def done_sha256(out: Path, item: Item) -> str | None:
    """The SHA-256 of `item`'s PNG when it is there, decodes whole and carries `item.recipe`; else None."""
    try:
        data = (out / item.file).read_bytes()
        with Image.open(io.BytesIO(data)) as image:  # the bytes read once serve the decode and the hash
            image.load()
            recipe = json.loads(image.text.get(RECIPE_KEY, "null"))
    except (OSError, ValueError, SyntaxError, AttributeError):
        return None
    return hashlib.sha256(data).hexdigest() if recipe == item.recipe else None


def remove_partial(out: Path) -> int:
    """Delete the temporary files a killed run left (images and manifest being written) → how many."""
    folder = out / IMAGES
    partial = [*out.glob(f".{MANIFEST}.*.tmp"), *(folder.glob(".*.tmp") if folder.is_dir() else [])]
    for path in partial:
        path.unlink(missing_ok=True)
    return len(partial)


def read_manifest(out: Path) -> dict[Key, dict[str, Any]]:
    """(id, k) → the last well-formed manifest line for it; lines a killed run cut short are skipped."""
    found: dict[Key, dict[str, Any]] = {}
    path = out / MANIFEST
    if not path.is_file():
        return found
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
            found[(record["id"], record["k"])] = record
        except (json.JSONDecodeError, KeyError, TypeError):
            continue
    return found


def write_manifest(out: Path, entries: list[dict[str, Any]]) -> None:
    """Replace the manifest with `entries`, atomically."""
    handle, temporary = tempfile.mkstemp(prefix=f".{MANIFEST}.", suffix=".tmp", dir=out)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.writelines(json.dumps(e, sort_keys=True) + "\n" for e in entries)
        os.chmod(temporary, 0o666 & ~current_umask())  # as open(path, "w") would, not mkstemp's 0600
        os.replace(temporary, out / MANIFEST)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def append_manifest(out: Path, entries: list[dict[str, Any]]) -> None:
    """Add `entries` at the end of the manifest (whole lines, flushed)."""
    with (out / MANIFEST).open("a", encoding="utf-8") as stream:
        stream.writelines(json.dumps(e, sort_keys=True) + "\n" for e in entries)
