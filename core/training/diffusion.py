"""Training a latent denoiser — Ho et al. (2020), "Denoising Diffusion Probabilistic Models"; latent
diffusion of Rombach et al. (2022); caption dropout for classifier-free guidance of Ho & Salimans (2022).

    x0 ~ cached scaled latents (B, C, h, w)      from any Encoder, computed once (`cache_latents`)
    t ~ U{0, …, T−1},  ε ~ N(0, I),  x_t = √ᾱ_t·x0 + √(1−ᾱ_t)·ε      ᾱ from `core.schedules`
    c = context of the caption, or of "" with probability `caption_dropout` (the unconditional context)
    loss = ‖D(x_t, t, c) − target‖²,  target = ε | v = √ᾱ_t·ε − √(1−ᾱ_t)·x0 | x0, per `prediction_type`

Generic over the Denoiser interface; the text contexts are cached too (the text tower is frozen).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from core.interfaces import Dataset
from core.training.data import stack
from core.training.distributed import SINGLE, Shard


@torch.no_grad()
def cache_latents(
    encoder, dataset: Dataset, n: int, batch_size: int = 128, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, list[str]]:
    """Items 0..n-1 of `dataset` → (scaled latents (n, C, h, w) = encoder.encode(·, sample=False) on CPU,
    n captions)."""
    latents, captions = [], []
    for start in range(0, n, batch_size):
        images, batch_captions = stack(dataset, list(range(start, min(n, start + batch_size))))
        latents.append(encoder.encode(images.to(device), sample=False).float().cpu())
        captions += batch_captions
    return torch.cat(latents), captions


@torch.no_grad()
def cache_contexts(text, captions: list[str], batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Captions → (caption index per item (n,), contexts of the distinct captions (K, L, D), context of ""
    (L, D)), on CPU."""
    distinct = sorted(set(captions))
    index = {caption: i for i, caption in enumerate(distinct)}
    contexts = torch.cat(
        [text(distinct[i : i + batch_size]).float().cpu() for i in range(0, len(distinct), batch_size)]
    )
    return torch.tensor([index[c] for c in captions]), contexts, text([""])[0].float().cpu()


class DiffusionObjective:
    """Noise-prediction loss of `denoiser` on cached latents and contexts."""

    def __init__(
        self,
        denoiser: nn.Module,
        alphas_cumprod: torch.Tensor,
        latents: torch.Tensor,
        caption_index: torch.Tensor,
        contexts: torch.Tensor,
        uncond_context: torch.Tensor,
        *,
        caption_dropout: float = 0.1,
        device: torch.device | str = "cpu",
    ):
        self.module = denoiser
        self.device = torch.device(device)
        self.alphas_cumprod = alphas_cumprod.to(self.device)  # (T,)
        self.latents = latents.to(self.device)  # (N, C, h, w)
        self.caption_index = caption_index.to(self.device)  # (N,)
        self.contexts = contexts.to(self.device)  # (K, L, D)
        self.uncond_context = uncond_context.to(self.device)  # (L, D)
        self.caption_dropout = caption_dropout

    def loss(
        self, batch_size: int, generator: torch.Generator, shard: Shard = SINGLE
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The mean loss over this process's b rows of a batch of `batch_size` (all B rows alone), every row's
        items, timesteps, noise and caption dropout drawn from `generator` whatever the rows."""
        rows = shard.rows(batch_size)
        items = torch.randint(len(self.latents), (batch_size,), generator=generator)[rows].to(self.device)
        t = torch.randint(len(self.alphas_cumprod), (batch_size,), generator=generator)[rows].to(self.device)
        noise = torch.randn((batch_size, *self.latents.shape[1:]), generator=generator)[rows].to(self.device)
        drop = (torch.rand(batch_size, generator=generator) < self.caption_dropout)[rows].to(self.device)
        x0 = self.latents[items]  # (b, C, h, w)
        context = torch.where(
            drop[:, None, None], self.uncond_context, self.contexts[self.caption_index[items]]
        )  # (b, L, D)
        a = self.alphas_cumprod[t].sqrt()[:, None, None, None]
        s = (1 - self.alphas_cumprod[t]).sqrt()[:, None, None, None]
        prediction = self.module(a * x0 + s * noise, t, context)
        kind = self.module.prediction_type
        target = noise if kind == "epsilon" else a * noise - s * x0 if kind == "v_prediction" else x0
        return F.mse_loss(prediction.float(), target), {}
