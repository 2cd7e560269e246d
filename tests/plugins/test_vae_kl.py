"""`vae-kl`: the Encoder contract, scaling, posterior sampling, input errors, fp32 upcast, sliced/tiled decode."""

from __future__ import annotations

import logging

import pydantic
import pytest
import torch

import core
from core.contracts.encoder import EncoderContract
from core.devices import placement_dtype
from plugins import vae_kl as vae_plugin
from plugins.vae_kl import AutoencoderKL, Config

TINY = vae_plugin.diffstack_components()[0].example_config


def tiny(**overrides) -> AutoencoderKL:
    torch.manual_seed(0)
    return AutoencoderKL(Config(**{**TINY, **overrides})).eval()


class TestVAE(EncoderContract):
    @pytest.fixture
    def component(self) -> AutoencoderKL:
        return tiny()


def images(batch: int = 2, size: tuple[int, int] = (8, 12)) -> torch.Tensor:
    return torch.rand(batch, 3, *size, generator=torch.Generator().manual_seed(0)) * 2 - 1


def test_spec() -> None:
    (spec,) = vae_plugin.diffstack_components()
    assert (spec.kind, spec.name, spec.factory, spec.config) == ("encoder", "vae-kl", AutoencoderKL, Config)


def test_defaults_are_sd1() -> None:
    with torch.device("meta"):
        vae = AutoencoderKL(Config())
    assert sum(p.numel() for p in vae.parameters()) == 83_653_863
    assert (vae.latent_channels, vae.downsample_factor, vae.scaling_factor) == (4, 8, 0.18215)
    assert "encoder.mid_block.attentions.0.to_q.weight" in vae.state_dict()


def test_config_errors() -> None:
    with pytest.raises(pydantic.ValidationError, match="one entry per level"):
        Config(**{**TINY, "up_block_types": ["UpDecoderBlock2D"]})
    with pytest.raises(pydantic.ValidationError, match="not divisible by 5 groups"):
        Config(**{**TINY, "norm_num_groups": 5})
    with pytest.raises(pydantic.ValidationError, match="shift_factor"):
        Config(**{**TINY, "shift_factor": 0.1})


def test_scaling_factor_is_applied_inside_encode_and_decode() -> None:
    unit, scaled = tiny(scaling_factor=1.0), tiny(scaling_factor=0.5)
    x = images()
    with torch.inference_mode():
        torch.testing.assert_close(scaled.encode(x, sample=False), 0.5 * unit.encode(x, sample=False))
        latents = torch.randn(1, 4, 3, 2)
        torch.testing.assert_close(scaled.decode(latents), unit.decode(latents / 0.5))


def test_sample_draws_around_the_mode_with_the_generator() -> None:
    vae = tiny()
    x = images()
    with torch.inference_mode():
        mode = vae.encode(x, sample=False)
        first = vae.encode(x, generator=torch.Generator().manual_seed(1))
        again = vae.encode(x, generator=torch.Generator().manual_seed(1))
        other = vae.encode(x, generator=torch.Generator().manual_seed(2))
    assert torch.equal(first, again) and not torch.equal(first, other) and not torch.equal(first, mode)


@pytest.mark.parametrize("shape", [(1, 3, 7, 8), (1, 3, 8, 9), (1, 1, 8, 8), (3, 8, 8)])
def test_bad_image_shapes_are_input_errors(shape: tuple[int, ...]) -> None:
    with pytest.raises(core.InputError):
        tiny().encode(torch.zeros(shape))


def test_size_error_names_the_factor() -> None:
    with pytest.raises(core.InputError, match="not a multiple of the downsample factor 2"):
        tiny().encode(torch.zeros(1, 3, 8, 9))
    with pytest.raises(core.InputError, match=r"latents must be \(B, 4, h, w\)"):
        tiny().decode(torch.zeros(1, 3, 4, 4))


def test_force_upcast_keeps_float32_weights_for_float16(caplog: pytest.LogCaptureFixture) -> None:
    vae, plain = tiny(), tiny(force_upcast=False)
    latents = torch.randn(1, 4, 4, 4)
    with caplog.at_level(logging.INFO, logger="plugins.vae_kl"):
        assert placement_dtype(vae, torch.float16) == torch.float32
    assert "force_upcast keeps the VAE weights in float32" in caplog.text
    assert placement_dtype(plain, torch.float16) == torch.float16
    assert placement_dtype(vae, torch.bfloat16) == torch.bfloat16
    assert placement_dtype(torch.nn.Linear(2, 2), torch.float16) == torch.float16  # a part without a preference
    with torch.inference_mode():
        expected = vae.decode(latents)
        vae.to(placement_dtype(vae, torch.float16))
        plain.to("cpu", placement_dtype(plain, torch.float16))
        out = vae.decode(latents.half())
    assert vae.encoder.conv_in.weight.dtype == torch.float32 and out.dtype == torch.float16
    assert plain.encoder.conv_in.weight.dtype == torch.float16
    assert tiny().to(torch.bfloat16).decoder.conv_out.weight.dtype == torch.bfloat16
    assert (out.float() - expected).abs().max() < 1e-2


def test_bfloat16_decode_runs() -> None:
    vae = tiny().to(torch.bfloat16)
    with torch.inference_mode():
        out = vae.decode(torch.randn(1, 4, 3, 3, dtype=torch.bfloat16))
    assert out.dtype == torch.bfloat16 and bool(torch.isfinite(out).all())


def test_sliced_and_channels_last_decode_equal_plain() -> None:
    vae = tiny()
    latents = torch.randn(3, 4, 5, 6)
    with torch.inference_mode():
        expected = vae.decode(latents)
        for variant in (tiny(decode_slicing=True), tiny().to(memory_format=torch.channels_last)):
            variant.load_state_dict(vae.state_dict())
            torch.testing.assert_close(variant.decode(latents), expected, atol=1e-5, rtol=1e-5)


def test_tiled_decode_blends_tiles_of_sample_size() -> None:
    vae, tiled = tiny(sample_size=8), tiny(sample_size=8, decode_tiling=True)
    tiled.load_state_dict(vae.state_dict())
    small, large = torch.randn(1, 4, 4, 4), torch.randn(1, 4, 10, 7)
    with torch.inference_mode():
        torch.testing.assert_close(tiled.decode(small), vae.decode(small))  # fits one tile: not tiled
        out = tiled.decode(large)
    assert out.shape == (1, 3, 20, 14) and bool(torch.isfinite(out).all())
    assert not torch.equal(out, vae.decode(large))
