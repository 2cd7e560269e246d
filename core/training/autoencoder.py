"""Training a KL-regularised autoencoder: reconstruction + β·KL — Kingma & Welling (2014), "Auto-Encoding
Variational Bayes"; Rombach et al. (2022), "High-Resolution Image Synthesis with Latent Diffusion Models".

    mean, logvar = posterior(x)                 (B, C, h, w) each
    z = mean + exp(logvar / 2)·ε                the reparameterised posterior sample
    x̂ = decode_unscaled(z)                      (B, 3, H, W)
    loss = ‖x̂ − x‖² (mean over pixels) + β · KL(N(mean, σ²) ‖ N(0, 1)) (mean over latent elements)

The autoencoder provides those two methods (`TrainableAutoencoder`; diffstack's `vae-kl` does), so nothing
here knows its modules; the unscaled posterior is what is trained, and `scaling_factor` is measured afterwards
(`latent_scale`) so that diffusion sees unit-variance latents.
"""

from __future__ import annotations

import math
from typing import Protocol, cast

import torch
import torch.nn.functional as F
from torch import nn

from core.interfaces import Dataset
from core.training.data import sample_batch
from core.training.distributed import SINGLE, Shard


def psnr(reconstruction: torch.Tensor, target: torch.Tensor) -> float:
    """Peak signal-to-noise ratio in dB of images in [-1, 1] (peak-to-peak 2, i.e. 1 on a [0, 1] scale)."""
    mse = F.mse_loss(reconstruction.clamp(-1, 1).float(), target.float()).item()
    return 10 * math.log10(4.0 / max(mse, 1e-12))


class TrainableAutoencoder(Protocol):
    """What an encoder plugin provides to be trained here (diffstack's `vae-kl` does)."""

    def posterior(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """images (B, 3, H, W) in [-1, 1] → (mean, logvar), each (B, C, H/f, W/f), unscaled."""
        ...

    def decode_unscaled(self, z: torch.Tensor) -> torch.Tensor:
        """Unscaled latents (B, C, h, w) → images (B, 3, h·f, w·f)."""
        ...

    def encoding_parameters(self) -> list[nn.Parameter]:
        """The parameters of the image → posterior half, frozen when only the decoder is fine-tuned."""
        ...


class KLAutoencoderObjective:
    """Reconstruction + β·KL on batches of `dataset` images (`sample=False`: reconstruct from the posterior mean)."""

    def __init__(
        self,
        autoencoder: nn.Module,
        dataset: Dataset,
        *,
        beta: float = 1e-4,
        sample: bool = True,
        device: torch.device | str = "cpu",
    ):
        self.module = autoencoder
        self.dataset = dataset
        self.beta = beta
        # False: decode the posterior mean (what a diffusion model trained on cached means produces)
        self.sample = sample
        self.device = torch.device(device)

    def posterior(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """images (B, 3, H, W) in [-1, 1] → (mean, logvar), each (B, C, H/f, W/f), unscaled."""
        return cast(TrainableAutoencoder, self.module).posterior(images)

    def reconstruct(self, z: torch.Tensor) -> torch.Tensor:
        """Unscaled latents (B, C, h, w) → images (B, 3, h·f, w·f)."""
        return cast(TrainableAutoencoder, self.module).decode_unscaled(z)

    def loss(
        self, batch_size: int, generator: torch.Generator, shard: Shard = SINGLE
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The loss over this process's b rows of a batch of `batch_size` (all B rows alone), every row's item and
        posterior noise drawn from `generator` whatever the rows; the metrics are those of the b rows."""
        rows = shard.rows(batch_size)
        images, _ = sample_batch(self.dataset, batch_size, generator, rows)
        images = images.to(self.device)  # (b, 3, H, W) in [-1, 1]
        mean, logvar = self.posterior(images)
        eps = torch.randn((batch_size, *mean.shape[1:]), generator=generator)[rows].to(self.device)
        reconstruction = self.reconstruct(mean + torch.exp(0.5 * logvar) * eps if self.sample else mean)
        mse = F.mse_loss(reconstruction, images)
        kl = 0.5 * (mean**2 + logvar.exp() - 1.0 - logvar).mean()
        return mse + self.beta * kl, {"mse": mse.item(), "kl": kl.item(), "psnr": psnr(reconstruction.detach(), images)}


@torch.no_grad()
def latent_scale(autoencoder: nn.Module, images: torch.Tensor) -> float:
    """1 / std of the posterior means of `images` (B, 3, H, W): the `scaling_factor` giving unit-variance latents."""
    objective = KLAutoencoderObjective(autoencoder, dataset=[])
    mean, _ = objective.posterior(images)
    return 1.0 / mean.float().std().item()
