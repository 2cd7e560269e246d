"""KL-regularised autoencoder (the Stable Diffusion VAE) — Rombach et al. (2022), "High-Resolution Image
Synthesis with Latent Diffusion Models"; variational autoencoder of Kingma & Welling (2014), "Auto-Encoding
Variational Bayes".

    images (B, 3, H, W) in [-1, 1]
      encoder: conv_in → down blocks (ResNets, stride-2 conv) → mid (ResNet, attention, ResNet) → norm, SiLU, conv_out
      quant_conv → moments (B, 2C, H/f, W/f) = mean ‖ log-variance of a diagonal Gaussian posterior
      z = mean + σ·ε (sample=True) or mean (sample=False);  latents = scaling_factor · z
    latents (B, C, h, w)
      z = latents / scaling_factor → post_quant_conv → decoder (mirror of the encoder, nearest 2× upsampling)
      → images (B, 3, h·f, w·f), clamped to [-1, 1] (as diffusers' image post-processing does)

f = 2^(levels − 1). The config uses diffusers' `AutoencoderKL` names so a diffusers `vae/config.json` maps one
to one, and module attributes follow diffusers' checkpoint keys (`encoder.mid_block.attentions.0.to_q.weight`).
Decoding can run image by image (`decode_slicing`) or in overlapping, linearly blended tiles of `sample_size`
pixels (`decode_tiling`, as diffusers' `enable_tiling`) to bound memory on large images.

`CHECKPOINT_LAYOUT` reads diffusers `vae/` folders and the `first_stage_model.*` part of original SD 1.x
single files, whose attention projections are 1×1 convolutions (read as Linear weights) and whose decoder
levels are numbered from the bottom.
"""

from __future__ import annotations

import logging
import re
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from core import CheckpointLayout, ComponentSpec, InputError, hookimpl
from core.checkpoint_layout import FileTensor, ShapeReader, Shapes, SingleFileNames
from plugins import single_file

log = logging.getLogger(__name__)


class Config(BaseModel):
    """Architecture and decode options; the defaults are Stable Diffusion 1.x's VAE."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    in_channels: int = Field(3, ge=1)
    out_channels: int = Field(3, ge=1)
    down_block_types: tuple[Literal["DownEncoderBlock2D"], ...] = ("DownEncoderBlock2D",) * 4
    up_block_types: tuple[Literal["UpDecoderBlock2D"], ...] = ("UpDecoderBlock2D",) * 4
    block_out_channels: tuple[int, ...] = Field((128, 256, 512, 512), min_length=1)
    layers_per_block: int = Field(2, ge=1, description="ResNet blocks per encoder level (decoder: one more)")
    latent_channels: int = Field(4, ge=1)
    norm_num_groups: int = Field(32, ge=1)
    sample_size: int = Field(512, ge=1, description="training image size; also the tile size of decode_tiling")
    scaling_factor: float = Field(0.18215, gt=0, description="latents = scaling_factor · z, so they have unit variance")
    force_upcast: bool = Field(True, description="keep the weights in fp32 when the model is placed in float16")
    use_quant_conv: bool = True
    use_post_quant_conv: bool = True
    mid_block_add_attention: bool = True
    decode_slicing: bool = Field(False, description="decode one image at a time (less memory for big batches)")
    decode_tiling: bool = Field(False, description="decode latents larger than a tile in overlapping, blended tiles")
    tile_overlap: float = Field(0.25, gt=0, lt=1, description="fraction of a tile shared with its neighbour")

    @model_validator(mode="after")
    def _check_shapes(self) -> Config:
        n = len(self.block_out_channels)
        if len(self.down_block_types) != n or len(self.up_block_types) != n:
            raise ValueError(
                f"down_block_types, up_block_types and block_out_channels need one entry per level; "
                f"got {len(self.down_block_types)}, {len(self.up_block_types)} and {n}"
            )
        for channels in self.block_out_channels:
            if channels % self.norm_num_groups:
                raise ValueError(f"block_out_channels {channels} not divisible by {self.norm_num_groups} groups")
        return self


class ResnetBlock2D(nn.Module):
    """GroupNorm → SiLU → conv → GroupNorm → SiLU → conv, plus the (1×1-projected) input."""

    def __init__(self, in_ch: int, out_ch: int, groups: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_ch, eps=1e-6)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.norm2 = nn.GroupNorm(groups, out_ch, eps=1e-6)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.conv_shortcut = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return (x if self.conv_shortcut is None else self.conv_shortcut(x)) + h


class SpatialSelfAttention(nn.Module):
    """Single-head self-attention over the h·w positions of (B, C, h, w), with GroupNorm and residual."""

    def __init__(self, ch: int, groups: int):
        super().__init__()
        self.group_norm = nn.GroupNorm(groups, ch, eps=1e-6)
        self.to_q = nn.Linear(ch, ch)
        self.to_k = nn.Linear(ch, ch)
        self.to_v = nn.Linear(ch, ch)
        self.to_out = nn.ModuleList([nn.Linear(ch, ch)])  # a list: checkpoint key to_out.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        h = self.group_norm(x.view(B, C, H * W)).transpose(1, 2)  # (B, h·w, C)
        q, k, v = (proj(h)[:, None] for proj in (self.to_q, self.to_k, self.to_v))  # (B, 1, h·w, C)
        h = F.scaled_dot_product_attention(q, k, v)[:, 0]  # (B, h·w, C)
        h = self.to_out[0](h).transpose(1, 2).reshape(B, C, H, W)
        return h + x


class MidBlock(nn.Module):
    """ResNet → self-attention → ResNet at the lowest resolution."""

    def __init__(self, ch: int, groups: int, attention: bool):
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock2D(ch, ch, groups), ResnetBlock2D(ch, ch, groups)])
        self.attentions = nn.ModuleList([SpatialSelfAttention(ch, groups)] if attention else [])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.resnets[0](x)
        for attention in self.attentions:
            x = attention(x)
        return self.resnets[1](x)


class Downsample(nn.Module):
    """Pad right/bottom by one, then a stride-2 3×3 conv: (B, C, h, w) → (B, C, h/2, w/2)."""

    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Nearest 2× upsampling, then a 3×3 conv."""

    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class EncoderBlock(nn.Module):
    """`layers` ResNets, then an optional Downsample."""

    def __init__(self, in_ch: int, out_ch: int, layers: int, groups: int, downsample: bool):
        super().__init__()
        widths = [in_ch] + [out_ch] * (layers - 1)
        self.resnets = nn.ModuleList([ResnetBlock2D(width, out_ch, groups) for width in widths])
        self.downsamplers = nn.ModuleList([Downsample(out_ch)] if downsample else [])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in [*self.resnets, *self.downsamplers]:
            x = layer(x)
        return x


class DecoderBlock(nn.Module):
    """`layers` ResNets, then an optional Upsample."""

    def __init__(self, in_ch: int, out_ch: int, layers: int, groups: int, upsample: bool):
        super().__init__()
        widths = [in_ch] + [out_ch] * (layers - 1)
        self.resnets = nn.ModuleList([ResnetBlock2D(width, out_ch, groups) for width in widths])
        self.upsamplers = nn.ModuleList([Upsample(out_ch)] if upsample else [])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in [*self.resnets, *self.upsamplers]:
            x = layer(x)
        return x


class DownsamplingEncoder(nn.Module):
    """The VAE's downsampling stack: (B, 3, H, W) → (B, 2C, H/f, W/f) posterior moments (before quant_conv)."""

    def __init__(self, cfg: Config):
        super().__init__()
        ch, n, groups = cfg.block_out_channels, len(cfg.block_out_channels), cfg.norm_num_groups
        self.conv_in = nn.Conv2d(cfg.in_channels, ch[0], 3, padding=1)
        self.down_blocks = nn.ModuleList(
            [EncoderBlock(ch[max(i - 1, 0)], ch[i], cfg.layers_per_block, groups, i < n - 1) for i in range(n)]
        )
        self.mid_block = MidBlock(ch[-1], groups, cfg.mid_block_add_attention)
        self.conv_norm_out = nn.GroupNorm(groups, ch[-1], eps=1e-6)
        self.conv_out = nn.Conv2d(ch[-1], 2 * cfg.latent_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(x)
        for block in self.down_blocks:
            x = block(x)
        x = self.mid_block(x)  # (B, C_last, H/f, W/f)
        return self.conv_out(F.silu(self.conv_norm_out(x)))


class UpsamplingDecoder(nn.Module):
    """The VAE's upsampling stack: (B, C, h, w) latents (after post_quant_conv) → (B, 3, h·f, w·f) images."""

    def __init__(self, cfg: Config):
        super().__init__()
        ch, n, groups = cfg.block_out_channels[::-1], len(cfg.block_out_channels), cfg.norm_num_groups
        self.conv_in = nn.Conv2d(cfg.latent_channels, ch[0], 3, padding=1)
        self.mid_block = MidBlock(ch[0], groups, cfg.mid_block_add_attention)
        self.up_blocks = nn.ModuleList(
            [DecoderBlock(ch[max(i - 1, 0)], ch[i], cfg.layers_per_block + 1, groups, i < n - 1) for i in range(n)]
        )
        self.conv_norm_out = nn.GroupNorm(groups, ch[-1], eps=1e-6)
        self.conv_out = nn.Conv2d(ch[-1], cfg.out_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.mid_block(self.conv_in(z))
        for block in self.up_blocks:
            x = block(x)
        return self.conv_out(F.silu(self.conv_norm_out(x)))


class AutoencoderKL(nn.Module):
    """The `Encoder` part (core.interfaces): `encode(images) → scaled latents`, `decode(latents) → images`,
    both in the input's dtype."""

    def __init__(self, config: Config):
        super().__init__()
        self.config = config
        self.latent_channels = config.latent_channels
        self.downsample_factor = 2 ** (len(config.block_out_channels) - 1)
        self.scaling_factor = config.scaling_factor
        self.encoder = DownsamplingEncoder(config)
        self.decoder = UpsamplingDecoder(config)
        C = config.latent_channels
        self.quant_conv = nn.Conv2d(2 * C, 2 * C, 1) if config.use_quant_conv else None
        self.post_quant_conv = nn.Conv2d(C, C, 1) if config.use_post_quant_conv else None

    def placement_dtype(self, requested: torch.dtype) -> torch.dtype:
        """The dtype the weights take when the model is placed in `requested` (see `core.devices.placement_dtype`):
        float32 instead of float16 under `force_upcast` (fp16 VAE decodes overflow to NaN on some checkpoints);
        encode/decode still return the input's dtype."""
        if self.config.force_upcast and requested == torch.float16:
            log.info("vae-kl: force_upcast keeps the VAE weights in float32 instead of float16")
            return torch.float32
        return requested

    def encode(
        self, images: torch.Tensor, *, generator: torch.Generator | None = None, sample: bool = True
    ) -> torch.Tensor:
        """images (B, in_channels, H, W) in [-1, 1], H and W multiples of f → scaling_factor · z, (B, C, H/f, W/f).

        sample=True draws z = mean + exp(logvar/2)·ε with ε from `generator`; sample=False returns the mean.
        """
        f = self.downsample_factor
        if images.ndim != 4 or images.shape[1] != self.config.in_channels:
            raise InputError(
                f"vae-kl: images must be (B, {self.config.in_channels}, H, W), got shape {tuple(images.shape)}"
            )
        if images.shape[-2] % f or images.shape[-1] % f:
            raise InputError(
                f"vae-kl: image size {images.shape[-2]}×{images.shape[-1]} is not a multiple of the "
                f"downsample factor {f}",
                hint=f"resize or crop the image to multiples of {f}",
            )
        mean, logvar = self.posterior(self._in_weight_dtype(images))
        z = mean
        if sample:
            std = torch.exp(0.5 * logvar)
            noise_device = generator.device if generator is not None else mean.device
            eps = torch.randn(mean.shape, generator=generator, device=noise_device, dtype=mean.dtype).to(mean.device)
            z = mean + std * eps
        return (z * self.scaling_factor).to(images.dtype)

    def posterior(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """images (B, 3, H, W) in [-1, 1], in the weights' dtype → (mean, logvar) of the unscaled diagonal Gaussian
        posterior, each (B, C, H/f, W/f), logvar clamped to [-30, 20]: what an autoencoder objective trains
        (`core.training.autoencoder.TrainableAutoencoder`)."""
        moments = self.encoder(images)
        if self.quant_conv is not None:
            moments = self.quant_conv(moments)
        mean, logvar = moments.chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)

    def decode_unscaled(self, z: torch.Tensor) -> torch.Tensor:
        """Unscaled latents (B, C, h, w) → images (B, 3, h·f, w·f), not clamped: the decoder as trained."""
        if self.post_quant_conv is not None:
            z = self.post_quant_conv(z)
        return self.decoder(z)

    def encoding_parameters(self) -> list[nn.Parameter]:
        """The parameters of the image → posterior half (encoder, quant_conv): frozen when only the decoder
        is fine-tuned."""
        parts = [self.encoder] + ([self.quant_conv] if self.quant_conv is not None else [])
        return [parameter for part in parts for parameter in part.parameters()]

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """latents (B, C, h, w), scaled → images (B, out_channels, h·f, w·f), clamped to [-1, 1]."""
        if latents.ndim != 4 or latents.shape[1] != self.latent_channels:
            raise InputError(
                f"vae-kl: latents must be (B, {self.latent_channels}, h, w), got shape {tuple(latents.shape)}"
            )
        z = self._in_weight_dtype(latents) / self.scaling_factor
        if self.config.decode_slicing:
            images = torch.cat([self._decode(one) for one in z.split(1)])
        else:
            images = self._decode(z)
        return images.clamp(-1.0, 1.0).to(latents.dtype)

    def _in_weight_dtype(self, x: torch.Tensor) -> torch.Tensor:
        """x in the weights' dtype (float32 under force_upcast)."""
        return x.to(self.encoder.conv_in.weight.dtype)

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        tile = self.config.sample_size // self.downsample_factor  # latent tile size
        if self.config.decode_tiling and max(z.shape[-2:]) > tile:
            return self._decode_tiled(z, tile)
        return self.decode_unscaled(z)

    def _decode_tiled(self, z: torch.Tensor, tile: int) -> torch.Tensor:
        """Decode overlapping latent tiles (stride tile·(1−overlap)), fade each into its upper and left
        neighbours over `blend` pixels, and keep the top-left `keep` pixels of every tile."""
        stride = int(tile * (1 - self.config.tile_overlap))
        blend = int(self.config.sample_size * self.config.tile_overlap)
        keep = self.config.sample_size - blend
        rows = [
            [self._decode(z[:, :, i : i + tile, j : j + tile]) for j in range(0, z.shape[3], stride)]
            for i in range(0, z.shape[2], stride)
        ]
        for i, row in enumerate(rows):
            for j, decoded in enumerate(row):
                if i > 0:
                    _fade_in(rows[i - 1][j], decoded, blend, dim=2)
                if j > 0:
                    _fade_in(row[j - 1], decoded, blend, dim=3)
        return torch.cat([torch.cat([t[:, :, :keep, :keep] for t in row], dim=3) for row in rows], dim=2)


def _fade_in(previous: torch.Tensor, tile: torch.Tensor, extent: int, dim: int) -> None:
    """In place: tile's first `extent` rows (dim=2) or columns (dim=3) become a linear cross-fade from the
    last `extent` of `previous` (weight 1 − k/extent) to their own values (weight k/extent)."""
    extent = min(previous.shape[dim], tile.shape[dim], extent)
    shape = [1, 1, 1, 1]
    shape[dim] = extent
    w = (torch.arange(extent, dtype=torch.float64, device=tile.device) / extent).view(shape)
    head = tile.narrow(dim, 0, extent)
    tail = previous.narrow(dim, previous.shape[dim] - extent, extent)
    head.copy_(tail * (1 - w).to(tile.dtype) + head * w.to(tile.dtype))


# ─── checkpoints written by diffusers and by the original LDM code ─────────────────────────────────────

_LDM_ATTENTION = {"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"}


def single_file_names(shapes: Shapes) -> tuple[SingleFileNames, dict[str, Any]]:
    """LDM VAE keys (`first_stage_model.` stripped) → ours (`down.i.block.j` → `down_blocks.i.resnets.j`,
    decoder `up` levels numbered from the bottom, `mid.attn_1.{norm,q,k,v,proj_out}` → `group_norm, to_q, …`,
    1×1-conv kernels squeezed), and the architecture the shapes show. Raises `Unreadable`."""
    reader = ShapeReader(shapes)
    levels = len({m.group(1) for k in shapes if (m := re.match(r"decoder\.up\.(\d{1,9})\.", k))})

    def up(match: re.Match[str]) -> int:  # LDM numbers decoder levels from the bottom, diffusers from the top
        return levels - 1 - int(match.group(1))

    names: SingleFileNames = {}
    for key in shapes:
        ours, squeeze = key, False
        ours = re.sub(r"^(encoder|decoder)\.norm_out\.", r"\1.conv_norm_out.", ours)
        ours = re.sub(r"\.down\.(\d{1,9})\.block\.", r".down_blocks.\1.resnets.", ours)
        ours = re.sub(r"\.down\.(\d{1,9})\.downsample\.", r".down_blocks.\1.downsamplers.0.", ours)
        ours = re.sub(r"\.up\.(\d{1,9})\.block\.", lambda m: f".up_blocks.{up(m)}.resnets.", ours)
        ours = re.sub(r"\.up\.(\d{1,9})\.upsample\.", lambda m: f".up_blocks.{up(m)}.upsamplers.0.", ours)
        ours = re.sub(r"\.mid\.block_(\d)\.", lambda m: f".mid_block.resnets.{int(m.group(1)) - 1}.", ours)
        ours = ours.replace(".nin_shortcut.", ".conv_shortcut.")
        if m := re.match(r"(encoder|decoder)\.mid\.attn_1\.(norm|q|k|v|proj_out)\.(weight|bias)$", key):
            ours = f"{m.group(1)}.mid_block.attentions.0.{_LDM_ATTENTION[m.group(2)]}.{m.group(3)}"
            squeeze = m.group(2) != "norm" and len(shapes[key]) == 4 and shapes[key][2:] == (1, 1)
        names[ours] = FileTensor(key, squeeze)
    encoder_levels = sorted({int(m.group(1)) for k in shapes if (m := re.match(r"encoder\.down\.(\d{1,9})\.", k))})
    per_level = len({m.group(1) for k in shapes if (m := re.match(r"encoder\.down\.0\.block\.(\d{1,9})\.", k))})
    architecture = {
        "in_channels": reader.dim("encoder.conv_in.weight", 1, 4),
        "out_channels": reader.dim("decoder.conv_out.weight", 0, 4),
        "block_out_channels": [
            reader.dim(f"encoder.down.{i}.block.0.conv2.weight", 0, 4) for i in encoder_levels or [0]
        ],
        "down_block_types": ["DownEncoderBlock2D"] * len(encoder_levels),
        "up_block_types": ["UpDecoderBlock2D"] * levels,
        "layers_per_block": per_level,
        "latent_channels": reader.dim("decoder.conv_in.weight", 1, 4),
        "use_quant_conv": "quant_conv.weight" in shapes,
        "use_post_quant_conv": "post_quant_conv.weight" in shapes,
        "mid_block_add_attention": "encoder.mid.attn_1.q.weight" in shapes,
    }
    reader.check()
    return names, architecture


CHECKPOINT_LAYOUT = CheckpointLayout(
    diffusers_subfolder="vae",
    diffusers_weights_stem="diffusion_pytorch_model",
    diffusers_classes=("AutoencoderKL",),
    # diffusers' AutoencoderKL config keys that Config leaves out, at the value that means "feature off"
    diffusers_left_out={"act_fn": "silu", "shift_factor": None, "latents_mean": None, "latents_std": None},
    single_file_prefix=single_file.VAE,
    single_file_family=single_file.FAMILY,
    single_file_names=single_file_names,
)

SPEC = ComponentSpec(
    kind="encoder",
    name="vae-kl",
    factory=AutoencoderKL,
    config=Config,
    example_config={
        "block_out_channels": [16, 32],
        "down_block_types": ["DownEncoderBlock2D"] * 2,
        "up_block_types": ["UpDecoderBlock2D"] * 2,
        "layers_per_block": 1,
        "norm_num_groups": 8,
        "sample_size": 32,
    },
    description="Stable Diffusion's KL autoencoder (defaults: SD 1.x, f=8); diffusers weights load as is",
    checkpoint_layout=CHECKPOINT_LAYOUT,
)


@hookimpl
def diffstack_components():
    return [SPEC]
