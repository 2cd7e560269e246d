"""`sdxl-text`: SDXL's text conditioner, two CLIP text towers — Podell et al. (2023), "SDXL: Improving Latent
Diffusion Models for High-Resolution Image Synthesis", §2.1.

    prompts ─ text_encoder   (CLIP ViT-L/14, D1 = 768)      ─ penultimate hidden state (B, 77, D1) ─┐ concat
            ─ text_encoder_2 (OpenCLIP ViT-bigG/14, D2 = 1280) ─ penultimate hidden state (B, 77, D2) ─┴→ context
                                                              └ final norm, EOS token, projection → pooled (B, P)

The context is (B, 77, D1 + D2) = (B, 77, 2048) and `pooled` (B, P = 1280) goes to the U-Net as an added input
(`core.conditioning`). Each tower is a `clip-text` with its own tokenizer (the second pads with "!", as
OpenCLIP does); the hidden states are taken without the final layer norm, as SDXL was trained.

With `zeros_for_empty_prompt` (SDXL base's `force_zeros_for_empty_prompt`), an empty prompt's context and pooled
embedding are zeros. diffusers does this for a negative prompt left unset; diffstack's default negative prompt
is the empty string, so the two agree by default, and an empty prompt is zeros wherever it appears.

Weights: a diffusers folder's `text_encoder/` + `tokenizer/` and `text_encoder_2/` + `tokenizer_2/`, or an
original SDXL single file (`conditioner.embedders.0.transformer.*` in transformers' names,
`conditioner.embedders.1.model.*` in OpenCLIP's), through a `CheckpointLayout` with one part per tower.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, model_validator
from torch import nn

from core import CheckpointLayout, ComponentSpec, Conditioning, InputError, hookimpl
from plugins import clip_text, single_file
from plugins.clip_text.checkpoint import CHECKPOINT_LAYOUT as CLIP_LAYOUT
from plugins.clip_text.checkpoint import hf_names, openclip_names


class ViTL(clip_text.Config):
    """The first tower: CLIP ViT-L/14's text transformer (clip-text's defaults), read at its penultimate layer."""

    clip_skip: int = 2
    final_layer_norm: bool = False


class ViTBigG(clip_text.Config):
    """The second tower: OpenCLIP ViT-bigG/14's text transformer with its projection, read at its penultimate
    layer; pooled from the last."""

    hidden_size: int = 1280
    intermediate_size: int = 5120
    num_hidden_layers: int = 32
    num_attention_heads: int = 20
    hidden_act: Literal["quick_gelu", "gelu"] = "gelu"
    projection_dim: int | None = 1280
    pad_token: str | None = "!"
    clip_skip: int = 2
    final_layer_norm: bool = False


class Config(BaseModel):
    """The two towers (defaults: SDXL 1.0 base's) and the empty-prompt rule."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    text_encoder: ViTL = ViTL()
    text_encoder_2: ViTBigG = ViTBigG()
    zeros_for_empty_prompt: bool = True

    @model_validator(mode="after")
    def _towers_fit(self) -> Config:
        if self.text_encoder.max_length != self.text_encoder_2.max_length:
            raise ValueError(
                f"the towers' max_length differ ({self.text_encoder.max_length} and "
                f"{self.text_encoder_2.max_length}); their hidden states are concatenated token by token"
            )
        if self.text_encoder_2.projection_dim is None:
            raise ValueError("text_encoder_2 needs a projection_dim: its projected EOS token is the pooled embedding")
        return self


class SDXLText(nn.Module):
    """A TextConditioner: `text(prompts)` → `Conditioning(context (B, L, D1 + D2), {"pooled": (B, P)})`."""

    def __init__(self, config: Config) -> None:
        super().__init__()
        self.config = config
        self.text_encoder = clip_text.CLIPText(config.text_encoder)
        self.text_encoder_2 = clip_text.CLIPText(config.text_encoder_2)
        self.max_length = config.text_encoder.max_length
        self.embedding_dim = config.text_encoder.hidden_size + config.text_encoder_2.hidden_size
        self.added_outputs = {"pooled": (int(config.text_encoder_2.projection_dim or 0),)}

    def forward(self, prompts: list[str]) -> Conditioning:
        if not isinstance(prompts, (list, tuple)) or not all(isinstance(p, str) for p in prompts):
            raise InputError(
                f"sdxl-text expects a list of prompt strings, got {type(prompts).__name__}",
                hint='wrap a single prompt in a list: text(["a red circle"])',
            )
        first, _ = self.text_encoder.encode(list(prompts))  # (B, L, D1)
        second, pooled = self.text_encoder_2.encode(list(prompts))  # (B, L, D2), (B, P)
        assert pooled is not None  # the config requires text_encoder_2's projection
        context = torch.cat([first, second], dim=-1)  # (B, L, D1 + D2)
        if self.config.zeros_for_empty_prompt:
            kept = torch.tensor([p != "" for p in prompts], device=context.device)
            context = context * kept[:, None, None].to(context.dtype)
            pooled = pooled * kept[:, None].to(pooled.dtype)
        return Conditioning(context, {"pooled": pooled})


CHECKPOINT_LAYOUT = CheckpointLayout(
    parts={
        "text_encoder": dataclasses.replace(
            CLIP_LAYOUT,
            single_file_prefix="conditioner.embedders.0.transformer.",
            single_file_family=single_file.FAMILY,
            single_file_lookalikes={},
            single_file_names=hf_names,
        ),
        "text_encoder_2": dataclasses.replace(
            CLIP_LAYOUT,
            diffusers_subfolder="text_encoder_2",
            single_file_prefix="conditioner.embedders.1.model.",
            single_file_family=single_file.FAMILY,
            single_file_lookalikes={},
            single_file_names=openclip_names,
        ),
    }
)

TINY_TOWER = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4}
SPEC = ComponentSpec(
    kind="text",
    name="sdxl-text",
    factory=SDXLText,
    config=Config,
    example_config={"text_encoder": TINY_TOWER, "text_encoder_2": {**TINY_TOWER, "projection_dim": 16}},
    description="SDXL's two CLIP text towers: concatenated penultimate states + pooled embedding",
    checkpoint_layout=CHECKPOINT_LAYOUT,
)


@hookimpl
def diffstack_components() -> list[ComponentSpec]:
    return [SPEC]
