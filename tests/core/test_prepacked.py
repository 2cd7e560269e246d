"""Prepacked oneDNN convolutions and linear layers (`core.prepacked`): the plain layer's values, the plain
path wherever the packed one does not apply, and a fresh pack after the weights or the input shape change."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from core import prepacked
from core.prepacked import PrepackedForward, available, prepack

pytestmark = pytest.mark.skipif(not available(), reason="this torch build has no oneDNN convolution ops")


@pytest.mark.parametrize(
    "make",
    [
        lambda: nn.Conv2d(8, 16, 3, padding=1),
        lambda: nn.Conv2d(16, 16, 3, stride=2, padding=1),
        lambda: nn.Conv2d(12, 6, 1),
        lambda: nn.Conv2d(8, 8, 3, padding=1, groups=4, bias=False),
    ],
    ids=["3x3", "stride-2", "1x1", "grouped-no-bias"],
)
@pytest.mark.parametrize("channels_last", [False, True])
def test_prepacked_equals_plain(make, channels_last: bool):
    torch.manual_seed(0)
    conv = make()
    x = torch.randn(2, conv.in_channels, 9, 7)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        expected = conv(x)
        assert prepack(conv) == 1
        assert isinstance(conv.forward, PrepackedForward)
        torch.testing.assert_close(conv(x), expected, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(conv(x[:1, :, :5]), nn.Conv2d.forward(conv, x[:1, :, :5]), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("shape", [(5, 12), (2, 7, 12), (3, 2, 4, 12)])
def test_prepacked_linear_equals_plain(shape: tuple[int, ...]):
    torch.manual_seed(0)
    linear, plain = nn.Linear(12, 9), nn.Linear(12, 9, bias=False)
    assert prepack(linear) == 1 and prepack(plain) == 1
    x = torch.randn(shape)
    with torch.no_grad():
        torch.testing.assert_close(linear(x), nn.Linear.forward(linear, x), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(plain(x), nn.Linear.forward(plain, x), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(
            linear(x[..., :1, :]), nn.Linear.forward(linear, x[..., :1, :]), atol=1e-5, rtol=1e-5
        )


def test_autograd_and_other_dtypes_take_the_plain_path():
    conv = nn.Conv2d(4, 4, 3, padding=1)
    prepack(conv)
    x = torch.randn(1, 4, 6, 6, requires_grad=True)
    conv(x).sum().backward()  # the packed op has no backward: this must go through the plain conv
    assert x.grad is not None and conv.weight.grad is not None
    with torch.no_grad():
        half = conv.to(torch.bfloat16)(x.detach().bfloat16())
    assert half.dtype == torch.bfloat16


def test_changed_weights_are_packed_again():
    conv = nn.Conv2d(4, 4, 3, padding=1)
    prepack(conv)
    x = torch.randn(1, 4, 6, 6)
    with torch.no_grad():
        conv(x)
        conv.weight.mul_(2.0)
        torch.testing.assert_close(conv(x), nn.Conv2d.forward(conv, x), atol=1e-5, rtol=1e-5)


def test_unet_forward_unchanged_and_packing_idempotent():
    from plugins import unet as unet_plugin

    torch.manual_seed(0)
    spec = unet_plugin.diffstack_components()[0]
    unet = spec.build(spec.config(**spec.example_config)).eval()
    sample, context = torch.randn(2, 4, 8, 8), torch.randn(2, 5, unet.context_dim)
    with torch.no_grad():
        expected = unet(sample, 10, context)
        count = prepack(unet)
        assert count == sum(type(m) in (nn.Conv2d, nn.Linear) for m in unet.modules())
        assert prepack(unet) == 0
        torch.testing.assert_close(unet(sample, 10, context), expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(
    "rows, features, packed",
    [(8, 16, False), (4096, 256, True), (2, 1024, True)],
    ids=["small-sgemm", "large-work", "large-weight"],
)
def test_linear_plan_packs_only_large_products(rows: int, features: int, packed: bool, monkeypatch):
    reorders = []
    reorder = torch.ops.mkldnn._reorder_linear_weight
    monkeypatch.setattr(torch.ops.mkldnn, "_reorder_linear_weight", lambda *a: reorders.append(a[1]) or reorder(*a))
    torch.manual_seed(0)
    linear = nn.Linear(features, features)
    x = torch.randn(rows, features)
    with torch.no_grad():
        plan = prepacked.linear_plan(linear.weight, linear.bias, rows)
        torch.testing.assert_close(plan(x), nn.Linear.forward(linear, x), atol=1e-4, rtol=1e-4)
    assert reorders == ([rows] if packed else [])


def test_pointwise_conv_on_channels_last_is_a_matmul_and_other_layouts_still_work():
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 5, 1)
    x = torch.randn(2, 8, 6, 4)
    x_last = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        expected = nn.Conv2d.forward(conv, x)
        prepack(conv)
        for inputs in (x_last, x, x_last):  # same shape, the layout changes: a plan per layout
            y = conv(inputs)
            torch.testing.assert_close(y, expected, atol=1e-5, rtol=1e-5)
    assert conv(x_last).is_contiguous(memory_format=torch.channels_last)


def test_a_deep_copy_packs_its_own_weights():
    conv = nn.Conv2d(4, 4, 3, padding=1)
    prepack(conv)
    x = torch.randn(1, 4, 6, 6)
    with torch.no_grad():
        conv(x)
        twin = copy.deepcopy(conv)
        twin.weight.copy_(torch.randn_like(twin.weight))
        assert twin.forward.layer is twin and twin.forward.plan is None
        torch.testing.assert_close(twin(x), nn.Conv2d.forward(twin, x), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(conv(x), nn.Conv2d.forward(conv, x), atol=1e-5, rtol=1e-5)
