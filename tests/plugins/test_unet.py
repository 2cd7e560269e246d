"""`unet2d-condition`: the Denoiser contract, config checks, input errors, dtypes and layouts."""

from __future__ import annotations

import pydantic
import pytest
import torch

import core
from core.contracts.denoiser import DenoiserContract
from plugins import unet as unet_plugin
from plugins.unet import Config, UNet2DCondition

TINY = unet_plugin.diffstack_components()[0].example_config
SDXL_ADDED = {
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 8,
    "projection_class_embeddings_input_dim": 64,
}


def tiny(**overrides) -> UNet2DCondition:
    torch.manual_seed(0)
    return UNet2DCondition(Config(**{**TINY, **overrides})).eval()


class TestUNet(DenoiserContract):
    @pytest.fixture
    def component(self) -> UNet2DCondition:
        return tiny()


class TestSDXLUNet(DenoiserContract):
    """With SDXL's added embedding: the contract suite passes it random pooled embeddings and time ids."""

    @pytest.fixture
    def component(self) -> UNet2DCondition:
        return tiny(**SDXL_ADDED)


def inputs(model: UNet2DCondition, batch: int = 2, size: tuple[int, int] = (8, 8)) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(batch, model.in_channels, *size), torch.randn(batch, 5, model.context_dim)


def test_spec() -> None:
    (spec,) = unet_plugin.diffstack_components()
    assert (spec.kind, spec.name) == ("denoiser", "unet2d-condition")
    assert (spec.factory, spec.config) == (UNet2DCondition, Config)


def test_defaults_are_sd15() -> None:
    with torch.device("meta"):  # no memory for 860M parameters
        model = UNet2DCondition(Config())
    assert sum(p.numel() for p in model.parameters()) == 859_520_964
    assert (model.in_channels, model.context_dim, model.prediction_type) == (4, 768, "epsilon")
    assert "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight" in model.state_dict()
    assert "up_blocks.3.attentions.2.proj_out.weight" in model.state_dict()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"up_block_types": ["UpBlock2D"]}, "one entry per resolution level"),
        ({"attention_head_dim": [2, 2, 2]}, "attention_head_dim"),
        ({"attention_head_dim": 3}, "not divisible by 3 attention heads"),
        ({"norm_num_groups": 5}, "not divisible by 5 groups"),
        ({"down_block_types": ["CrossAttnDownBlock2D", "AttnDownBlock2D"]}, "down_block_types"),
        ({"class_embed_type": "timestep"}, "class_embed_type"),
        ({"addition_embed_type": "text_time"}, "needs addition_time_embed_dim and projection_class"),
        ({**SDXL_ADDED, "addition_time_embed_dim": None}, "needs addition_time_embed_dim"),
        ({**SDXL_ADDED, "projection_class_embeddings_input_dim": 48}, "must exceed 6 × addition_time_embed_dim = 48"),
        ({"addition_time_embed_dim": 8}, "only for addition_embed_type 'text_time'"),
        ({"addition_embed_type": "text"}, "addition_embed_type"),
    ],
)
def test_config_errors(overrides: dict, message: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=message):
        Config(**{**TINY, **overrides})


def test_wrong_context_width_names_expected_and_found() -> None:
    model = tiny()
    sample, _ = inputs(model)
    with pytest.raises(core.InputError, match=r"expected 32 .*got shape \(2, 5, 16\)"):
        model(sample, 10, torch.randn(2, 5, 16))


@pytest.mark.parametrize(
    ("sample_shape", "timestep", "context_batch"),
    [
        ((2, 3, 8, 8), 1, 2),  # wrong channel count
        ((2, 4, 8, 8), torch.tensor([1, 2, 3]), 2),  # 3 timesteps for a batch of 2
        ((2, 4, 8, 8), torch.ones(2, 1), 2),  # 2-d timesteps
        ((2, 4, 8, 8), 1, 3),  # context batch 3
    ],
)
def test_bad_inputs_are_input_errors(sample_shape, timestep, context_batch) -> None:
    model = tiny()
    with pytest.raises(core.InputError):
        model(torch.randn(sample_shape), timestep, torch.randn(context_batch, 5, model.context_dim))


def test_odd_latent_sizes_keep_their_shape() -> None:
    model = tiny()
    sample, context = inputs(model, 1, (13, 7))
    with torch.inference_mode():
        assert model(sample, 3, context).shape == sample.shape


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_close_to_float32(dtype: torch.dtype) -> None:
    model = tiny()
    sample, context = inputs(model)
    with torch.inference_mode():
        expected = model(sample, 400, context)
        model.to(dtype)
        half_out = model(sample.to(dtype), 400, context.to(dtype))
        float_in = model(sample, 400, context)  # float32 inputs to a half model come back float32
    assert half_out.dtype == dtype and float_in.dtype == torch.float32
    assert (half_out.float() - expected).abs().max() < 0.05 * expected.abs().max()


def test_upcast_attention_and_channels_last_change_nothing_in_float32() -> None:
    model = tiny()
    sample, context = inputs(model)
    variants = [tiny(upcast_attention=True), tiny().to(memory_format=torch.channels_last)]
    with torch.inference_mode():
        expected = model(sample, 77, context)
        for variant in variants:
            variant.load_state_dict(model.state_dict())
            torch.testing.assert_close(variant(sample, 77, context), expected, atol=1e-5, rtol=1e-5)
    assert variants[1].conv_in.weight.is_contiguous(memory_format=torch.channels_last)


def test_prediction_type_comes_from_config() -> None:
    assert tiny(prediction_type="v_prediction").prediction_type == "v_prediction"


# ─── SDXL's added inputs ──────────────────────────────────────────────────────────────────────────────────


def added(batch: int = 2, pooled: int = 16) -> dict[str, torch.Tensor]:
    return {"pooled": torch.randn(batch, pooled), "time_ids": torch.tensor([[64.0, 64, 0, 0, 64, 64]] * batch)}


def test_added_inputs_and_micro_conditioning() -> None:
    sd1, sdxl = tiny(), tiny(**SDXL_ADDED)
    assert sd1.added_inputs == {} and sd1.micro_conditioning(512, 768) == {}
    assert sdxl.added_inputs == {"pooled": (64 - 6 * 8,), "time_ids": (6,)}
    (time_ids,) = sdxl.micro_conditioning(512, 768).values()
    assert time_ids.dtype == torch.float32 and time_ids.tolist() == [512, 768, 0, 0, 512, 768]
    assert "add_embedding.linear_1.weight" in sdxl.state_dict()
    assert not any(key.startswith("add_embedding.") for key in sd1.state_dict())


def test_sdxl_added_inputs_change_the_prediction() -> None:
    model = tiny(**SDXL_ADDED)
    sample, context = inputs(model)
    inputs_a, inputs_b = added(), added()
    inputs_b["time_ids"] = model.micro_conditioning(128, 96)["time_ids"].expand(2, 6)
    with torch.inference_mode():
        out = model(sample, 10, context, **inputs_a)
        assert out.shape == sample.shape
        assert not torch.allclose(out, model(sample, 10, context, **{**inputs_a, "time_ids": inputs_b["time_ids"]}))
        assert not torch.allclose(out, model(sample, 10, context, **{**inputs_a, "pooled": inputs_b["pooled"]}))


@pytest.mark.parametrize(
    ("given", "message", "hint"),
    [
        ({"time_ids": added()["time_ids"]}, r"needs pooled \(2, 16\), got none", "sdxl-text conditioner"),
        ({"pooled": added()["pooled"]}, r"needs time_ids \(2, 6\), got none", "micro_conditioning"),
        ({**added(), "pooled": torch.randn(2, 12)}, r"pooled must have shape \(2, 16\), got \(2, 12\)", None),
        ({**added(), "time_ids": torch.zeros(2, 5)}, r"time_ids must have shape \(2, 6\), got \(2, 5\)", None),
        ({**added(), "time_ids": torch.zeros(6)}, r"time_ids must have shape \(2, 6\), got \(6,\)", None),
        ({**added(batch=3)}, r"pooled must have shape \(2, 16\), got \(3, 16\)", None),
    ],
)
def test_sdxl_added_input_errors(given: dict, message: str, hint: str | None) -> None:
    model = tiny(**SDXL_ADDED)
    sample, context = inputs(model)
    with pytest.raises(core.InputError, match=message) as caught:
        model(sample, 10, context, **given)
    if hint is not None:
        assert hint in str(caught.value.hint)


@pytest.mark.parametrize("name", ["pooled", "time_ids"])
def test_added_inputs_to_an_sd1_unet_are_input_errors(name: str) -> None:
    model = tiny()
    sample, context = inputs(model)
    with pytest.raises(core.InputError, match=rf"got {name}, but this U-Net takes no added inputs"):
        model(sample, 10, context, **{name: added()[name]})
