"""`shapes`: the data set `shapes-tiny` is trained and evaluated on — one flat shape per 64×64 image, with
its caption, rendered deterministically from (seed, index). See `render` for the world and its held-out
rule, `analyse` for the pixel analyser that evaluation scores generated images with.

    dataset[i] → (image (3, H, W) float32 in [-1, 1], "a {size} {color} {shape} on a {background} background")

Besides the `Dataset` protocol the component offers what attribute evaluation needs: `attributes(i)` (the
ground truth of item i), `analyse(image)` (what the pixels show), and `is_heldout(attributes)`.
"""

from __future__ import annotations

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from core import ComponentSpec, InputError, hookimpl
from plugins.shapes import analyse as analyser
from plugins.shapes import render

ATTRIBUTES: tuple[str, ...] = ("background", "color", "shape", "size")


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    split: render.Split = Field(
        "train", description="train: the ~90 % seen combinations; heldout: the ~10 % held out; all: both"
    )
    seed: int = Field(0, ge=0, description="item i is drawn from a generator seeded with (seed, i)")
    length: int = Field(100_000, ge=1, description="number of items")
    image_size: int = Field(64, ge=16, description="image side in pixels")


class ShapesDataset:
    """Deterministic image–caption pairs; the same (config, index) always gives the same pair."""

    def __init__(self, config: Config) -> None:
        self.config = config

    def __len__(self) -> int:
        return self.config.length

    def scene(self, index: int) -> render.Scene:
        if not 0 <= index < self.config.length:
            raise IndexError(f"shapes: index {index} out of range for a data set of {self.config.length} items")
        return render.sample_scene(np.random.default_rng([self.config.seed, index]), self.config.split)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str]:
        scene = self.scene(index)
        pixels = torch.from_numpy(render.render(scene, self.config.image_size))  # (H, W, 3) uint8
        return pixels.permute(2, 0, 1).float() / 127.5 - 1.0, scene.caption  # (3, H, W) in [-1, 1]

    def attributes(self, index: int) -> dict[str, str]:
        """Ground truth of item `index`: {"background", "color", "shape", "size"}."""
        scene = self.scene(index)
        return {name: getattr(scene, name) for name in ATTRIBUTES}

    @staticmethod
    def is_heldout(attributes: dict[str, str]) -> bool:
        """Whether the attributes' (colour, shape, background) combination is kept out of training."""
        return render.is_heldout(attributes["color"], attributes["shape"], attributes["background"])

    @staticmethod
    def analyse(image: torch.Tensor) -> dict[str, str]:
        """(3, H, W) image in [-1, 1] → the attributes its pixels show (see `plugins.shapes.analyse`)."""
        if image.ndim != 3 or image.shape[0] != 3:
            raise InputError(f"shapes: analyse expects one (3, H, W) image, got shape {tuple(image.shape)}")
        pixels = ((image.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        return analyser.analyse(pixels.permute(1, 2, 0).cpu().numpy())


@hookimpl
def diffstack_components():
    return [
        ComponentSpec(
            kind="dataset",
            name="shapes",
            factory=ShapesDataset,
            config=Config,
            example_config={"length": 64},
            description="captioned 64×64 flat shapes (the data set of shapes-tiny), with a pixel analyser",
        )
    ]
