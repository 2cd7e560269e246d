"""A deterministic pixel analyser for `shapes` images: reads back background, colour, shape and size.

    background  the palette colour nearest to the median of the border pixels
    foreground  pixels whose nearest palette colour is not the background's and that lie > 60 (RGB
                distance) from the background colour
    color       the most frequent nearest-palette colour among the foreground pixels
    shape       fill ratio of the foreground's bounding box (1st–99th percentile of its coordinates):
                square ≈ 1, circle ≈ π/4 ≈ 0.79, triangle ≈ 1/2
    size        the bounding box's longer side over the image side: small ≈ 0.35, large ≈ 0.70

An image with fewer than `MIN_PIXELS` foreground pixels reads as color, shape and size "none".
"""

from __future__ import annotations

import numpy as np

from plugins.shapes.render import COLORS, PALETTE

PALETTE_RGB = np.array([PALETTE[c] for c in COLORS], dtype=np.float32)  # (8, 3)
FOREGROUND_DISTANCE = 60.0
MIN_PIXELS = 20
SQUARE_FILL, CIRCLE_FILL = 0.9, 0.64  # fill-ratio thresholds: above SQUARE_FILL square, above CIRCLE_FILL circle
LARGE_EXTENT = 0.525  # longer bounding-box side / image side above which a shape reads as large


def nearest_palette(pixels: np.ndarray) -> np.ndarray:
    """(..., 3) RGB → (...,) index into `COLORS` of the nearest palette colour (Euclidean RGB)."""
    distance = ((pixels[..., None, :].astype(np.float32) - PALETTE_RGB) ** 2).sum(-1)  # (..., 8)
    return distance.argmin(-1)


def analyse(image: np.ndarray) -> dict[str, str]:
    """(H, W, 3) uint8 RGB → {"background", "color", "shape", "size"}, each a caption word or "none"."""
    side = max(image.shape[:2])
    border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])  # (4·side, 3)
    background = int(nearest_palette(np.median(border, axis=0)))
    labels = nearest_palette(image)  # (H, W)
    far = np.sqrt(((image.astype(np.float32) - PALETTE_RGB[background]) ** 2).sum(-1)) > FOREGROUND_DISTANCE
    foreground = (labels != background) & far
    result = {"background": COLORS[background], "color": "none", "shape": "none", "size": "none"}
    if foreground.sum() < MIN_PIXELS:
        return result
    result["color"] = COLORS[int(np.bincount(labels[foreground], minlength=len(COLORS)).argmax())]
    ys, xs = np.nonzero(foreground)
    y0, y1 = np.percentile(ys, [1, 99])
    x0, x1 = np.percentile(xs, [1, 99])
    height, width = y1 - y0 + 1, x1 - x0 + 1
    inside = (ys >= y0) & (ys <= y1) & (xs >= x0) & (xs <= x1)
    fill = inside.sum() / (height * width)
    result["shape"] = "square" if fill > SQUARE_FILL else "circle" if fill > CIRCLE_FILL else "triangle"
    result["size"] = "large" if max(height, width) / side > LARGE_EXTENT else "small"
    return result
