"""3×3 convolutions by Winograd's minimal filtering F(2×2, 3×3) (Lavin & Gray, 2016), in plain PyTorch ops.

A direct 3×3 convolution spends 9 multiply-adds per output pixel and channel pair; Winograd's algorithm
spends 4, plus cheap transforms (additions only) of the input tiles and the outputs:

    Y = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d B) ] A        per 4×4 input tile d → 2×2 output tile Y, 3×3 filter g

The filter transform U = G g Gᵀ is done once (`transform_weight`); per call the input tiles are transformed,
the 16 tile positions become 16 matrix products (tiles × C_in) @ (C_in × C_out), one `bmm`, and the output
transform adds them back into 2×2 pixels. Where the channels are wide that product dominates and the whole
convolution is faster than oneDNN's direct one (bench/RESULTS.md has the measurements); where they are
narrow the transforms (memory-bound) lose, so `suits` wants ≥ MIN_CHANNELS channels in and out. The values equal
the direct convolution's up to float32 rounding (measured error against float64 below oneDNN's own).
"""

from __future__ import annotations

import torch
from torch import nn

MIN_CHANNELS = 256  # narrower convolutions are faster direct (the transforms are memory-bound)
MIN_TILES = 32  # fewer 2×2 output tiles than this (over the batch) make the 16 products too small to pay

G = ((1.0, 0.0, 0.0), (0.5, 0.5, 0.5), (0.5, -0.5, 0.5), (0.0, 0.0, 1.0))


def suits(conv: nn.Conv2d, x: torch.Tensor) -> bool:
    """Whether `conv` on `x` (B, C, H, W) is a stride-1, padding-1, ungrouped 3×3 convolution wide enough
    (≥ MIN_CHANNELS in and out) and large enough (≥ MIN_TILES output tiles) for Winograd to pay."""
    b, _, h, w = x.shape
    return (
        tuple(conv.kernel_size) == (3, 3)
        and tuple(conv.stride) == (1, 1)
        and tuple(conv.padding) == (1, 1)
        and tuple(conv.dilation) == (1, 1)
        and conv.groups == 1
        and conv.padding_mode == "zeros"
        and min(conv.in_channels, conv.out_channels) >= MIN_CHANNELS
        and b * ((h + 1) // 2) * ((w + 1) // 2) >= MIN_TILES
    )


def transform_weight(weight: torch.Tensor) -> torch.Tensor:
    """3×3 filters (C_out, C_in, 3, 3) → U = G g Gᵀ as (16, C_in, C_out), computed in float64."""
    g = torch.tensor(G, dtype=torch.float64, device=weight.device)
    u = torch.einsum("ai,kcij,bj->abck", g, weight.detach().double(), g)
    return u.reshape(16, weight.shape[1], weight.shape[0]).to(weight.dtype).contiguous()


def _transform_pairs(rows: list[torch.Tensor], out: torch.Tensor) -> None:
    """Bᵀ along one axis: four strided views d0..d3 → out[0..3] = d0−d2, d1+d2, d2−d1, d1−d3."""
    d0, d1, d2, d3 = rows
    torch.sub(d0, d2, out=out[0])
    torch.add(d1, d2, out=out[1])
    torch.sub(d2, d1, out=out[2])
    torch.sub(d1, d3, out=out[3])


def conv3x3(x: torch.Tensor, u: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """The 3×3, stride-1, zero-padding-1 convolution of `x` (B, C_in, H, W), any H and W, with transformed
    filters `u` (16, C_in, C_out) from `transform_weight` → (B, C_out, H, W), channels_last."""
    batch, channels, height, width = x.shape
    out_channels = u.shape[2]
    th, tw = (height + 1) // 2, (width + 1) // 2  # 2×2 output tiles; an odd edge computes one extra, cropped
    padded = x.new_zeros(batch, 2 * th + 2, 2 * tw + 2, channels)  # NHWC, 1 pixel of zeros round the image
    padded[:, 1 : height + 1, 1 : width + 1] = x.permute(0, 2, 3, 1)

    rows = x.new_empty(4, batch, th, 2 * tw + 2, channels)  # Bᵀ d: tile row i reads padded rows 2t + i
    _transform_pairs([padded[:, i : i + 2 * th : 2] for i in range(4)], rows)
    tiles = x.new_empty(4, 4, batch, th, tw, channels)  # (Bᵀ d) B: tile column j reads columns 2t + j
    _transform_pairs([rows[:, :, :, j : j + 2 * tw : 2] for j in range(4)], tiles.transpose(0, 1))

    m = torch.bmm(tiles.view(16, -1, channels), u).view(4, 4, batch, th, tw, out_channels)
    if bias is not None:
        m[1, 1] += bias  # Aᵀ's column 1 is all ones: adding here adds to all four output pixels
    s0, s1 = m[0] + m[1] + m[2], m[1] - m[2] - m[3]  # Aᵀ along tile rows
    y = x.new_empty(batch, th, 2, tw, 2, out_channels)
    for r, s in enumerate((s0, s1)):  # … and along tile columns
        torch.add(s[0] + s[1], s[2], out=y[:, :, r, :, 0])
        torch.sub(s[1] - s[2], s[3], out=y[:, :, r, :, 1])
    y = y.view(batch, 2 * th, 2 * tw, out_channels)
    if (2 * th, 2 * tw) != (height, width):
        y = y[:, :height, :width].contiguous()
    return y.permute(0, 3, 1, 2)
