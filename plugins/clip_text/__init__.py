"""`clip-text`: the CLIP text conditioner of Stable Diffusion — Radford et al. (2021), "Learning Transferable
Visual Models From Natural Language Supervision".

    prompts (B strings) → CLIP BPE tokenizer → ids (B, 77) → CLIP text transformer → context (B, 77, D)

Defaults are SD 1.x's text tower, OpenAI's CLIP ViT-L/14 (D = 768, 12 layers, 12 heads, quick-GELU), with
OpenAI's vocabulary shipped in `vocab/`. Config names are transformers' `CLIPTextConfig` names, so a diffusers
`text_encoder/config.json` maps onto them (`checkpoint.py`: where diffusers folders and SD 1.x single files
keep the weights); `clip_skip` follows the community convention (1 = last layer, 2 = penultimate, as SD 2.x
and many fine-tunes use), i.e. diffusers' `clip_skip` + 1.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from core import ComponentSpec, ConfigError, InputError, hookimpl
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
    clip_skip: int = Field(
        1, ge=1, description="take the hidden state of the k-th layer from the end (1 = last), then the final norm"
    )
    max_length: int = Field(77, ge=2, description="tokens per prompt including BOS and EOS")
    tokenizer: Path | None = Field(
        None,
        description="a diffusers tokenizer/ folder (vocab.json + merges.txt), a folder containing one, or a "
        "bpe_simple_vocab_16e6.txt.gz; None = the bundled OpenAI CLIP vocabulary",
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
    """A TextConditioner: `text(prompts)` → (B, max_length, embedding_dim) in the module's dtype and device.

    State-dict keys are transformers' `CLIPTextModel` keys (`text_model.…`); the tokenizer is built once, here.
    """

    def __init__(self, config: Config) -> None:
        super().__init__()
        self.config = config
        self.max_length = config.max_length
        self.embedding_dim = config.hidden_size
        self.tokenizer = CLIPTokenizer(config.tokenizer, max_length=config.max_length)
        if self.tokenizer.vocab_size > config.vocab_size:
            raise ConfigError(
                f"clip-text: the tokenizer ({self.tokenizer.source}) has {self.tokenizer.vocab_size} tokens but "
                f"vocab_size is {config.vocab_size}",
                hint=f"set vocab_size: {self.tokenizer.vocab_size} or use the model's own tokenizer",
            )
        self.text_model = CLIPTextTransformer(config)

    def forward(self, prompts: list[str]) -> torch.Tensor:
        """B prompt strings → context (B, max_length, embedding_dim); over-long prompts warn and are cut."""
        if not isinstance(prompts, (list, tuple)) or not all(isinstance(p, str) for p in prompts):
            raise InputError(
                f"clip-text expects a list of prompt strings, got {type(prompts).__name__}",
                hint='wrap a single prompt in a list: text(["a red circle"])',
            )
        weight = self.text_model.embeddings.token_embedding.weight
        input_ids = self.tokenizer(list(prompts)).to(weight.device)  # (B, L)
        return self.text_model(input_ids, clip_skip=self.config.clip_skip)  # (B, L, D)


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
    description="CLIP text transformer + BPE tokenizer (SD 1.x/2.x text encoder)",
    checkpoint_layout=CHECKPOINT_LAYOUT,
)


@hookimpl
def diffstack_components():
    return [SPEC]
