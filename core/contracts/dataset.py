"""Contract suite for `core.Dataset`: image–caption pairs, in range, deterministic by index."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from core.contracts.base import Contract, assert_equal, expect_raises


class DatasetContract(Contract):
    """Checks for a `core.Dataset`. `indices` are the items inspected (taken modulo the length)."""

    kind = "dataset"
    indices: ClassVar[tuple[int, ...]] = (0, 1, 7, 100)

    def items(self, component: Any) -> list[int]:
        return sorted({i % len(component) for i in self.indices})

    def test_has_items(self, component: Any) -> None:
        """len(dataset) is an int > 0."""
        size = len(component)
        assert isinstance(size, int) and size > 0, f"len(dataset) is {size!r}, expected a positive int"

    def test_items_are_images_in_range_with_captions(self, component: Any) -> None:
        """dataset[i] is (image, caption): a float (3, H, W) tensor in [-1, 1] and a non-blank str; one shape for all.
        Checked at `indices` modulo len; scale 8-bit pixels as p / 127.5 − 1."""
        shapes = set()
        for index in self.items(component):
            image, caption = component[index]
            assert isinstance(image, torch.Tensor) and image.is_floating_point(), (
                f"item {index}: image is {type(image).__name__}, expected a floating tensor"
            )
            assert image.ndim == 3 and image.shape[0] == 3, (
                f"item {index}: image shape {tuple(image.shape)}, expected (3, H, W)"
            )
            low, high = image.min().item(), image.max().item()
            assert -1.0 <= low and high <= 1.0, f"item {index}: values in [{low:.3g}, {high:.3g}], expected [-1, 1]"
            assert isinstance(caption, str) and caption.strip(), f"item {index}: caption {caption!r}, expected text"
            shapes.add(tuple(image.shape))
        assert len(shapes) == 1, f"images of one dataset differ in shape: {sorted(shapes)}"

    def test_same_index_same_item(self, component: Any) -> None:
        """Reading the same index twice gives a bitwise-equal image and the same caption.
        Derive any random augmentation or caption choice from the index, not from the global RNG."""
        for index in self.items(component):
            (first, caption), (again, caption_again) = component[index], component[index]
            assert_equal(again, first, f"item {index} read twice")
            assert caption == caption_again, f"item {index}: caption {caption!r} then {caption_again!r}"

    def test_index_past_the_end_is_an_index_error(self, component: Any) -> None:
        """dataset[len(dataset)] raises IndexError.
        Do not wrap indices around (index % len)."""
        with expect_raises(IndexError, f"dataset[{len(component)}]"):
            component[len(component)]
