"""CLIP's text transformer — Radford et al. (2021), "Learning Transferable Visual Models From Natural Language
Supervision"; a GPT-2-style pre-norm causal transformer (reference: transformers' `CLIPTextModel`).

    ids (B, L) → token embedding + position embedding → N × [x + attn(ln1(x)); x + mlp(ln2(x))]
               → hidden state of layer N − clip_skip + 1 (B, L, D) → final layer norm (optional) → (B, L, D)

Attribute names follow `CLIPTextModel`'s checkpoint keys (`text_model.encoder.layers.0.self_attn.q_proj.weight`,
…) so diffusers `text_encoder/` weights load without a mapping table.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from plugins.clip_text import Config


def quick_gelu(x: torch.Tensor) -> torch.Tensor:
    """OpenAI CLIP's GELU approximation x·σ(1.702·x) (SD 1.x's ViT-L/14 text tower uses it)."""
    return x * torch.sigmoid(1.702 * x)


ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"quick_gelu": quick_gelu, "gelu": F.gelu}


class Embeddings(nn.Module):
    """Token ids → token embedding + learned absolute position embedding."""

    def __init__(self, config: Config) -> None:
        super().__init__()
        self.token_embedding = nn.Embedding(config.vocab_size, config.hidden_size)
        self.position_embedding = nn.Embedding(config.max_position_embeddings, config.hidden_size)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        length = input_ids.shape[1]
        return self.token_embedding(input_ids) + self.position_embedding.weight[:length]  # (B, L, D)


class Attention(nn.Module):
    """Multi-head causal self-attention: each token attends to itself and the tokens before it."""

    def __init__(self, config: Config) -> None:
        super().__init__()
        width = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.q_proj = nn.Linear(width, width)
        self.k_proj = nn.Linear(width, width)
        self.v_proj = nn.Linear(width, width)
        self.out_proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, L, D = x.shape
        q, k, v = (
            proj(x).view(B, L, self.num_heads, D // self.num_heads).transpose(1, 2)  # (B, heads, L, D/heads)
            for proj in (self.q_proj, self.k_proj, self.v_proj)
        )
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, heads, L, D/heads)
        return self.out_proj(y.transpose(1, 2).reshape(B, L, D))  # (B, L, D)


class MLP(nn.Module):
    """Position-wise feed-forward: D → intermediate_size → D."""

    def __init__(self, config: Config) -> None:
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)
        self.activation = ACTIVATIONS[config.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.activation(self.fc1(x)))


class EncoderLayer(nn.Module):
    """Pre-norm transformer block."""

    def __init__(self, config: Config) -> None:
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.self_attn = Attention(config)
        self.layer_norm2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class TransformerStack(nn.Module):
    """The stack of `num_hidden_layers` blocks (a module of its own for the checkpoint's `encoder.` keys)."""

    def __init__(self, config: Config) -> None:
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(config) for _ in range(config.num_hidden_layers))


class CLIPTextTransformer(nn.Module):
    """ids (B, L) → hidden states (B, L, D), D = hidden_size, L ≤ max_position_embeddings."""

    def __init__(self, config: Config) -> None:
        super().__init__()
        self.embeddings = Embeddings(config)
        self.encoder = TransformerStack(config)
        self.final_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(
        self, input_ids: torch.Tensor, *, clip_skip: int = 1, final_norm: bool = True, with_last: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """ids (B, L) → (hidden, last). hidden (B, L, D): the output of the clip_skip-th layer from the end
        (1 = the last), through the final norm if `final_norm`; last (B, L, D): the last layer's output through
        the final norm (what a pooled embedding is taken from) if `with_last`, else None (and the layers after
        the chosen one are not run)."""
        x = self.embeddings(input_ids)  # (B, L, D)
        layers = self.encoder.layers
        chosen = len(layers) - clip_skip + 1  # how many layers the hidden state has gone through
        hidden = x
        for i, layer in enumerate(layers[: len(layers) if with_last else chosen], start=1):
            x = layer(x)
            if i == chosen:
                hidden = x
        hidden = self.final_layer_norm(hidden) if final_norm else hidden
        if not with_last:
            return hidden, None
        return hidden, hidden if final_norm and clip_skip == 1 else self.final_layer_norm(x)
