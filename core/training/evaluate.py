"""Evaluation of a text-to-image model on a data set whose pixels can be read back (e.g. `shapes`):
attribute accuracy of generated images, for seen and held-out combinations, and labelled image grids.

The data set must offer, besides the `Dataset` protocol, `attributes(i) -> {name: value}` (the truth of
item i) and `analyse(image (3, H, W) in [-1, 1]) -> {name: value}` (what the pixels show). `generate` is
any text-to-image callable: `generate(prompts, seed) -> (B, 3, H, W)` in [-1, 1], image j drawn with seed + j —
`lambda prompts, seed: pipe(prompts, seed=seed).pixels` is one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from PIL import Image, ImageDraw

Generate = Callable[[list[str], int], torch.Tensor]
JOINT = ("background", "color", "shape")  # "all three" = these three attributes right at once
GROUPS = (("seen", "train"), ("held-out", "heldout"))
"""The caption groups an evaluation reports, with the data-set split each is drawn from."""


def group_sizes(n: int) -> dict[str, int]:
    """n captions split as evaluations do: 3/4 seen combinations, 1/4 held out."""
    return {"seen": n - n // 4, "held-out": n // 4}


def right_on(seen: dict[str, str], truth: dict[str, str]) -> dict[str, bool]:
    """Per attribute, whether the analysed image shows the truth; plus "all three" (the `JOINT` ones at once)."""
    return {**{name: seen[name] == truth[name] for name in truth}, "all three": all(seen[n] == truth[n] for n in JOINT)}


def attribute_accuracy(
    generate: Generate, dataset: Any, n: int, *, seed: int = 0, batch_size: int = 50
) -> dict[str, float]:
    """Generate items 0..n-1's captions (item i with seed + i) → {attribute: fraction right, "all three": …}."""
    truth = [dataset.attributes(i) for i in range(n)]
    names = list(truth[0])
    right = {name: 0 for name in [*names, "all three"]}
    for start in range(0, n, batch_size):
        indices = list(range(start, min(n, start + batch_size)))
        images = generate([dataset[i][1] for i in indices], seed + start)  # (B, 3, H, W) in [-1, 1]
        for i, image in zip(indices, images, strict=True):
            for name, ok in right_on(dataset.analyse(image), truth[i]).items():
                right[name] += ok
    return {name: count / n for name, count in right.items()}


def labelled_grid(
    images: torch.Tensor, labels: list[str], columns: int, *, label_width: int = 270, gap: int = 2
) -> Image.Image:
    """images (R·columns, 3, H, W) in [-1, 1], row-major, and R row labels → one RGB sheet, labels on the left."""
    rows = len(labels)
    _, _, height, width = images.shape
    pixels = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    sheet = Image.new("RGB", (label_width + columns * (width + gap), rows * (height + gap)), "white")
    draw = ImageDraw.Draw(sheet)
    for r, label in enumerate(labels):
        draw.text((4, r * (height + gap) + height // 2 - 6), label, fill="black")
        for c in range(columns):
            tile = Image.fromarray(pixels[r * columns + c])
            sheet.paste(tile, (label_width + c * (width + gap), r * (height + gap)))
    return sheet
