"""Minimal parts for registry tests: the registry only needs kinds, configs, shapes and parameters.

Loaded by registry files through `plugins: [registry_parts]` (a module next to the registry file).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from core import ComponentSpec, hookimpl

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


class PlainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    eta: float = 0.0


class Encoder(nn.Module):
    downsample_factor = 8
    scaling_factor = 1.0

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        BUILT.append("encoder")
        self.latent_channels = config.latent_channels
        self.proj = nn.Linear(3, config.latent_channels)


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


class Plain:
    def __init__(self, config: PlainConfig) -> None:
        BUILT.append("plain")
        self.config = config


@hookimpl
def diffstack_components() -> list[ComponentSpec]:
    return [
        ComponentSpec(kind="encoder", name="part-encoder", factory=Encoder, config=EncoderConfig),
        ComponentSpec(kind="denoiser", name="part-denoiser", factory=Denoiser, config=DenoiserConfig),
        ComponentSpec(kind="text", name="part-text", factory=Text, config=TextConfig),
        ComponentSpec(kind="scheduler", name="part-scheduler", factory=Plain, config=PlainConfig),
        ComponentSpec(kind="sampler", name="part-sampler", factory=Plain, config=PlainConfig),
    ]
