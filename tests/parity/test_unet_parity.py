"""Parity of `unet2d-condition` with diffusers' `UNet2DConditionModel` (test-only oracle): same random weights,
loaded by key with no mapping, fp32, max |ours − diffusers| ≤ 1e-5 × the output's scale."""

from __future__ import annotations

import pytest
import torch

from plugins.unet import Config, UNet2DCondition

diffusers = pytest.importorskip("diffusers")

CROSS_ATTN, PLAIN = ("CrossAttnDownBlock2D", "CrossAttnUpBlock2D"), ("DownBlock2D", "UpBlock2D")


def blocks(*attention: bool) -> dict[str, tuple[str, ...]]:
    """down/up block types for levels with (True) or without cross-attention, the up path mirrored."""
    down = tuple(CROSS_ATTN[0] if a else PLAIN[0] for a in attention)
    up = tuple(CROSS_ATTN[1] if a else PLAIN[1] for a in reversed(attention))
    return {"down_block_types": down, "up_block_types": up}


CONFIGS = {
    "2-levels-lpb1": dict(
        block_out_channels=(32, 64),
        layers_per_block=1,
        attention_head_dim=2,
        cross_attention_dim=24,
        norm_num_groups=8,
        **blocks(True, False),
    ),
    "4-levels-lpb2-head-list": dict(
        block_out_channels=(16, 32, 32, 64),
        layers_per_block=2,
        attention_head_dim=(2, 4, 4, 8),
        cross_attention_dim=16,
        norm_num_groups=8,
        **blocks(True, True, True, False),
    ),
    "linear-projection-upcast": dict(
        block_out_channels=(32, 32, 64),
        layers_per_block=1,
        attention_head_dim=(4, 2, 8),
        cross_attention_dim=32,
        norm_num_groups=16,
        use_linear_projection=True,
        upcast_attention=True,
        **blocks(True, True, True),
    ),
    "sd-layout-2-layer-transformers": dict(
        block_out_channels=(16, 32, 64, 64),
        layers_per_block=1,
        attention_head_dim=4,
        cross_attention_dim=8,
        norm_num_groups=8,
        transformer_layers_per_block=2,
        flip_sin_to_cos=False,
        freq_shift=1,
        norm_eps=1e-6,
        in_channels=3,
        out_channels=5,
        **blocks(True, True, True, False),
    ),
    "plain-first-level": dict(
        block_out_channels=(16, 32),
        layers_per_block=2,
        attention_head_dim=(1, 4),
        cross_attention_dim=12,
        norm_num_groups=4,
        use_linear_projection=True,
        **blocks(False, True),
    ),
}


def pair(config: dict) -> tuple[torch.nn.Module, UNet2DCondition]:
    torch.manual_seed(0)
    reference = diffusers.UNet2DConditionModel(**config).eval()
    with torch.no_grad():  # move every weight off its init value (norms at 1 and 0) so each one matters
        for p in reference.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    ours = UNet2DCondition(Config(**config)).eval()
    ours.load_state_dict(reference.state_dict(), strict=True)  # same key names, no mapping
    return reference, ours


def assert_parity(ours: torch.Tensor, reference: torch.Tensor) -> None:
    scale = max(1.0, reference.abs().max().item())
    error = (ours - reference).abs().max().item()
    assert error <= 1e-5 * scale, f"max |ours - diffusers| = {error:.3g} at output scale {scale:.3g}"


@pytest.mark.parametrize("name", CONFIGS)
def test_matches_diffusers(name: str) -> None:
    config = CONFIGS[name]
    reference, ours = pair(config)
    sample = torch.randn(2, config.get("in_channels", 4), 16, 16)
    context = torch.randn(2, 7, config["cross_attention_dim"])
    with torch.inference_mode():
        for timestep in (999.5, torch.tensor([3, 571])):  # other timestep forms: the contract suite
            assert_parity(ours(sample, timestep, context), reference(sample, timestep, context).sample)


def test_odd_latent_size_matches_diffusers() -> None:
    config = CONFIGS["4-levels-lpb2-head-list"]
    reference, ours = pair(config)
    sample, context = torch.randn(1, 4, 13, 10), torch.randn(1, 5, config["cross_attention_dim"])
    with torch.inference_mode():
        assert_parity(ours(sample, 17, context), reference(sample, 17, context).sample)
