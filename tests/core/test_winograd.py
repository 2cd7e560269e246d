"""Winograd F(2×2, 3×3) convolutions (`core.winograd`): the direct convolution's values for any size, batch
and layout, the shapes it accepts, and its use by prepacked convolutions."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from core import prepacked, winograd


@pytest.mark.parametrize("height, width", [(8, 8), (7, 5), (1, 1), (2, 9)])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("channels_last", [False, True])
def test_equals_the_direct_convolution(height: int, width: int, bias: bool, channels_last: bool):
    torch.manual_seed(0)
    x = torch.randn(3, 6, height, width)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    weight, b = torch.randn(5, 6, 3, 3) / 7, (torch.randn(5) if bias else None)
    with torch.no_grad():
        y = winograd.conv3x3(x, winograd.transform_weight(weight), b)
    expected = F.conv2d(x.double(), weight.double(), None if b is None else b.double(), padding=1)
    assert y.shape == (3, 5, height, width) and y.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(y.double(), expected, atol=1e-5, rtol=1e-5)


def test_transformed_filters_reproduce_each_tap():
    """U = G g Gᵀ for a single-tap filter gives that tap's shifted copy of the input."""
    x = torch.arange(1.0, 17.0).view(1, 1, 4, 4)
    for i in range(3):
        for j in range(3):
            weight = torch.zeros(1, 1, 3, 3)
            weight[0, 0, i, j] = 1.0
            y = winograd.conv3x3(x, winograd.transform_weight(weight), None)
            torch.testing.assert_close(y, F.conv2d(x, weight, padding=1))


@pytest.mark.parametrize(
    "conv, shape, expected",
    [
        (nn.Conv2d(256, 256, 3, padding=1), (1, 256, 16, 16), True),
        (nn.Conv2d(256, 512, 3, padding=1), (2, 256, 8, 8), True),
        (nn.Conv2d(128, 128, 3, padding=1), (1, 128, 64, 64), False),  # narrow: the transforms lose
        (nn.Conv2d(256, 256, 3, padding=1), (1, 256, 4, 4), False),  # 4 tiles: too few
        (nn.Conv2d(256, 256, 3, stride=2, padding=1), (1, 256, 16, 16), False),
        (nn.Conv2d(256, 256, 1), (1, 256, 16, 16), False),
        (nn.Conv2d(256, 256, 3, padding=1, groups=2), (1, 256, 16, 16), False),
        (nn.Conv2d(256, 256, 3, padding=2, dilation=2), (1, 256, 16, 16), False),
    ],
    ids=["square", "wider-out", "narrow", "few-tiles", "stride-2", "1x1", "grouped", "dilated"],
)
def test_suits(conv: nn.Conv2d, shape: tuple[int, ...], expected: bool):
    assert winograd.suits(conv, torch.empty(shape, device="meta")) is expected


@pytest.fixture
def winograd_calls(monkeypatch: pytest.MonkeyPatch) -> list[torch.Size]:
    """The input shape of every `winograd.conv3x3` call made during the test."""
    calls = []
    direct = winograd.conv3x3
    monkeypatch.setattr(winograd, "conv3x3", lambda *args: calls.append(args[0].shape) or direct(*args))
    return calls


@pytest.mark.skipif(not prepacked.available(), reason="this torch build has no oneDNN convolution ops")
def test_prepacked_conv_takes_winograd_where_it_suits(winograd_calls: list[torch.Size]):
    torch.manual_seed(0)
    conv = nn.Conv2d(256, 256, 3, padding=1).eval()
    x = torch.randn(1, 256, 14, 10).contiguous(memory_format=torch.channels_last)
    prepacked.prepack(conv, winograd=True)
    with torch.no_grad():
        for inputs in (x, x[:, :, :4, :4]):  # 35 tiles, then 4: Winograd, then oneDNN
            expected = F.conv2d(inputs.double(), conv.weight.double(), conv.bias.double(), padding=1)
            torch.testing.assert_close(conv(inputs).double(), expected, atol=1e-4, rtol=1e-4)
    assert winograd_calls == [x.shape]


@pytest.mark.skipif(not prepacked.available(), reason="this torch build has no oneDNN convolution ops")
def test_wide_unet_forward_unchanged(winograd_calls: list[torch.Size]):
    from plugins import unet as unet_plugin

    torch.manual_seed(0)
    spec = unet_plugin.diffstack_components()[0]
    unet = spec.build(spec.config(**{**spec.example_config, "block_out_channels": [256, 256]})).eval()
    sample, context = torch.randn(2, 4, 8, 8), torch.randn(2, 5, unet.context_dim)
    with torch.no_grad():
        expected = unet(sample, 10, context)
        prepacked.prepack(unet.to(memory_format=torch.channels_last), winograd=True)
        torch.testing.assert_close(unet(sample, 10, context), expected, atol=1e-4, rtol=1e-4)
    assert winograd_calls  # the 256-channel convolutions at 8×8 went through Winograd
