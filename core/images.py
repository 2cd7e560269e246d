"""Images in and out: tensors ⇄ PIL, PNGs that carry their recipe, atomic writes, contact sheets."""

from __future__ import annotations

import functools
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, PngImagePlugin

from core.errors import InputError

RECIPE_KEY = "diffstack"


def to_pil(images: torch.Tensor) -> list[Image.Image]:
    """(B, 3, H, W) in [-1, 1] → B RGB images (values clamped, rounded to 8 bits)."""
    pixels = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)  # (B, 3, H, W)
    return [Image.fromarray(p.permute(1, 2, 0).numpy(), mode="RGB") for p in pixels]


def from_pil(images: list[Image.Image]) -> torch.Tensor:
    """B images of one size → (B, 3, H, W) float32 in [-1, 1]."""
    sizes = {image.size for image in images}
    if len(sizes) != 1:
        raise InputError(f"init images have different sizes {sorted(sizes)}", hint="resize them to one size")
    arrays = [np.asarray(image.convert("RGB"), dtype=np.float32) for image in images]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2) / 127.5 - 1.0


def contact_sheet(images: list[Image.Image], columns: int | None = None) -> Image.Image:
    """Images (of one size) tiled row by row into one picture, `columns` wide (default: near-square)."""
    columns = columns or math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / columns)
    width, height = images[0].size
    sheet = Image.new("RGB", (columns * width, rows * height), "white")
    for index, image in enumerate(images):
        sheet.paste(image, ((index % columns) * width, (index // columns) * height))
    return sheet


@functools.cache
def current_umask() -> int:
    """The process umask, read once (reading it means setting it, which is not thread-safe)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def save_png(image: Image.Image, path: Path, recipe: dict[str, Any] | None = None, *, overwrite: bool = False) -> Path:
    """Write `image` to `path` atomically (temp file + rename), the recipe as a JSON PNG text chunk.

    Refuses to replace an existing file unless `overwrite`. A failed write leaves nothing behind. The file gets
    the permissions a plain `open(path, "w")` would give (0666 less the umask), not the temp file's 0600.
    """
    if path.exists() and not overwrite:
        raise InputError(f"{path} already exists", hint="pass --overwrite, or choose another --out")
    info = PngImagePlugin.PngInfo()
    if recipe is not None:
        info.add_text(RECIPE_KEY, json.dumps(recipe, sort_keys=True))
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            image.save(stream, format="PNG", pnginfo=info)
        os.chmod(temporary, 0o666 & ~current_umask())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def read_recipe(path: Path) -> dict[str, Any]:
    """The recipe a diffstack PNG carries; InputError if the file is not one."""
    try:
        with Image.open(path) as image:
            text = image.text.get(RECIPE_KEY) if hasattr(image, "text") else None
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not a readable PNG ({exc})") from None
    if text is None:
        raise InputError(f"{path}: no diffstack recipe in this PNG", hint="use a PNG written by `diffstack generate`")
    try:
        recipe = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: the diffstack recipe is not valid JSON ({exc})") from None
    if not isinstance(recipe, dict):
        raise InputError(f"{path}: the diffstack recipe is not a JSON object")
    return recipe
