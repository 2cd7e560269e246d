"""Parity of `vae-kl` with diffusers' `AutoencoderKL` (test-only oracle): same random weights, loaded by key with
no mapping, fp32, max |ours − diffusers| ≤ 1e-5 × the output's scale. diffusers leaves scaling to its
pipelines, so ours is compared with `scaling_factor · encode(x)` and `decode(latents / scaling_factor)`, the
latter clamped to [-1, 1] as diffusers' image post-processing does and our Encoder interface requires."""

from __future__ import annotations

import pytest
import torch

from plugins.vae_kl import AutoencoderKL, Config

diffusers = pytest.importorskip("diffusers")


def levels(n: int) -> dict[str, tuple[str, ...]]:
    return {"down_block_types": ("DownEncoderBlock2D",) * n, "up_block_types": ("UpDecoderBlock2D",) * n}


CONFIGS = {
    "2-levels-lpb1": dict(
        block_out_channels=(16, 32), layers_per_block=1, norm_num_groups=8, sample_size=16, **levels(2)
    ),
    "4-levels-lpb2": dict(
        block_out_channels=(8, 16, 16, 32),
        layers_per_block=2,
        norm_num_groups=8,
        latent_channels=3,
        sample_size=32,
        scaling_factor=0.13025,
        **levels(4),
    ),
    "3-levels-no-quant-conv": dict(
        block_out_channels=(16, 16, 32),
        layers_per_block=1,
        norm_num_groups=4,
        use_quant_conv=False,
        use_post_quant_conv=False,
        in_channels=1,
        out_channels=2,
        sample_size=16,
        **levels(3),
    ),
    "no-mid-attention": dict(
        block_out_channels=(8, 16),
        layers_per_block=2,
        norm_num_groups=8,
        mid_block_add_attention=False,
        latent_channels=8,
        sample_size=16,
        **levels(2),
    ),
}


def pair(config: dict, **ours_options: bool) -> tuple[torch.nn.Module, AutoencoderKL]:
    torch.manual_seed(0)
    reference = diffusers.AutoencoderKL(**config).eval()
    with torch.no_grad():  # move every weight off its init value (norms at 1 and 0) so each one matters
        for p in reference.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    ours = AutoencoderKL(Config(**config, **ours_options)).eval()
    ours.load_state_dict(reference.state_dict(), strict=True)  # same key names, no mapping
    return reference, ours


def assert_parity(ours: torch.Tensor, reference: torch.Tensor) -> None:
    scale = max(1.0, reference.abs().max().item())
    error = (ours - reference).abs().max().item()
    assert ours.shape == reference.shape
    assert error <= 1e-5 * scale, f"max |ours - diffusers| = {error:.3g} at output scale {scale:.3g}"


@pytest.mark.parametrize("name", CONFIGS)
def test_matches_diffusers(name: str) -> None:
    config = CONFIGS[name]
    reference, ours = pair(config)
    s, f = ours.scaling_factor, ours.downsample_factor
    images = torch.rand(2, config.get("in_channels", 3), 3 * f, 2 * f) * 2 - 1
    latents = torch.randn(2, ours.latent_channels, 5, 3)
    with torch.inference_mode():
        posterior = reference.encode(images).latent_dist
        assert_parity(ours.encode(images, sample=False), posterior.mode() * s)
        drawn = ours.encode(images, generator=torch.Generator().manual_seed(7))
        assert_parity(drawn, posterior.sample(torch.Generator().manual_seed(7)) * s)
        assert_parity(ours.decode(latents), reference.decode(latents / s).sample.clamp(-1, 1))
        assert_parity(ours.decoder(latents), reference.decoder(latents))  # unclamped, all values


@pytest.mark.parametrize("name", ["2-levels-lpb1", "4-levels-lpb2"])
def test_tiled_and_sliced_decode_match_diffusers(name: str) -> None:
    config = CONFIGS[name]
    reference, ours = pair(config, decode_tiling=True, decode_slicing=True)
    reference.enable_tiling()
    reference.enable_slicing()
    tile = config["sample_size"] // ours.downsample_factor
    latents = torch.randn(2, ours.latent_channels, tile + 1, tile + 2)  # 2×2 tiles with ragged edges
    with torch.inference_mode():
        assert_parity(ours.decode(latents), reference.decode(latents / ours.scaling_factor).sample.clamp(-1, 1))
