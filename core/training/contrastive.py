"""Contrastive language–image pre-training (InfoNCE with a learned temperature) — Radford et al. (2021),
"Learning Transferable Visual Models From Natural Language Supervision"; InfoNCE of van den Oord et al. (2018).

    text  = normalize(W_t · mean_L TextConditioner(captions))     (B, E)   any TextConditioner, pooled over tokens
    image = normalize(ImageTower(images))                         (B, E)   a small CNN, used only here
    logits = exp(s) · image · textᵀ                               (B, B)   s learned, init log(1/0.07), ≤ log 100
    loss = ½ [CE(logits, T) + CE(logitsᵀ, T)]                     T: rows of the same-caption matrix, normalised

Targets treat every pair with the *same caption* as a positive (a small caption set repeats within a batch).
Data-parallel, each process embeds its rows and all-gathers the embeddings (with their gradients), so the
(B, B) logits and the loss are the single-process ones, computed in every process.
Mean pooling over all L positions replaces CLIP's EOS pooling so that any TextConditioner can be trained;
with a causal text tower the positions after EOS see the whole caption.
"""

from __future__ import annotations

import math
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from core.interfaces import Dataset, TextConditioner
from core.training.data import sample_batch
from core.training.distributed import SINGLE, Shard


class ImageTower(nn.Module):
    """(B, 3, H, W) in [-1, 1] → (B, embed_dim): four stride-2 conv + SiLU stages, global average pool, linear."""

    def __init__(self, embed_dim: int, widths: tuple[int, ...] = (32, 64, 128, 128)):
        super().__init__()
        layers: list[nn.Module] = []
        previous = 3
        for width in widths:
            layers += [nn.Conv2d(previous, width, 3, stride=2, padding=1), nn.GroupNorm(8, width), nn.SiLU()]
            previous = width
        self.features = nn.Sequential(*layers)
        self.proj = nn.Linear(previous, embed_dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.proj(self.features(images).mean(dim=(2, 3)))  # (B, E)


class CLIPPair(nn.Module):
    """The trained parts: the text conditioner, its projection, the image tower and the temperature."""

    def __init__(self, text: nn.Module, embedding_dim: int, embed_dim: int):
        super().__init__()
        self.text = text
        self.text_projection = nn.Linear(embedding_dim, embed_dim, bias=False)
        self.image = ImageTower(embed_dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))


class ContrastiveObjective:
    """InfoNCE between captions and images of `dataset`."""

    def __init__(self, text: nn.Module, dataset: Dataset, *, embed_dim: int = 64, device: torch.device | str = "cpu"):
        self.pair = CLIPPair(text, cast(TextConditioner, text).embedding_dim, embed_dim).to(device)
        self.module: nn.Module = self.pair  # what the loop trains and checkpoints
        self.dataset = dataset
        self.device = torch.device(device)

    def embed(self, images: torch.Tensor, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """→ (image embeddings (B, E), text embeddings (B, E)), both unit-norm."""
        pooled = self.pair.text(captions).mean(dim=1)  # (B, D)
        text = F.normalize(self.pair.text_projection(pooled), dim=-1)
        image = F.normalize(self.pair.image(images), dim=-1)
        return image, text

    def loss(
        self, batch_size: int, generator: torch.Generator, shard: Shard = SINGLE
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The whole batch's loss, in every process: each embeds its rows, and the logits are those of every
        process's embeddings (`shard.gather`, differentiable), so data-parallel training is exact."""
        images, captions = sample_batch(self.dataset, batch_size, generator, shard.rows(batch_size))
        image, text = (shard.gather(embedding) for embedding in self.embed(images.to(self.device), captions))
        captions = shard.gather_list(captions)  # the B captions, in row order
        scale = self.pair.logit_scale.clamp(max=math.log(100.0)).exp()
        logits = scale * image @ text.T  # (B, B)
        same = torch.tensor([[a == b for b in captions] for a in captions], dtype=logits.dtype, device=self.device)
        targets = same / same.sum(dim=1, keepdim=True)
        loss = 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets))
        accuracy = (same.gather(1, logits.argmax(dim=1, keepdim=True)) > 0).float().mean()
        return loss, {"accuracy": accuracy.item(), "temperature": 1.0 / scale.item()}
