"""Batches from any `Dataset`: indices drawn with the step's generator, images stacked, captions listed."""

from __future__ import annotations

import torch

from core.interfaces import Dataset


def sample_batch(
    dataset: Dataset, batch_size: int, generator: torch.Generator, rows: slice = slice(None)
) -> tuple[torch.Tensor, list[str]]:
    """`batch_size` random items, of which `rows` (b of them; default all) are loaded → (images (b, 3, H, W) in
    [-1, 1], b captions). The generator advances by the same draws whatever `rows` is."""
    indices = torch.randint(len(dataset), (batch_size,), generator=generator)[rows].tolist()
    return stack(dataset, indices)


def stack(dataset: Dataset, indices: list[int]) -> tuple[torch.Tensor, list[str]]:
    """The items at `indices` → (images (B, 3, H, W) in [-1, 1], B captions)."""
    items = [dataset[i] for i in indices]
    return torch.stack([image for image, _ in items]), [caption for _, caption in items]
