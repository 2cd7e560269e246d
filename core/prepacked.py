"""Convolutions and linear layers whose weights are reordered once into oneDNN's layout (CPU, float32
inference).

PyTorch's eager convolution on the CPU reorders the weight into oneDNN's blocked layout on every call. For
the wide, low-resolution convolutions of a U-Net that reorder costs more than the arithmetic (measured here,
one thread: a 1280-channel 3×3 conv on a 2×1280×4×4 input takes 115 ms channels_last, 47 ms prepacked).
Linear layers go through oneDNN's matmul on a packed weight too, a few per cent faster than the default
sgemm on this class of CPU. inductor's `freezing` does the same when it compiles; this does it without
compiling.

It uses oneDNN ops that PyTorch exposes without a stability promise (`torch.ops.mkldnn.
_reorder_convolution_weight`, `_convolution_pointwise`, `_reorder_linear_weight`, `_linear_pointwise`), so
it only switches on where they exist, and every call they do not cover — autograd, another device or dtype,
a changed weight — takes the plain path. A weight is packed for the input's shape (oneDNN chooses the
blocking by shape; a pack made without it is up to 40× slower for narrow convs) on the first call and again
when the shape or the weight changes. Values equal the plain layer's up to float rounding; convolution
outputs come out channels_last.
"""
from __future__ import annotations

import torch
from torch import nn

OPS = ("_reorder_convolution_weight", "_convolution_pointwise", "_reorder_linear_weight", "_linear_pointwise")


def available() -> bool:
    """Whether this torch build has the oneDNN ops (CPU builds with mkldnn)."""
    return torch.backends.mkldnn.is_available() and all(hasattr(torch.ops.mkldnn, name) for name in OPS)


class PrepackedForward:
    """Replaces `layer.forward`: the oneDNN op on a packed weight when it applies, else the class's forward."""

    def __init__(self, layer: nn.Conv2d | nn.Linear) -> None:
        self.layer = layer
        self.packed: torch.Tensor | None = None
        self.key: tuple[int, tuple[int, ...]] | None = None

    def _applies(self, x: torch.Tensor) -> bool:
        weight = self.layer.weight
        return (
            x.device.type == "cpu" and weight.device.type == "cpu" and x.dtype == weight.dtype == torch.float32
            and not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad))
        )

    def _weight(self, x: torch.Tensor) -> torch.Tensor:
        key = (self.layer.weight._version, tuple(x.shape))
        if key != self.key:
            self.packed = self._pack(self.layer.weight.detach(), x)
            self.key = key
        return self.packed

    def _pack(self, weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class PrepackedConv2d(PrepackedForward):
    def _pack(self, weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        conv = self.layer
        return torch.ops.mkldnn._reorder_convolution_weight(
            weight, list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups, list(x.shape)
        )

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        conv = self.layer
        if not (self._applies(x) and x.ndim == 4):
            return nn.Conv2d.forward(conv, x)
        return torch.ops.mkldnn._convolution_pointwise(
            x, self._weight(x), conv.bias, list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups,
            "none", [], "",
        )


class PrepackedLinear(PrepackedForward):
    def _pack(self, weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._reorder_linear_weight(weight, x.numel() // x.shape[-1])

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if not (self._applies(x) and x.ndim >= 2):
            return nn.Linear.forward(self.layer, x)
        return torch.ops.mkldnn._linear_pointwise(x, self._weight(x), self.layer.bias, "none", [], "")


def prepack(module: nn.Module) -> int:
    """Give every plain `nn.Linear` and zero-padded `nn.Conv2d` in `module` a prepacked forward; returns how
    many. A no-op (0) where the oneDNN ops are missing; layers already prepacked are left as they are."""
    if not available():
        return 0
    count = 0
    for layer in module.modules():
        if isinstance(layer.forward, PrepackedForward):
            continue
        if type(layer) is nn.Conv2d and layer.padding_mode == "zeros" and not isinstance(layer.padding, str):
            layer.forward = PrepackedConv2d(layer)
        elif type(layer) is nn.Linear:
            layer.forward = PrepackedLinear(layer)
        else:
            continue
        count += 1
    return count
