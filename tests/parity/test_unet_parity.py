"""Parity of `unet2d-condition` with diffusers' `UNet2DConditionModel` (test-only oracle): same random weights,
loaded by key with no mapping, fp32, max |ours − diffusers| ≤ 1e-5 × the output's scale. SDXL's added
embedding gets the pooled text embedding and time ids as diffusers' `added_cond_kwargs` and as our keywords."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from core import weights
from plugins import unet
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
    "sd2-linear-upcast-head-list": dict(
        block_out_channels=(32, 64, 64),
        layers_per_block=2,
        attention_head_dim=(2, 4, 4),
        cross_attention_dim=48,
        norm_num_groups=8,
        use_linear_projection=True,
        upcast_attention=True,
        **blocks(True, True, False),
    ),
}
SDXL = dict(
    block_out_channels=(32, 64),
    layers_per_block=2,
    transformer_layers_per_block=(1, 2),
    attention_head_dim=(2, 4),
    use_linear_projection=True,
    cross_attention_dim=64,
    addition_embed_type="text_time",
    addition_time_embed_dim=8,
    projection_class_embeddings_input_dim=32 + 6 * 8,  # pooled width 32
    norm_num_groups=8,
    sample_size=8,
    **blocks(False, True),
)


def perturbed_reference(config: dict) -> torch.nn.Module:
    torch.manual_seed(0)
    reference = diffusers.UNet2DConditionModel(**config).eval()
    with torch.no_grad():  # move every weight off its init value (norms at 1 and 0) so each one matters
        for p in reference.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return reference


def pair(config: dict) -> tuple[torch.nn.Module, UNet2DCondition]:
    reference = perturbed_reference(config)
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


def sdxl_inputs(batch: int = 2) -> dict[str, torch.Tensor]:
    """sample, context, pooled (B, 32) and distinct time ids (B, 6) for the SDXL config."""
    torch.manual_seed(1)
    time_ids = torch.tensor([[64.0, 48.0, 0.0, 0.0, 64.0, 48.0], [1024.0, 768.0, 16.0, 8.0, 512.0, 512.0]])
    return {
        "sample": torch.randn(batch, 4, 8, 6),
        "context": torch.randn(batch, 7, SDXL["cross_attention_dim"]),
        "pooled": torch.randn(batch, 32),
        "time_ids": time_ids[:batch],
    }


def sdxl_reference_output(reference: torch.nn.Module, x: dict[str, torch.Tensor], timestep) -> torch.Tensor:
    added = {"text_embeds": x["pooled"], "time_ids": x["time_ids"]}
    return reference(x["sample"], timestep, x["context"], added_cond_kwargs=added).sample


def test_sdxl_added_embedding_matches_diffusers() -> None:
    reference, ours = pair(SDXL)
    assert ours.added_inputs == {"pooled": (32,), "time_ids": (6,)}
    x = sdxl_inputs()
    with torch.inference_mode():
        for timestep in (999.5, torch.tensor([3, 571])):
            expected = sdxl_reference_output(reference, x, timestep)
            assert_parity(
                ours(x["sample"], timestep, x["context"], pooled=x["pooled"], time_ids=x["time_ids"]), expected
            )
        without_added = ours(x["sample"], 3, x["context"], pooled=torch.zeros(2, 32), time_ids=torch.zeros(2, 6))
        assert not torch.allclose(
            without_added, ours(x["sample"], 3, x["context"], pooled=x["pooled"], time_ids=x["time_ids"])
        )


def test_sdxl_micro_conditioning_is_diffusers_pipeline_default() -> None:
    """As diffusers' SDXL pipeline builds them by default: original = target size = (height, width), crop (0, 0);
    its check that pooled width + 6 · addition_time_embed_dim fits add_embedding passes with our pooled width."""
    reference, ours = pair(SDXL)
    (pooled_width,) = ours.added_inputs["pooled"]
    expected = diffusers.StableDiffusionXLPipeline._get_add_time_ids(
        SimpleNamespace(unet=reference), (1024, 768), (0, 0), (1024, 768), torch.float32, pooled_width
    )  # (1, 6)
    time_ids = ours.micro_conditioning(1024, 768)["time_ids"]
    assert time_ids.dtype == torch.float32 and torch.equal(time_ids, expected[0])


@pytest.mark.parametrize("name", ["sdxl", "sd2-linear-upcast-head-list"])
def test_diffusers_folder_loads_through_the_layout(name: str, tmp_path: Path) -> None:
    config = SDXL if name == "sdxl" else CONFIGS[name]
    reference = perturbed_reference(config)
    folder = tmp_path / "unet"
    reference.save_pretrained(folder)
    state, architecture = weights.read_component_weights(folder, unet.SPEC, "diffusers")
    assert architecture is not None
    ours_config = Config(**architecture)
    assert ours_config == Config(**config)
    ours = weights.build_with_weights(lambda: UNet2DCondition(ours_config), state, component="denoiser", source=name)
    ours.eval()
    x = sdxl_inputs() if name == "sdxl" else {"sample": torch.randn(2, 4, 8, 8), "context": torch.randn(2, 5, 48)}
    with torch.inference_mode():
        if name == "sdxl":
            expected = sdxl_reference_output(reference, x, 250)
        else:
            expected = reference(x["sample"], 250, x["context"]).sample
        assert_parity(ours(x["sample"], 250, x["context"], **{k: x[k] for k in ours.added_inputs}), expected)
