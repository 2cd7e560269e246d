"""The `shapes` data set: determinism, exact colours, sizes, jitter, the held-out rule, the analyser."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

import core
from core.errors import ConfigError
from plugins.shapes import render
from plugins.shapes.analyse import analyse

CAPTION = re.compile(r"^a (small|large) (\w+) (circle|square|triangle) on a (\w+) background$")


def scenes(n: int, split: str = "all", seed: int = 0) -> list[render.Scene]:
    return [render.sample_scene(np.random.default_rng([seed, i]), split) for i in range(n)]


def test_dataset_conforms_to_the_protocol() -> None:
    data = core.create("dataset", "shapes", length=5)
    assert isinstance(data, core.Dataset)
    assert len(data) == 5
    image, caption = data[4]
    assert image.shape == (3, 64, 64) and image.dtype == torch.float32
    assert -1.0 <= image.min() and image.max() <= 1.0
    assert CAPTION.match(caption)
    with pytest.raises(IndexError):
        data[5]
    with pytest.raises(ConfigError):
        core.create("dataset", "shapes", splt="train")
    with pytest.raises(ConfigError, match="heldout"):
        core.create("dataset", "shapes", split="test")


def test_same_seed_and_index_give_the_same_item() -> None:
    a, b = core.create("dataset", "shapes", seed=3), core.create("dataset", "shapes", seed=3)
    other = core.create("dataset", "shapes", seed=4)
    for i in (0, 7, 99):
        assert torch.equal(a[i][0], b[i][0]) and a[i][1] == b[i][1]
    assert any(not torch.equal(a[i][0], other[i][0]) for i in range(5))


def test_pixels_are_exactly_the_two_palette_colours() -> None:
    for scene in scenes(60):
        assert scene.color != scene.background
        colours = {tuple(p) for p in render.render(scene).reshape(-1, 3).tolist()}
        assert colours == {render.PALETTE[scene.color], render.PALETTE[scene.background]}
    assert render.PALETTE["red"] == (220, 40, 40) and render.PALETTE["black"] == (25, 25, 25)


@pytest.mark.parametrize("shape", render.SHAPES)
@pytest.mark.parametrize("size", list(render.SIZES))
def test_size_and_jitter(shape: str, size: str) -> None:
    for dx, dy in [(0.0, 0.0), (render.MAX_JITTER, -render.MAX_JITTER), (-render.MAX_JITTER, render.MAX_JITTER)]:
        mask = render.mask(render.Scene(size, "red", shape, "blue", dx, dy), 64)
        ys, xs = np.nonzero(mask)
        assert (
            abs((ys.max() - ys.min() + 1) - render.SIZES[size] * 64) <= 2
        )  # height ≈ size · side (apex: ≤ 2 px short)
        centre_x, centre_y = (xs.min() + xs.max() + 1) / 2, (ys.min() + ys.max() + 1) / 2
        assert abs(centre_x - 32 - dx * 64) <= 1.5 and abs(centre_y - 32 - dy * 64) <= 2
        assert 0 < ys.min() and ys.max() < 63 and 0 < xs.min() and xs.max() < 63  # never touches the border


def test_jitter_never_exceeds_eight_percent() -> None:
    offsets = np.array([(s.dx, s.dy) for s in scenes(500)])
    assert np.abs(offsets).max() <= render.MAX_JITTER
    assert np.abs(offsets).max() > 0.9 * render.MAX_JITTER  # and it is used


def test_heldout_rule_keeps_about_ten_percent_out_of_training() -> None:
    every, heldout, train = (render.combinations(split) for split in ("all", "heldout", "train"))
    assert len(every) == 8 * 3 * 7
    assert 0.08 <= len(heldout) / len(every) <= 0.12
    assert sorted(heldout + train) == sorted(every)
    for index, name in enumerate(("color", "shape", "background")):  # every value is still seen in training
        assert {combo[index] for combo in train} == set(render.SHAPES if name == "shape" else render.COLORS)
    assert not any(render.is_heldout(*s.combination) for s in scenes(300, "train"))
    assert all(render.is_heldout(*s.combination) for s in scenes(50, "heldout"))


def test_captions_name_the_scene() -> None:
    data = core.create("dataset", "shapes", split="all")
    for i in range(20):
        truth = data.attributes(i)
        assert (
            data[i][1] == f"a {truth['size']} {truth['color']} {truth['shape']} on a {truth['background']} background"
        )
        assert data.is_heldout(truth) == render.is_heldout(truth["color"], truth["shape"], truth["background"])


def test_analyser_reads_rendered_ground_truth() -> None:
    data = core.create("dataset", "shapes", split="all", seed=11)
    wrong = [i for i in range(400) if data.analyse(data[i][0]) != data.attributes(i)]
    assert not wrong, [(data[i][1], data.analyse(data[i][0])) for i in wrong[:3]]


def test_analyser_survives_noise_and_reports_an_empty_image() -> None:
    scene = render.Scene("large", "green", "triangle", "white", 0.05, -0.03)
    noisy = render.render(scene).astype(np.int16) + np.random.default_rng(0).integers(-20, 21, (64, 64, 3))
    assert analyse(noisy.clip(0, 255).astype(np.uint8)) == {
        "background": "white",
        "color": "green",
        "shape": "triangle",
        "size": "large",
    }
    blank = np.full((64, 64, 3), render.PALETTE["blue"], dtype=np.uint8)
    assert analyse(blank) == {"background": "blue", "color": "none", "shape": "none", "size": "none"}
