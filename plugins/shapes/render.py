"""The `shapes` world: a deterministic, seeded renderer of 64×64 captioned images of one flat shape.

    caption  "a {size} {color} {shape} on a {background} background"
    shape    circle | square | triangle (upright, isosceles, base = height = size), no anti-aliasing
    size     small ≈ 35 % of the side, large ≈ 70 %; centre jittered by at most ±8 % of the side per axis
    colours  the eight exact RGB values of `PALETTE`; shape colour ≠ background colour

Of the 8 · 3 · 7 = 168 (colour, shape, background) combinations, the fixed rule `is_heldout` keeps 17
(≈ 10 %) out of the training split, to measure compositional generalisation: each held-out combination's
colour, shape and background are all seen in training, only not together.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np

PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "orange": (245, 140, 30),
    "yellow": (240, 220, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "purple": (140, 60, 190),
    "white": (240, 240, 240),
    "black": (25, 25, 25),
}
COLORS: tuple[str, ...] = tuple(PALETTE)
Shape = Literal["circle", "square", "triangle"]
SHAPES: tuple[str, ...] = get_args(Shape)
SIZES: dict[str, float] = {"small": 0.35, "large": 0.70}  # shape extent as a fraction of the image side
MAX_JITTER = 0.08  # largest centre offset per axis, as a fraction of the image side
Split = Literal["train", "heldout", "all"]
SPLITS: tuple[str, ...] = get_args(Split)


@dataclass(frozen=True)
class Scene:
    """One image's content. `dx`, `dy`: centre offset in fractions of the side, each in [-MAX_JITTER, MAX_JITTER]."""

    size: str
    color: str
    shape: str
    background: str
    dx: float = 0.0
    dy: float = 0.0

    @property
    def caption(self) -> str:
        return f"a {self.size} {self.color} {self.shape} on a {self.background} background"

    @property
    def combination(self) -> tuple[str, str, str]:
        return self.color, self.shape, self.background


def is_heldout(color: str, shape: str, background: str) -> bool:
    """The fixed held-out rule: (colour index + 2·shape index + 6·background index) mod 10 = 0 (17 of 168)."""
    return (COLORS.index(color) + 2 * SHAPES.index(shape) + 6 * COLORS.index(background)) % 10 == 0


def combinations(split: Split) -> list[tuple[str, str, str]]:
    """The (colour, shape, background) triples of a split, in a fixed order."""
    every = [(c, s, b) for c in COLORS for s in SHAPES for b in COLORS if b != c]
    if split == "all":
        return every
    return [combo for combo in every if is_heldout(*combo) == (split == "heldout")]


def sample_scene(rng: np.random.Generator, split: Split) -> Scene:
    """A uniformly drawn combination of `split`, size and jitter."""
    allowed = combinations(split)
    color, shape, background = allowed[rng.integers(len(allowed))]
    size = tuple(SIZES)[rng.integers(len(SIZES))]
    dx, dy = rng.uniform(-MAX_JITTER, MAX_JITTER, size=2)
    return Scene(size, color, shape, background, float(dx), float(dy))


def mask(scene: Scene, side: int) -> np.ndarray:
    """(side, side) bool: the pixels whose centres lie inside the shape."""
    extent = SIZES[scene.size] * side
    cx, cy = side / 2 + scene.dx * side, side / 2 + scene.dy * side
    y, x = np.mgrid[0:side, 0:side] + 0.5  # pixel centres
    half = extent / 2
    if scene.shape == "circle":
        return (x - cx) ** 2 + (y - cy) ** 2 <= half**2
    if scene.shape == "square":
        return (np.abs(x - cx) <= half) & (np.abs(y - cy) <= half)
    top = cy - half  # upright triangle: apex at the top centre, base at the bottom
    return (y >= top) & (y <= cy + half) & (np.abs(x - cx) <= (y - top) / 2)


def render(scene: Scene, side: int = 64) -> np.ndarray:
    """(side, side, 3) uint8 RGB image of the scene."""
    image = np.empty((side, side, 3), dtype=np.uint8)
    image[:] = PALETTE[scene.background]
    image[mask(scene, side)] = PALETTE[scene.color]
    return image
