"""`clip-text`: the CLIP text conditioner of Stable Diffusion — Radford et al. (2021), "Learning Transferable
Visual Models From Natural Language Supervision".

    prompts (B strings) → CLIP BPE tokenizer → ids (B, L) → CLIP text transformer
        → context (B, L, D): the hidden state clip_skip layers from the end, final-normed if final_layer_norm
        → pooled (B, P), with projection_dim P: text_projection(final_layer_norm(last layer)[first EOS])
    L = max_length (77), D = hidden_size.

`text(prompts)` returns the context alone, or with `projection_dim` set a `core.Conditioning(context,
{"pooled": pooled})` (`added_outputs` says which); `text.encode(prompts)` always gives (context, pooled or
None). Defaults are SD 1.x's text tower, OpenAI's CLIP ViT-L/14 (D = 768, 12 layers, 12 heads, quick-GELU),
with OpenAI's vocabulary shipped in `vocab/`. SD 2.x: OpenCLIP ViT-H/14 (D = 1024, gelu, pad "!", penultimate
layer then the final norm); SDXL: ViT-L/14 and OpenCLIP ViT-bigG/14 (projection_dim 1280), both penultimate
without the final norm (clip_skip 2, final_layer_norm false). Config names are transformers' `CLIPTextConfig`
names, so a diffusers `text_encoder/config.json` maps onto them (`checkpoint.py`: diffusers folders, SD 1.x and
SD 2.x single files, and the name tables an SDXL layout reuses); `clip_skip` follows the community convention
(1 = last layer, 2 = penultimate), i.e. diffusers' `clip_skip` + 1.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from core import ComponentSpec, Conditioning, ConfigError, InputError, hookimpl
from plugins.clip_text.checkpoint import CHECKPOINT_LAYOUT
from plugins.clip_text.model import CLIPTextTransformer
from plugins.clip_text.tokenizer import CLIPTokenizer


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    vocab_size: int = Field(49408, ge=1, description="rows of the token embedding; must cover the tokenizer's ids")
    hidden_size: int = Field(768, ge=1, description="embedding width D")
    intermediate_size: int = Field(3072, ge=1, description="width of the feed-forward hidden layer")
    num_hidden_layers: int = Field(12, ge=1)
    num_attention_heads: int = Field(12, ge=1)
    max_position_embeddings: int = Field(77, ge=2, description="rows of the position embedding")
    hidden_act: Literal["quick_gelu", "gelu"] = "quick_gelu"
    layer_norm_eps: float = Field(1e-5, gt=0)
    projection_dim: int | None = Field(
        None,
        ge=1,
        description="width P of the pooled embedding (transformers' CLIPTextModelWithProjection, SDXL's 2nd "
        "text encoder); None = no projection and no pooled output",
    )
    clip_skip: int = Field(
        1, ge=1, description="take the hidden state of the k-th layer from the end (1 = last) as the context"
    )
    final_layer_norm: bool = Field(
        True, description="pass the context through the final layer norm (SDXL: false, on the penultimate layer)"
    )
    max_length: int = Field(77, ge=2, description="tokens per prompt including BOS and EOS")
    tokenizer: Path | None = Field(
        None,
        description="a diffusers tokenizer/ folder (vocab.json + merges.txt), a folder containing one, or a "
        "bpe_simple_vocab_16e6.txt.gz; None = the bundled OpenAI CLIP vocabulary",
    )
    pad_token: str | None = Field(
        None,
        description='the token prompts are padded with ("!" for OpenCLIP-trained towers: SD 2.x, SDXL\'s 2nd); '
        "None = the tokenizer folder's, else EOS",
    )

    @model_validator(mode="after")
    def _consistent(self) -> Config:
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not divisible by num_attention_heads {self.num_attention_heads}"
            )
        if self.clip_skip > self.num_hidden_layers:
            raise ValueError(f"clip_skip {self.clip_skip} exceeds num_hidden_layers {self.num_hidden_layers}")
        if self.max_length > self.max_position_embeddings:
            raise ValueError(
                f"max_length {self.max_length} exceeds max_position_embeddings {self.max_position_embeddings}"
            )
        return self


class CLIPText(nn.Module):
    """A TextConditioner: `text(prompts)` → context (B, max_length, embedding_dim), or with `projection_dim` a
    `core.Conditioning` adding `pooled` (B, projection_dim); in the module's dtype and device.

    State-dict keys are transformers' `CLIPTextModel` keys (`text_model.…`), plus `text_projection.weight`
    (P, D) as in `CLIPTextModelWithProjection`; the tokenizer is built once, here.
    """

    def __init__(self, config: Config) -> None:
        super().__init__()
        self.config = config
        self.max_length = config.max_length
        self.embedding_dim = config.hidden_size
        self.added_outputs: dict[str, tuple[int, ...]] = (
            {} if config.projection_dim is None else {"pooled": (config.projection_dim,)}
        )
        self.tokenizer = CLIPTokenizer(config.tokenizer, max_length=config.max_length, pad_token=config.pad_token)
        if self.tokenizer.vocab_size > config.vocab_size:
            raise ConfigError(
                f"clip-text: the tokenizer ({self.tokenizer.source}) has {self.tokenizer.vocab_size} tokens but "
                f"vocab_size is {config.vocab_size}",
                hint=f"set vocab_size: {self.tokenizer.vocab_size} or use the model's own tokenizer",
            )
        self.text_model = CLIPTextTransformer(config)
        self.text_projection = (
            None if config.projection_dim is None else nn.Linear(config.hidden_size, config.projection_dim, bias=False)
        )

    def encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """B prompt strings → (context (B, max_length, D), pooled (B, projection_dim) or None without a
        projection). pooled = text_projection(final-normed last layer at each row's first EOS token), whatever
        clip_skip and final_layer_norm are. Over-long prompts warn and are cut."""
        if not isinstance(prompts, (list, tuple)) or not all(isinstance(p, str) for p in prompts):
            raise InputError(
                f"clip-text expects a list of prompt strings, got {type(prompts).__name__}",
                hint='wrap a single prompt in a list: text(["a red circle"])',
            )
        weight = self.text_model.embeddings.token_embedding.weight
        input_ids = self.tokenizer(list(prompts)).to(weight.device)  # (B, L)
        context, last = self.text_model(
            input_ids,
            clip_skip=self.config.clip_skip,
            final_norm=self.config.final_layer_norm,
            with_last=self.text_projection is not None,
        )  # (B, L, D), (B, L, D) or None
        if self.text_projection is None or last is None:
            return context, None
        eos = (input_ids == self.tokenizer.eos_id).int().argmax(dim=-1)  # (B,) first EOS; every row has one
        pooled = self.text_projection(last[torch.arange(len(input_ids), device=last.device), eos])  # (B, P)
        return context, pooled

    def forward(self, prompts: list[str]) -> torch.Tensor | Conditioning:
        """B prompt strings → context (B, max_length, D); with a projection, `Conditioning(context, {"pooled":
        (B, projection_dim)})`."""
        context, pooled = self.encode(prompts)
        return context if pooled is None else Conditioning(context, {"pooled": pooled})


SPEC = ComponentSpec(
    kind="text",
    name="clip-text",
    factory=CLIPText,
    config=Config,
    example_config={
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
    },
    description="CLIP text transformer + BPE tokenizer, optional pooled projection (SD 1.x/2.x/XL text encoders)",
    checkpoint_layout=CHECKPOINT_LAYOUT,
)


@hookimpl
def diffstack_components():
    return [SPEC]
