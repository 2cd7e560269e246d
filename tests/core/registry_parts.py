"""Minimal parts for registry tests: the registry only needs kinds, configs, shapes and parameters, and each
part has its interface's members (the registry checks them when it builds a part).

Loaded by registry files through `plugins: [registry_parts]` (a module next to the registry file).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from core import ComponentSpec, hookimpl
from plugins import ddim, guided

BUILT: list[str] = []


class EncoderConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    latent_channels: int = Field(4, ge=1)


class DenoiserConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    in_channels: int = Field(4, ge=1)
    context_dim: int = Field(8, ge=1)


class TextConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    embedding_dim: int = Field(8, ge=1)


class Encoder(nn.Module):
    downsample_factor = 8
    scaling_factor = 1.0

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        BUILT.append("encoder")
        self.latent_channels = config.latent_channels
        self.proj = nn.Linear(3, config.latent_channels)

    def encode(self, images: torch.Tensor, *, generator: object = None, sample: bool = True) -> torch.Tensor:
        """(B, 3, H, W) → (B, C, H/8, W/8): 8×8 means, projected."""
        return self.proj(F.avg_pool2d(images, 8).movedim(1, -1)).movedim(-1, 1)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) → (B, 3, 8h, 8w) in [-1, 1]: the channel mean, upsampled."""
        return torch.tanh(F.interpolate(latents.mean(1, keepdim=True), scale_factor=8)).expand(-1, 3, -1, -1)


class Denoiser(nn.Module):
    prediction_type = "epsilon"

    def __init__(self, config: DenoiserConfig) -> None:
        super().__init__()
        BUILT.append("denoiser")
        self.in_channels, self.context_dim = config.in_channels, config.context_dim
        self.proj = nn.Linear(config.in_channels, config.in_channels)


class Text(nn.Module):
    max_length = 4

    def __init__(self, config: TextConfig) -> None:
        super().__init__()
        BUILT.append("text")
        self.embedding_dim = config.embedding_dim
        self.table = nn.Embedding(16, config.embedding_dim)


class Scheduler(ddim.DDIM):
    def __init__(self, config: ddim.Config) -> None:
        BUILT.append("plain")
        super().__init__(config)


class Sampler(guided.GuidedSampler):
    def __init__(self, config: guided.Config) -> None:
        BUILT.append("plain")
        super().__init__(config)


@hookimpl
def diffstack_components() -> list[ComponentSpec]:
    return [
        ComponentSpec(kind="encoder", name="part-encoder", factory=Encoder, config=EncoderConfig),
        ComponentSpec(kind="denoiser", name="part-denoiser", factory=Denoiser, config=DenoiserConfig),
        ComponentSpec(kind="text", name="part-text", factory=Text, config=TextConfig),
        ComponentSpec(kind="scheduler", name="part-scheduler", factory=Scheduler, config=ddim.Config),
        ComponentSpec(kind="sampler", name="part-sampler", factory=Sampler, config=guided.Config),
    ]
