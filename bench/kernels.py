"""Convolution kernels (CPU, float32): the 3×3 convolutions of SD 1.5's U-Net and VAE decoder as torch's
`conv2d` runs them for diffusers (NCHW, weights reordered on every call) against diffstack's prepacked plan
(`core.prepacked` with Winograd, as `--fast` sets it up; channels_last). Not in the default run: `--only
kernels` (about 20 s on two cores). `max |Δ|` is each side's largest error against a float64 convolution.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from bench.row import Row
from bench.timing import measure
from core import prepacked

SHAPES = [  # (batch, channels in, channels out, side): where SD 1.5 spends its convolution time at 256²
    (2, 320, 320, 32),
    (2, 640, 640, 16),
    (2, 1280, 1280, 8),
    (2, 1280, 1280, 4),  # U-Net, batch 2 (CFG)
    (1, 512, 512, 64),
    (1, 256, 256, 128),
    (1, 128, 128, 256),  # VAE decoder
]


def rows(device: torch.device, repeats: int) -> list[Row]:
    if device.type != "cpu" or not prepacked.available():
        return []
    out = []
    generator = torch.Generator().manual_seed(0)
    for batch, c_in, c_out, side in SHAPES:
        conv = nn.Conv2d(c_in, c_out, 3, padding=1).requires_grad_(False)
        nn.init.normal_(conv.weight, std=(9 * c_in) ** -0.5, generator=generator)
        x = torch.randn(batch, c_in, side, side, generator=generator)
        fast = copy.deepcopy(conv).to(memory_format=torch.channels_last)
        prepacked.prepack(fast, winograd=True)
        x_last = x.contiguous(memory_format=torch.channels_last)
        exact = F.conv2d(x.double(), conv.weight.double(), conv.bias.double(), padding=1)
        with torch.inference_mode():
            results = measure({"ours": lambda: fast(x_last), "torch": lambda: conv(x)}, device, repeats)
        errors = {name: (r.output.double() - exact).abs().max().item() for name, r in results.items()}
        out.append(
            Row(
                "conv 3×3",
                f"{batch}×{c_in}→{c_out}×{side}×{side}",
                results["ours"].median,
                results["torch"].median,
                note=f"max |Δ| vs float64: ours {errors['ours']:.1e}, torch {errors['torch']:.1e}",
            )
        )
    return out
