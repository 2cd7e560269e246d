"""Conditional U-Net denoiser of Stable Diffusion 1.x/2.x and SDXL — Rombach et al. (2022), "High-Resolution
Image Synthesis with Latent Diffusion Models"; Podell et al. (2023), "SDXL"; U-Net of Ronneberger et al. (2015);
blocks as in Ho et al. (2020).

    sample (B, C, h, w) ─ conv_in ─ down blocks ─ mid block ─ up blocks ─ norm, SiLU, conv_out ─ (B, C, h, w)
                                     │ skips ──────────────────▲
    timestep ─ sinusoidal embedding ─ MLP ─(+ SDXL's added embedding)─ added inside every ResNet block
    context (B, L, D) ─ cross-attention inside every Transformer2D block

SDXL (`addition_embed_type: text_time`) adds to the time embedding an MLP (`add_embedding`) of the pooled text
embedding (B, P) concatenated with the sinusoidal embeddings of 6 micro-conditioning time ids per sample
(original height, width; crop top, left; target height, width — in pixels). These are the denoiser's *added
inputs*: `added_inputs` names them with their per-sample shapes, `forward` takes them as `pooled=`/`time_ids=`
keywords, and `micro_conditioning(height, width)` gives a sample's time ids for an image size. The SDXL
refiner's 5 time ids (with an aesthetic score instead of the target size) are not supported.

A down block is `layers_per_block` × (ResNet block [+ Transformer2D]) then a stride-2 conv; an up block is
`layers_per_block + 1` × (concat skip, ResNet block [+ Transformer2D]) then 2× nearest upsampling + conv.
A Transformer2D block is GroupNorm, 1×1 projection in, `transformer_layers_per_block` × (self-attention,
cross-attention on the text, GEGLU feed-forward; each pre-LayerNorm and residual), projection out, residual.

The config uses diffusers' `UNet2DConditionModel` names, so a diffusers `unet/config.json` maps one to one,
and module attributes follow diffusers' checkpoint keys (`down_blocks.0.attentions.0.transformer_blocks.0
.attn2.to_k.weight`), so diffusers weights load without a key table. Note diffusers' historical naming:
`attention_head_dim` is the number of attention *heads* per block, not their width.

`CHECKPOINT_LAYOUT` reads diffusers `unet/` folders (their config keys for features this U-Net lacks must be
off; `prediction_type` comes from the pipeline's `scheduler/`) and the `model.diffusion_model.*` part of
original SD 1.x/2.x (LDM) and SDXL (SGM) single files, renaming LDM's `input_blocks`/`output_blocks` numbering
and reading the architecture from the tensor shapes (`single_file_names` says what cannot be read from them).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Literal, cast

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from core import CheckpointLayout, ComponentSpec, InputError, PredictionType, hookimpl
from core.checkpoint_layout import ANY_VALUE, FileTensor, ShapeReader, Shapes, SingleFileNames, Unreadable
from core.weights import read_json
from plugins import single_file

DownBlockType = Literal["CrossAttnDownBlock2D", "DownBlock2D"]
UpBlockType = Literal["CrossAttnUpBlock2D", "UpBlock2D"]
IntPerBlock = int | tuple[int, ...]
TIME_IDS = 6  # SDXL's micro-conditioning per sample: original (h, w), crop (top, left), target (h, w)


class Config(BaseModel):
    """Architecture; the defaults are Stable Diffusion 1.5's U-Net."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sample_size: int = Field(64, ge=1, description="latent side the model was trained at: the default image size")
    in_channels: int = Field(4, ge=1)
    out_channels: int = Field(4, ge=1)
    down_block_types: tuple[DownBlockType, ...] = (
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "DownBlock2D",
    )
    mid_block_type: Literal["UNetMidBlock2DCrossAttn"] = "UNetMidBlock2DCrossAttn"
    up_block_types: tuple[UpBlockType, ...] = (
        "UpBlock2D",
        "CrossAttnUpBlock2D",
        "CrossAttnUpBlock2D",
        "CrossAttnUpBlock2D",
    )
    block_out_channels: tuple[int, ...] = Field((320, 640, 1280, 1280), min_length=1)
    layers_per_block: IntPerBlock = Field(2, description="ResNet blocks per down block (int or one per block)")
    transformer_layers_per_block: IntPerBlock = Field(1, description="transformer layers per Transformer2D")
    attention_head_dim: IntPerBlock = Field(
        8, description="number of attention heads (diffusers' historical name), int or one per block"
    )
    cross_attention_dim: int = Field(768, ge=1, description="width D of the text context")
    use_linear_projection: bool = Field(False, description="Transformer2D projections: Linear (SD 2) or 1×1 conv")
    upcast_attention: bool = Field(False, description="compute attention in fp32 when the model is fp16/bf16")
    flip_sin_to_cos: bool = Field(True, description="timestep embedding order: cos, sin (True) or sin, cos")
    freq_shift: float = Field(0, description="timestep embedding frequency shift")
    norm_num_groups: int = Field(32, ge=1)
    norm_eps: float = Field(1e-5, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    prediction_type: PredictionType = Field("epsilon", description="what the network predicts")
    addition_embed_type: Literal["text_time"] | None = Field(
        None, description="SDXL's added embedding of the pooled text and the micro-conditioning time ids"
    )
    addition_time_embed_dim: int | None = Field(None, ge=1, description="sinusoidal width of each time id")
    projection_class_embeddings_input_dim: int | None = Field(
        None, ge=1, description=f"add_embedding's input width: pooled width P + {TIME_IDS} × addition_time_embed_dim"
    )

    @model_validator(mode="after")
    def _check_shapes(self) -> Config:
        n = len(self.down_block_types)
        if len(self.up_block_types) != n or len(self.block_out_channels) != n:
            raise ValueError(
                f"down_block_types, up_block_types and block_out_channels need one entry per resolution level; "
                f"got {n}, {len(self.up_block_types)} and {len(self.block_out_channels)}"
            )
        for name in ("layers_per_block", "transformer_layers_per_block", "attention_head_dim"):
            values = per_block(getattr(self, name), n)
            if len(values) != n or min(values) < 1:
                raise ValueError(f"{name} must be a positive int or {n} positive ints, got {getattr(self, name)}")
        for channels, heads in zip(self.block_out_channels, per_block(self.attention_head_dim, n), strict=True):
            if channels % self.norm_num_groups:
                raise ValueError(f"block_out_channels {channels} not divisible by {self.norm_num_groups} groups")
            if channels % heads:
                raise ValueError(f"block_out_channels {channels} is not divisible by {heads} attention heads")
        return self

    @model_validator(mode="after")
    def _check_added_embedding(self) -> Config:
        time_dim, input_dim = self.addition_time_embed_dim, self.projection_class_embeddings_input_dim
        dims = "addition_time_embed_dim and projection_class_embeddings_input_dim"
        if self.addition_embed_type is None:
            if time_dim is not None or input_dim is not None:
                raise ValueError(f"{dims} are only for addition_embed_type 'text_time'")
        elif time_dim is None or input_dim is None:
            raise ValueError(f"addition_embed_type 'text_time' needs {dims}")
        elif input_dim <= TIME_IDS * time_dim:
            raise ValueError(
                f"projection_class_embeddings_input_dim {input_dim} must exceed {TIME_IDS} × "
                f"addition_time_embed_dim = {TIME_IDS * time_dim}: it is the pooled width plus that"
            )
        return self


def per_block(value: IntPerBlock, n: int) -> tuple[int, ...]:
    """An int repeated for n blocks, or the per-block tuple as given."""
    return (value,) * n if isinstance(value, int) else tuple(value)


def timestep_embedding(timesteps: torch.Tensor, dim: int, flip_sin_to_cos: bool, freq_shift: float) -> torch.Tensor:
    """Sinusoidal embedding of (B,) timesteps → (B, dim) float32; frequencies 10000^(-i / (dim/2 - shift))."""
    half = dim // 2
    exponent = -math.log(10000) * torch.arange(half, dtype=torch.float32, device=timesteps.device)
    angles = timesteps[:, None].float() * torch.exp(exponent / (half - freq_shift))[None, :]  # (B, half)
    sin, cos = torch.sin(angles), torch.cos(angles)
    emb = torch.cat([cos, sin] if flip_sin_to_cos else [sin, cos], dim=-1)
    return F.pad(emb, (0, dim % 2))  # (B, dim)


class TimestepEmbedding(nn.Module):
    """Two-layer MLP with SiLU between: (B, in_dim) → (B, dim). The time embedding (C0 → 4·C0) and SDXL's added
    embedding (pooled text + time-id embeddings → 4·C0)."""

    def __init__(self, in_dim: int, dim: int):
        super().__init__()
        self.linear_1 = nn.Linear(in_dim, dim)
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(F.silu(self.linear_1(x)))


class ResnetBlock2D(nn.Module):
    """GroupNorm → SiLU → conv → + time embedding → GroupNorm → SiLU → dropout → conv, plus the input
    (1×1-projected when the width changes)."""

    def __init__(self, in_ch: int, out_ch: int, temb_ch: int, cfg: Config):
        super().__init__()
        self.norm1 = nn.GroupNorm(cfg.norm_num_groups, in_ch, eps=cfg.norm_eps)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.time_emb_proj = nn.Linear(temb_ch, out_ch)
        self.norm2 = nn.GroupNorm(cfg.norm_num_groups, out_ch, eps=cfg.norm_eps)
        self.dropout = nn.Dropout(cfg.dropout)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.conv_shortcut = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else None

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))  # (B, out, h, w)
        h = h + self.time_emb_proj(F.silu(temb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return (x if self.conv_shortcut is None else self.conv_shortcut(x)) + h


class Attention(nn.Module):
    """Multi-head attention of x (B, N, C) over context (B, L, D) — or over x itself when context is None."""

    def __init__(self, dim: int, context_dim: int, heads: int, dropout: float, upcast: bool):
        super().__init__()
        self.heads, self.upcast = heads, upcast
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(context_dim, dim, bias=False)
        self.to_v = nn.Linear(context_dim, dim, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(dim, dim), nn.Dropout(dropout)])  # a list: checkpoint key to_out.0

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        context = x if context is None else context
        B, N, C = x.shape
        q, k, v = self.to_q(x), self.to_k(context), self.to_v(context)
        q, k, v = (t.view(B, -1, self.heads, C // self.heads).transpose(1, 2) for t in (q, k, v))  # (B, heads, ·, d)
        if self.upcast:
            q, k, v = q.float(), k.float(), v.float()
        out = F.scaled_dot_product_attention(q, k, v)  # (B, heads, N, C/heads)
        out = out.transpose(1, 2).reshape(B, N, C).to(x.dtype)
        return self.to_out[1](self.to_out[0](out))


class GEGLU(nn.Module):
    """Gated GELU (Shazeer 2020): half of the projection, gated by GELU of the other half."""

    def __init__(self, dim: int, inner: int):
        super().__init__()
        self.proj = nn.Linear(dim, 2 * inner)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, gate = self.proj(x).chunk(2, dim=-1)
        return h * F.gelu(gate)


class FeedForward(nn.Module):
    """GEGLU (dim → 4·dim) → dropout → Linear back to dim; `net.0`/`net.2` are the checkpoint keys."""

    def __init__(self, dim: int, dropout: float):
        super().__init__()
        self.net = nn.Sequential(GEGLU(dim, 4 * dim), nn.Dropout(dropout), nn.Linear(4 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class BasicTransformerBlock(nn.Module):
    """Pre-LayerNorm residual self-attention, cross-attention on the context, and feed-forward on (B, N, C)."""

    def __init__(self, dim: int, context_dim: int, heads: int, dropout: float, upcast: bool):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = Attention(dim, dim, heads, dropout, upcast)
        self.norm2 = nn.LayerNorm(dim)
        self.attn2 = Attention(dim, context_dim, heads, dropout, upcast)
        self.norm3 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim, dropout)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        x = x + self.attn1(self.norm1(x))
        x = x + self.attn2(self.norm2(x), context)
        return x + self.ff(self.norm3(x))


class Transformer2D(nn.Module):
    """(B, C, h, w) feature map as h·w tokens through transformer layers, projected in and out, plus residual."""

    def __init__(self, ch: int, level: int, cfg: Config):
        super().__init__()
        n = len(cfg.block_out_channels)
        heads = per_block(cfg.attention_head_dim, n)[level]
        layers = per_block(cfg.transformer_layers_per_block, n)[level]
        self.linear_proj = cfg.use_linear_projection
        self.norm = nn.GroupNorm(cfg.norm_num_groups, ch, eps=1e-6)
        self.proj_in = nn.Linear(ch, ch) if self.linear_proj else nn.Conv2d(ch, ch, 1)
        self.transformer_blocks = nn.ModuleList(
            [
                BasicTransformerBlock(ch, cfg.cross_attention_dim, heads, cfg.dropout, cfg.upcast_attention)
                for _ in range(layers)
            ]
        )
        self.proj_out = nn.Linear(ch, ch) if self.linear_proj else nn.Conv2d(ch, ch, 1)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        h = self.norm(x)
        if not self.linear_proj:
            h = self.proj_in(h)
        h = h.permute(0, 2, 3, 1).reshape(B, H * W, C).contiguous()  # (B, h·w, C) tokens
        if self.linear_proj:
            h = self.proj_in(h)
        for block in self.transformer_blocks:
            h = block(h, context)
        if self.linear_proj:
            h = self.proj_out(h)
        h = h.reshape(B, H, W, C).permute(0, 3, 1, 2)  # (B, C, h, w)
        if not self.linear_proj:
            h = self.proj_out(h.contiguous())
        return x + h


class Downsample(nn.Module):
    """Stride-2 3×3 conv: (B, C, h, w) → (B, C, ⌈h/2⌉, ⌈w/2⌉)."""

    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest-neighbour upsampling to `size` (2× normally, the skip's size for odd inputs), then 3×3 conv."""

    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: torch.Tensor, size: torch.Size) -> torch.Tensor:
        if tuple(size) == (2 * x.shape[-2], 2 * x.shape[-1]):
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")  # same result, faster kernel than size=
        else:
            x = F.interpolate(x, size=size, mode="nearest")
        return self.conv(x)


class DownBlock(nn.Module):
    """`layers` × (ResNet [+ Transformer2D]), then an optional Downsample; returns every output for the skips."""

    def __init__(self, cfg: Config, i: int, in_ch: int, temb_ch: int, attention: bool, downsample: bool):
        super().__init__()
        out_ch, n = cfg.block_out_channels[i], len(cfg.block_out_channels)
        layers = per_block(cfg.layers_per_block, n)[i]
        widths = [in_ch] + [out_ch] * (layers - 1)
        self.resnets = nn.ModuleList([ResnetBlock2D(width, out_ch, temb_ch, cfg) for width in widths])
        self.attentions = nn.ModuleList([Transformer2D(out_ch, i, cfg) for _ in range(layers)] if attention else [])
        self.downsamplers = nn.ModuleList([Downsample(out_ch)] if downsample else [])

    def forward(
        self, x: torch.Tensor, temb: torch.Tensor, context: torch.Tensor
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        skips = []
        for j, resnet in enumerate(self.resnets):
            x = resnet(x, temb)
            if self.attentions:
                x = self.attentions[j](x, context)
            skips.append(x)
        for downsample in self.downsamplers:
            x = downsample(x)
            skips.append(x)
        return x, skips


class MidBlock(nn.Module):
    """ResNet → Transformer2D → ResNet at the lowest resolution."""

    def __init__(self, cfg: Config, temb_ch: int):
        super().__init__()
        ch = cfg.block_out_channels[-1]
        self.resnets = nn.ModuleList([ResnetBlock2D(ch, ch, temb_ch, cfg) for _ in range(2)])
        self.attentions = nn.ModuleList([Transformer2D(ch, len(cfg.block_out_channels) - 1, cfg)])

    def forward(self, x: torch.Tensor, temb: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        x = self.resnets[0](x, temb)
        return self.resnets[1](self.attentions[0](x, context), temb)


class UpBlock(nn.Module):
    """`layers + 1` × (concat a skip, ResNet [+ Transformer2D]), then an optional Upsample.

    Level i of the up path mirrors down level n-1-i; its ResNets take the running features concatenated with
    the skips, popped last-in first-out.
    """

    def __init__(self, cfg: Config, i: int, prev_ch: int, temb_ch: int, attention: bool, upsample: bool):
        super().__init__()
        n = len(cfg.block_out_channels)
        level = n - 1 - i
        out_ch = cfg.block_out_channels[level]
        skip_in_ch = cfg.block_out_channels[max(level - 1, 0)]  # the last skip comes from the level below
        layers = per_block(cfg.layers_per_block, n)[level] + 1
        in_chs = [(prev_ch if j == 0 else out_ch) + (skip_in_ch if j == layers - 1 else out_ch) for j in range(layers)]
        self.resnets = nn.ModuleList([ResnetBlock2D(in_ch, out_ch, temb_ch, cfg) for in_ch in in_chs])
        self.attentions = nn.ModuleList([Transformer2D(out_ch, level, cfg) for _ in range(layers)] if attention else [])
        self.upsamplers = nn.ModuleList([Upsample(out_ch)] if upsample else [])

    def forward(
        self,
        x: torch.Tensor,
        temb: torch.Tensor,
        context: torch.Tensor,
        skips: list[torch.Tensor],
        size: torch.Size | None,
    ) -> torch.Tensor:
        for j, resnet in enumerate(self.resnets):
            x = resnet(torch.cat([x, skips.pop()], dim=1), temb)
            if self.attentions:
                x = self.attentions[j](x, context)
        for upsample in self.upsamplers:
            x = upsample(x, size)
        return x


class UNet2DCondition(nn.Module):
    """The Denoiser: `unet(sample (B, C, h, w), timestep, context (B, L, D)) → (B, C, h, w)` in sample's dtype;
    with SDXL's added embedding also `pooled=` (B, P) and `time_ids=` (B, 6) (`added_inputs`)."""

    def __init__(self, config: Config):
        super().__init__()
        self.config = config
        self.in_channels = config.in_channels
        self.context_dim = config.cross_attention_dim
        self.prediction_type = config.prediction_type
        self.sample_size = config.sample_size
        ch = config.block_out_channels
        temb_ch = 4 * ch[0]
        n = len(ch)

        self.conv_in = nn.Conv2d(config.in_channels, ch[0], 3, padding=1)
        self.time_embedding = TimestepEmbedding(ch[0], temb_ch)
        if config.projection_class_embeddings_input_dim is not None:  # text_time (the Config checks)
            self.add_embedding = TimestepEmbedding(config.projection_class_embeddings_input_dim, temb_ch)
        self.down_blocks = nn.ModuleList(
            [
                DownBlock(config, i, ch[max(i - 1, 0)], temb_ch, kind == "CrossAttnDownBlock2D", downsample=i < n - 1)
                for i, kind in enumerate(config.down_block_types)
            ]
        )
        self.mid_block = MidBlock(config, temb_ch)
        self.up_blocks = nn.ModuleList(
            [
                UpBlock(config, i, ch[min(n - i, n - 1)], temb_ch, kind == "CrossAttnUpBlock2D", upsample=i < n - 1)
                for i, kind in enumerate(config.up_block_types)
            ]
        )
        self.conv_norm_out = nn.GroupNorm(config.norm_num_groups, ch[0], eps=config.norm_eps)
        self.conv_out = nn.Conv2d(ch[0], config.out_channels, 3, padding=1)

    @property
    def added_inputs(self) -> dict[str, tuple[int, ...]]:
        """The extra keyword inputs of `forward`, name → per-sample shape: none, or for SDXL's text_time the pooled
        text embedding (P,) with P = projection_class_embeddings_input_dim − 6·addition_time_embed_dim, and the
        time ids (6,)."""
        cfg = self.config
        if cfg.addition_time_embed_dim is None or cfg.projection_class_embeddings_input_dim is None:
            return {}
        pooled = cfg.projection_class_embeddings_input_dim - TIME_IDS * cfg.addition_time_embed_dim
        return {"pooled": (pooled,), "time_ids": (TIME_IDS,)}

    def micro_conditioning(self, height: int, width: int) -> dict[str, torch.Tensor]:
        """The per-sample added inputs this U-Net derives from the image size in pixels: for text_time
        `{"time_ids": (6,) float32}` = original size (height, width), crop (0, 0), target size (height, width) —
        diffusers' SDXL pipeline's defaults; else `{}`."""
        if "time_ids" not in self.added_inputs:
            return {}
        return {"time_ids": torch.tensor([height, width, 0, 0, height, width], dtype=torch.float32)}

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float | int,
        context: torch.Tensor,
        *,
        pooled: torch.Tensor | None = None,
        time_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """sample (B, C, h, w), timestep (a number, 0-d or (B,)), context (B, L, D); for text_time also pooled
        (B, P) and time_ids (B, 6), which a U-Net without added inputs refuses → (B, C, h, w) in sample's dtype."""
        self._check_inputs(sample, context)
        self._check_added_inputs(sample.shape[0], {"pooled": pooled, "time_ids": time_ids})
        cfg, B = self.config, sample.shape[0]
        dtype = self.conv_in.weight.dtype
        t = torch.as_tensor(timestep, device=sample.device)
        if t.ndim > 1 or t.numel() not in (1, B):
            raise InputError(
                f"unet2d-condition: timestep must be a number or a 0-d or ({B},) tensor, got shape {tuple(t.shape)}"
            )
        t = t.reshape(-1).expand(B)  # (B,)
        t_emb = timestep_embedding(t, cfg.block_out_channels[0], cfg.flip_sin_to_cos, cfg.freq_shift)  # (B, C0)
        temb = self.time_embedding(t_emb.to(dtype))  # (B, 4·C0)
        if pooled is not None and time_ids is not None:  # text_time (checked above)
            d = cast(int, cfg.addition_time_embed_dim)
            time_embeds = timestep_embedding(time_ids.flatten(), d, cfg.flip_sin_to_cos, cfg.freq_shift)  # (6B, d)
            add_embeds = torch.cat([pooled.to(dtype), time_embeds.reshape(B, TIME_IDS * d).to(dtype)], dim=-1)
            temb = temb + self.add_embedding(add_embeds)  # (B, 4·C0)
        context = context.to(dtype)

        x = self.conv_in(sample.to(dtype))  # (B, C0, h, w)
        skips = [x]
        for block in self.down_blocks:
            x, block_skips = block(x, temb, context)
            skips.extend(block_skips)
        x = self.mid_block(x, temb, context)  # (B, C_last, h/2^(n-1), w/2^(n-1))
        for block in self.up_blocks:
            block = cast(UpBlock, block)  # nn.ModuleList yields plain nn.Modules
            size_after = skips[-len(block.resnets) - 1].shape[-2:] if block.upsamplers else None  # next skip's h, w
            x = block(x, temb, context, skips, size_after)
        x = self.conv_out(F.silu(self.conv_norm_out(x)))  # (B, C, h, w)
        return x.to(sample.dtype)

    def _check_inputs(self, sample: torch.Tensor, context: torch.Tensor) -> None:
        if sample.ndim != 4 or sample.shape[1] != self.in_channels:
            raise InputError(
                f"unet2d-condition: sample must be (B, {self.in_channels}, h, w), got shape {tuple(sample.shape)}"
            )
        if context.ndim != 3 or context.shape[-1] != self.context_dim:
            raise InputError(
                f"unet2d-condition: context width expected {self.context_dim} (cross_attention_dim), "
                f"got shape {tuple(context.shape)}",
                hint="use a text conditioner whose embedding_dim equals the denoiser's cross_attention_dim",
            )
        if context.shape[0] != sample.shape[0]:
            raise InputError(f"unet2d-condition: context batch {context.shape[0]} != sample batch {sample.shape[0]}")

    def _check_added_inputs(self, batch: int, given: dict[str, torch.Tensor | None]) -> None:
        expected = self.added_inputs
        if unexpected := [name for name, value in given.items() if value is not None and name not in expected]:
            raise InputError(
                f"unet2d-condition: got {' and '.join(unexpected)}, but this U-Net takes no added inputs "
                "(its config has no addition_embed_type)",
                hint="pass pooled/time_ids only to a denoiser whose added_inputs name them (an SDXL U-Net)",
            )
        hints = {
            "pooled": "the text conditioner must give a pooled embedding (e.g. the sdxl-text conditioner)",
            "time_ids": "pass time_ids: per sample, micro_conditioning(height, width)['time_ids']",
        }
        for name, shape in expected.items():
            value = given[name]
            if value is None:
                raise InputError(
                    f"unet2d-condition: this SDXL-style U-Net (addition_embed_type text_time) needs {name} "
                    f"{(batch, *shape)}, got none",
                    hint=hints[name],
                )
            if tuple(value.shape) != (batch, *shape):
                raise InputError(
                    f"unet2d-condition: {name} must have shape {(batch, *shape)}, got {tuple(value.shape)}"
                )


# ─── checkpoints written by diffusers and by the original LDM code ─────────────────────────────────────

# Config keys of diffusers' UNet2DConditionModel that Config leaves out, with the value that means "feature
# off"; another value is a feature this U-Net lacks (core.weights refuses it).
DIFFUSERS_LEFT_OUT = {
    "center_input_sample": False,
    "only_cross_attention": False,
    "downsample_padding": 1,
    "mid_block_scale_factor": 1,
    "act_fn": "silu",
    "dual_cross_attention": False,
    "resnet_time_scale_shift": "default",
    "resnet_skip_time_act": False,
    "resnet_out_scale_factor": 1,
    "time_embedding_type": "positional",
    "conv_in_kernel": 3,
    "conv_out_kernel": 3,
    "attention_type": "default",
    "class_embeddings_concat": False,
    "addition_embed_type_num_heads": ANY_VALUE,
    "encoder_hid_dim_type": None,
    "class_embed_type": None,
    "num_class_embeds": None,
    "encoder_hid_dim": None,
    "time_cond_proj_dim": None,
    "time_embedding_dim": None,
    "num_attention_heads": None,
    "timestep_post_act": None,
    "time_embedding_act_fn": None,
    "cross_attention_norm": None,
    "mid_block_only_cross_attention": None,
    "reverse_transformer_layers_per_block": None,
}
SDXL_TIME_EMBED_DIM = 256  # addition_time_embed_dim of SDXL; shapes show only 6× it plus the pooled width
HEAD_WIDTH = 64  # attention head width of SD 2.x and SDXL
SD1_CONTEXT_DIM = 768  # CLIP ViT-L/14's width: SD 1.x's context, whose U-Net has 8 heads per level


def config_from_diffusers(config: dict[str, Any], folder: Path) -> dict[str, Any]:
    """A diffusers `unet/config.json` (left-out keys dropped) plus `prediction_type` from the pipeline's
    `scheduler/scheduler_config.json` beside it, which is where diffusers keeps it."""
    scheduler_config = folder.parent / "scheduler" / "scheduler_config.json"
    if scheduler_config.exists():
        prediction_type = read_json(scheduler_config).get("prediction_type")
        if prediction_type:
            config.setdefault("prediction_type", prediction_type)
    return config


_LDM_RESNET = {
    "in_layers.0": "norm1",
    "in_layers.2": "conv1",
    "emb_layers.1": "time_emb_proj",
    "out_layers.0": "norm2",
    "out_layers.3": "conv2",
    "skip_connection": "conv_shortcut",
}
_LDM_FIXED = {
    "time_embed.0": "time_embedding.linear_1",
    "time_embed.2": "time_embedding.linear_2",
    "label_emb.0.0": "add_embedding.linear_1",
    "label_emb.0.2": "add_embedding.linear_2",
    "input_blocks.0.0": "conv_in",
    "out.0": "conv_norm_out",
    "out.2": "conv_out",
    "middle_block.0": "mid_block.resnets.0",
    "middle_block.1": "mid_block.attentions.0",
    "middle_block.2": "mid_block.resnets.1",
}


def _rename_resnet(rest: str) -> str:
    for theirs, ours in _LDM_RESNET.items():
        if rest.startswith(theirs + "."):
            return ours + rest[len(theirs) :]
    return rest


def _ldm_name(key: str, per_level: int) -> str:
    """One LDM U-Net key → ours; unknown keys come back unchanged (and are then reported as unexpected)."""
    for theirs, ours in _LDM_FIXED.items():
        if key.startswith(theirs + "."):
            rest = key[len(theirs) + 1 :]
            return f"{ours}.{_rename_resnet(rest) if 'resnets' in ours else rest}"
    if m := re.match(r"input_blocks\.(\d{1,9})\.(\d)\.(.*)", key):
        i, slot, rest = int(m.group(1)), int(m.group(2)), m.group(3)
        level, j = divmod(i - 1, per_level + 1)
        if j == per_level:
            return f"down_blocks.{level}.downsamplers.0.conv.{rest.removeprefix('op.')}"
        if slot == 0:
            return f"down_blocks.{level}.resnets.{j}.{_rename_resnet(rest)}"
        return f"down_blocks.{level}.attentions.{j}.{rest}"
    if m := re.match(r"output_blocks\.(\d{1,9})\.(\d)\.(.*)", key):
        i, slot, rest = int(m.group(1)), int(m.group(2)), m.group(3)
        level, j = divmod(i, per_level + 1)
        if slot == 0:
            return f"up_blocks.{level}.resnets.{j}.{_rename_resnet(rest)}"
        if rest.startswith("conv."):
            return f"up_blocks.{level}.upsamplers.0.{rest}"
        return f"up_blocks.{level}.attentions.{j}.{rest}"
    return key


def single_file_names(shapes: Shapes) -> tuple[SingleFileNames, dict[str, Any]]:
    """LDM/SGM U-Net keys (`model.diffusion_model.` stripped) → ours, and the architecture the shapes show.

    LDM numbers `input_blocks` 1.. as `layers_per_block` (ResNet [, SpatialTransformer]) slots per level plus
    one downsample slot (`.0.op`), and `output_blocks` 0.. as `layers_per_block + 1` slots per level, where
    `.1`/`.2` is the attention or the upsampler (`.conv`). `label_emb.0.{0,2}` is read as SDXL's added
    embedding (SD 2.x unCLIP's class embedding has the same keys and is not supported). Raises `Unreadable`.

    Read from the shapes: the widths, block types, `layers_per_block`, `transformer_layers_per_block` (the
    transformer layers of each level's first attention; 1 for a level without attention, but the mid block's
    count for the last level, which the mid block follows), `use_linear_projection`, `cross_attention_dim`
    and, with `label_emb`, `projection_class_embeddings_input_dim`. Not in the shapes, set by model family:
    `addition_time_embed_dim` is SDXL's 256; `attention_head_dim` (the number of heads) is left to the
    default 8 (SD 1.x) for `cross_attention_dim` 768, and otherwise is width // 64 per level, SD 2.x's and
    SDXL's 64-wide heads (left out when a width is not a multiple of 64). Also not in the shapes:
    `norm_num_groups`, `sample_size`, `upcast_attention`, `prediction_type` (defaults: SD 1.5's).
    """
    reader = ShapeReader(shapes)
    inputs = {int(m.group(1)) for k in shapes if (m := re.match(r"input_blocks\.(\d{1,9})\.", k))}
    downs = {int(m.group(1)) for k in shapes if (m := re.match(r"input_blocks\.(\d{1,9})\.0\.op\.", k))}
    levels = len(downs) + 1
    per_level = (len(inputs) - 1 - len(downs)) // levels  # layers_per_block
    if per_level < 1:  # no ResNet slot in a level: the names below cannot be read
        raise Unreadable(["input_blocks.1.0.out_layers.3.weight"], [])
    names = {_ldm_name(key, per_level): FileTensor(key) for key in shapes}

    def channels(i: int) -> int:
        return reader.dim(f"input_blocks.{i}.0.out_layers.3.weight", 0, 4)

    def transformer_layers(block: str) -> int:
        layer = re.compile(rf"{re.escape(block)}\.transformer_blocks\.(\d{{1,9}})\.")
        return len({m.group(1) for k in shapes if (m := layer.match(k))})

    first_slot = [1 + level * (per_level + 1) for level in range(levels)]
    attention = [f"input_blocks.{i}.1.proj_in.weight" in shapes for i in first_slot]
    up_attention = [f"output_blocks.{i * (per_level + 1)}.1.proj_in.weight" in shapes for i in range(levels)]
    proj_in = next((s for k, s in shapes.items() if k.endswith("proj_in.weight")), None)
    widths = [channels(i) for i in first_slot]
    architecture: dict[str, Any] = {
        "in_channels": reader.dim("input_blocks.0.0.weight", 1, 4),
        "out_channels": reader.dim("out.2.weight", 0, 4),
        "block_out_channels": widths,
        "layers_per_block": per_level,
        "down_block_types": ["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attention],
        "up_block_types": ["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in up_attention],
    }
    if proj_in is not None:
        architecture["use_linear_projection"] = len(proj_in) == 2
        to_k = next(
            (k for k in shapes if k.endswith("attn2.to_k.weight")),
            "middle_block.1.transformer_blocks.0.attn2.to_k.weight",
        )
        context_dim = architecture["cross_attention_dim"] = reader.dim(to_k, 1, 2)
        mid_layers = transformer_layers("middle_block.1") or 1

        def depth(level: int) -> int:
            if attention[level]:
                return transformer_layers(f"input_blocks.{first_slot[level]}.1")
            return mid_layers if level == levels - 1 else 1

        depths = [depth(level) for level in range(levels)]
        architecture["transformer_layers_per_block"] = depths[0] if len(set(depths)) == 1 else depths
        if context_dim != SD1_CONTEXT_DIM and all(width % HEAD_WIDTH == 0 for width in widths):
            architecture["attention_head_dim"] = [width // HEAD_WIDTH for width in widths]
    if "label_emb.0.0.weight" in shapes:
        architecture["addition_embed_type"] = "text_time"
        architecture["addition_time_embed_dim"] = SDXL_TIME_EMBED_DIM
        architecture["projection_class_embeddings_input_dim"] = reader.dim("label_emb.0.0.weight", 1, 2)
    reader.check()
    return names, architecture


CHECKPOINT_LAYOUT = CheckpointLayout(
    diffusers_subfolder="unet",
    diffusers_weights_stem="diffusion_pytorch_model",
    diffusers_classes=("UNet2DConditionModel",),
    diffusers_left_out=DIFFUSERS_LEFT_OUT,
    config_from_diffusers=config_from_diffusers,
    single_file_prefix=single_file.UNET,
    single_file_family=single_file.FAMILY,
    single_file_names=single_file_names,
)

SPEC = ComponentSpec(
    kind="denoiser",
    name="unet2d-condition",
    factory=UNet2DCondition,
    config=Config,
    example_config={
        "block_out_channels": [32, 64],
        "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
        "layers_per_block": 1,
        "attention_head_dim": 2,
        "cross_attention_dim": 32,
        "norm_num_groups": 8,
        "sample_size": 8,
    },
    description="Stable Diffusion 1.x/2.x/SDXL conditional U-Net (defaults: SD 1.5); diffusers weights load as is",
    checkpoint_layout=CHECKPOINT_LAYOUT,
)


@hookimpl
def diffstack_components():
    return [SPEC]
