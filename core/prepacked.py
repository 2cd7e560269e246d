"""Convolutions and linear layers whose weights are reordered once into oneDNN's layout (CPU, float32
inference).

PyTorch's eager convolution on the CPU reorders the weight into oneDNN's blocked layout on every call. For
the wide, low-resolution convolutions of a U-Net that reorder costs more than the arithmetic. Large linear
layers go through oneDNN's matmul on a packed weight too, faster than the default sgemm (small ones stay on
sgemm: oneDNN's fixed cost per call loses there). A 1×1 convolution on a channels_last input is that matmul
over the pixels (oneDNN's convolution costs a fixed set-up per call, more than a small model's whole layer).
inductor's `freezing` does much the same when it compiles; this does it without compiling. With `winograd`,
wide 3×3 convolutions take Winograd's algorithm instead (`core.winograd`), faster than the packed direct
convolution where it applies. bench/RESULTS.md has the measurements.

It uses oneDNN ops that PyTorch exposes without a stability promise (`torch.ops.mkldnn.
_reorder_convolution_weight`, `_convolution_pointwise`, `_reorder_linear_weight`, `_linear_pointwise`), so
it only switches on where they exist, and every call they do not cover — autograd, another device or dtype,
a changed weight — takes the plain path. A weight is packed for the input's shape (oneDNN chooses the
blocking by shape; a pack made without it is much slower for narrow convs; the choice of Winograd, of
the matmul and of the linear threshold depend on it too) on the first call and again when the shape or the
weight changes. Values equal the plain layer's up to float rounding; convolution outputs come out
channels_last.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Generic, TypeVar, cast

import torch
import torch.nn.functional as F
from torch import nn

from core import winograd

OPS = ("_reorder_convolution_weight", "_convolution_pointwise", "_reorder_linear_weight", "_linear_pointwise")


def available() -> bool:
    """Whether this torch build has the oneDNN ops (CPU builds with mkldnn)."""
    return torch.backends.mkldnn.is_available() and all(hasattr(torch.ops.mkldnn, name) for name in OPS)


Plan = Callable[[torch.Tensor], torch.Tensor]
Layer = TypeVar("Layer", nn.Conv2d, nn.Linear)

LINEAR_MIN_WEIGHT = 2**19  # K·N: from here the packed weight pays at any batch (it is read once, in order)
LINEAR_MIN_WORK = 2**26  # M·K·N: smaller products are faster through the default sgemm (oneDNN's per-call set-up)


class PrepackedForward(Generic[Layer]):
    """Replaces `layer.forward`: per input shape and layout (and weight version) a plan — the oneDNN op on a packed
    weight, Winograd on transformed filters, or the class's own forward — chosen once and reused."""

    def __init__(self, layer: Layer, winograd: bool = False) -> None:
        self.layer: Layer = layer
        self.winograd = winograd
        self.plan: Plan | None = None
        self.key: tuple[int, tuple[int, ...], tuple[int, ...]] | None = None

    def _applies(self, x: torch.Tensor) -> bool:
        weight = self.layer.weight
        return (
            x.device.type == "cpu"
            and weight.device.type == "cpu"
            and x.dtype == weight.dtype == torch.float32
            and not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad))
        )

    def plain(self, x: torch.Tensor) -> torch.Tensor:
        return type(self.layer).forward(self.layer, x)

    def __deepcopy__(self, memo: dict[int, object]) -> PrepackedForward[Layer]:
        """A copied layer gets its own forward with no plan: plans hold the packed weights of this layer."""
        return type(self)(copy.deepcopy(self.layer, memo), self.winograd)

    def __call__(self, input: torch.Tensor) -> torch.Tensor:
        if not self._applies(input):
            return self.plain(input)
        key = (self.layer.weight._version, tuple(input.shape), input.stride())
        if self.plan is None or key != self.key:
            self.plan, self.key = self._plan(self.layer.weight.detach(), input), key
        return self.plan(input)

    def _plan(self, weight: torch.Tensor, x: torch.Tensor) -> Plan:
        raise NotImplementedError


def linear_plan(weight: torch.Tensor, bias: torch.Tensor | None, rows: int) -> Plan:
    """x (…, K) @ weight (N, K)ᵀ + bias for `rows` rows of x: oneDNN on a packed weight where the product is
    big enough to pay its fixed cost, the default sgemm otherwise."""
    n, k = weight.shape
    if k * n < LINEAR_MIN_WEIGHT and rows * k * n < LINEAR_MIN_WORK:
        return lambda x: F.linear(x, weight, bias)
    packed = torch.ops.mkldnn._reorder_linear_weight(weight, rows)
    return lambda x: torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")


def _is_pointwise(conv: nn.Conv2d) -> bool:
    return (
        tuple(conv.kernel_size) == (1, 1)
        and tuple(conv.stride) == (1, 1)
        and tuple(conv.padding) == (0, 0)
        and conv.groups == 1
    )


class PrepackedConv2d(PrepackedForward[nn.Conv2d]):
    def _plan(self, weight: torch.Tensor, x: torch.Tensor) -> Plan:
        conv = self.layer
        if x.ndim != 4:
            return self.plain
        if self.winograd and winograd.suits(conv, x):
            filters = winograd.transform_weight(weight)
            return lambda x: winograd.conv3x3(x, filters, conv.bias)
        if _is_pointwise(conv) and x.is_contiguous(memory_format=torch.channels_last):
            # a 1×1 conv on NHWC is a matmul over the pixels, without oneDNN's per-call convolution set-up
            b, c, h, w = x.shape
            matmul = linear_plan(weight.view(weight.shape[0], c), conv.bias, b * h * w)
            return lambda x: matmul(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        padding = cast(tuple[int, ...], conv.padding)  # prepack() leaves out string padding ("same", "valid")
        geometry = (list(padding), list(conv.stride), list(conv.dilation), conv.groups)
        packed = torch.ops.mkldnn._reorder_convolution_weight(weight, *geometry, list(x.shape))
        return lambda x: torch.ops.mkldnn._convolution_pointwise(x, packed, conv.bias, *geometry, "none", [], "")


class PrepackedLinear(PrepackedForward[nn.Linear]):
    def _plan(self, weight: torch.Tensor, x: torch.Tensor) -> Plan:
        if x.ndim < 2:
            return self.plain
        return linear_plan(weight, self.layer.bias, x.numel() // x.shape[-1])


def prepack(module: nn.Module, winograd: bool = False) -> int:
    """Give every plain `nn.Linear` and zero-padded `nn.Conv2d` in `module` a prepacked forward (with
    `winograd`, wide 3×3 convolutions go through `core.winograd`); returns how many. A no-op (0) where the
    oneDNN ops are missing; layers already prepacked are left as they are."""
    if not available():
        return 0
    count = 0
    for layer in module.modules():
        if isinstance(layer.forward, PrepackedForward):
            continue
        # the ignores: an instance attribute `forward` overrides the method, which torch allows and its stubs do not
        if type(layer) is nn.Conv2d and layer.padding_mode == "zeros" and not isinstance(layer.padding, str):
            layer.forward = PrepackedConv2d(layer, winograd)  # type: ignore[method-assign]
        elif type(layer) is nn.Linear:
            layer.forward = PrepackedLinear(layer)  # type: ignore[method-assign]
        else:
            continue
        count += 1
    return count
