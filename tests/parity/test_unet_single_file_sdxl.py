"""Original single-file SD 2.x (LDM) and SDXL (SGM) U-Nets, verified independently of the plugin's key table.

Random tiny diffusers U-Nets, with SD 2.x's and SDXL's 64-wide attention heads, are written out under
`model.diffusion_model.` by the test-side diffusers → LDM/SGM renaming (`original_layouts.sgm_key`, the inverse
direction, written separately; SDXL adds `label_emb` and a different transformer depth per level). The file is
read through `core.weights` and the plugin's `CheckpointLayout`: the architecture it reads must be the diffusers
config's, and the U-Net built from it must compute exactly what the same U-Net loaded from the diffusers folder
computes (and what diffusers computes, within 1e-5).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from original_layouts import original_layout, sgm_key

from core import WeightsError, weights
from plugins import unet
from plugins.unet import Config, UNet2DCondition, single_file_names

diffusers = pytest.importorskip("diffusers")

SDXL = dict(
    block_out_channels=(64, 128),
    layers_per_block=2,
    transformer_layers_per_block=(1, 2),
    attention_head_dim=(1, 2),  # 64-wide heads, as the single-file reader assumes for SD 2.x/SDXL
    use_linear_projection=True,
    cross_attention_dim=64,
    addition_embed_type="text_time",
    addition_time_embed_dim=256,  # SDXL's: the single-file reader assumes it
    projection_class_embeddings_input_dim=32 + 6 * 256,  # pooled width 32
    norm_num_groups=8,
    sample_size=8,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
)
SD2 = dict(
    block_out_channels=(64, 128, 128),
    layers_per_block=1,
    attention_head_dim=(1, 2, 2),
    use_linear_projection=True,
    cross_attention_dim=32,
    norm_num_groups=8,
    sample_size=8,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
)
CONFIGS = {"sdxl": SDXL, "sd2": SD2}
NOT_IN_SHAPES = ("norm_num_groups", "sample_size")
READ_FROM_SHAPES = (
    "in_channels",
    "out_channels",
    "block_out_channels",
    "layers_per_block",
    "down_block_types",
    "up_block_types",
    "transformer_layers_per_block",
    "attention_head_dim",
    "cross_attention_dim",
    "use_linear_projection",
    "addition_embed_type",
    "addition_time_embed_dim",
    "projection_class_embeddings_input_dim",
)


# ─── fixtures and helpers ─────────────────────────────────────────────────────────────────────────────────


@pytest.fixture(scope="module", params=list(CONFIGS))
def checkpoints(request, tmp_path_factory: pytest.TempPathFactory):
    """(name, diffusers reference, single file, diffusers folder) for one random tiny U-Net."""
    name, config = request.param, CONFIGS[request.param]
    torch.manual_seed(0)
    reference = diffusers.UNet2DConditionModel(**config).eval()
    with torch.no_grad():
        for p in reference.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    root = tmp_path_factory.mktemp(name)
    state = {"model.diffusion_model." + k: v for k, v in original_layout(reference.state_dict(), config).items()}
    if name == "sdxl":  # SDXL single files keep their text encoders under conditioner.embedders.*
        state["conditioner.embedders.0.transformer.text_model.final_layer_norm.weight"] = torch.ones(8)
    else:
        state["cond_stage_model.model.ln_final.weight"] = torch.ones(8)
    file = root / f"tiny-{name}.safetensors"
    weights.save_state_dict({k: v.contiguous() for k, v in state.items()}, file)
    reference.save_pretrained(root / "unet")
    return name, reference, file, root / "unet"


def build(path: Path, fmt: str, **overrides) -> tuple[UNet2DCondition, dict]:
    state, architecture = weights.read_component_weights(path, unet.SPEC, fmt)
    assert architecture is not None
    config = Config(**{**architecture, **overrides})
    module = weights.build_with_weights(lambda: UNet2DCondition(config), state, component="denoiser", source=fmt)
    return module.eval(), architecture


def as_listed(value):
    return list(value) if isinstance(value, tuple | list) else value


# ─── tests ────────────────────────────────────────────────────────────────────────────────────────────────


def test_single_file_reads_the_diffusers_architecture(checkpoints) -> None:
    name, reference, file, _ = checkpoints
    assert weights.detect_format(file, unet.SPEC.checkpoint_layout) == "single-file"
    _, architecture = weights.read_component_weights(file, unet.SPEC, "auto")
    assert architecture is not None
    expected = {key: as_listed(reference.config[key]) for key in READ_FROM_SHAPES if reference.config[key] is not None}
    if name == "sd2":
        expected["transformer_layers_per_block"] = 1  # one value for every level: read as an int
    assert {key: as_listed(value) for key, value in architecture.items()} == expected


def test_single_file_computes_what_the_diffusers_folder_does(checkpoints) -> None:
    name, reference, file, folder = checkpoints
    config = CONFIGS[name]
    from_file, _ = build(file, "auto", **{key: config[key] for key in NOT_IN_SHAPES})
    from_folder, _ = build(folder, "diffusers")
    assert from_file.config == from_folder.config == Config(**config)
    torch.manual_seed(2)
    sample, context = torch.randn(2, 4, 8, 8), torch.randn(2, 5, config["cross_attention_dim"])
    added = {"pooled": torch.randn(2, 32), "time_ids": torch.tensor([[64.0, 64, 0, 0, 64, 64], [96, 80, 8, 4, 64, 64]])}
    added = {key: added[key] for key in from_file.added_inputs}
    with torch.inference_mode():
        ours = from_file(sample, 321, context, **added)
        assert torch.equal(ours, from_folder(sample, 321, context, **added))
        kwargs = {"added_cond_kwargs": {"text_embeds": added["pooled"], "time_ids": added["time_ids"]}} if added else {}
        expected = reference(sample, 321, context, **kwargs).sample
    error = (ours - expected).abs().max().item()
    assert error <= 1e-5 * max(1.0, expected.abs().max().item()), f"ours vs diffusers: max abs difference {error:.3g}"


REAL_SIZES = {
    "sdxl-base": (
        dict(
            sample_size=128,
            block_out_channels=(320, 640, 1280),
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            transformer_layers_per_block=(1, 2, 10),
            attention_head_dim=(5, 10, 20),
            cross_attention_dim=2048,
            use_linear_projection=True,
            addition_embed_type="text_time",
            addition_time_embed_dim=256,
            projection_class_embeddings_input_dim=2816,
        ),
        ("sample_size",),
    ),
    "sd2.1-768-v": (
        dict(
            sample_size=96,
            attention_head_dim=(5, 10, 20, 20),
            cross_attention_dim=1024,
            use_linear_projection=True,
            upcast_attention=True,
            prediction_type="v_prediction",
        ),
        ("sample_size", "upcast_attention", "prediction_type"),
    ),
    "sd1-like-2-layer-transformers": (dict(transformer_layers_per_block=2), ()),  # the mid block's count
}


@pytest.mark.parametrize("name", REAL_SIZES)
def test_real_sized_layouts_map_back_to_ours(name: str) -> None:
    """At real sizes (built on the meta device, no memory): every original key maps onto one of ours and the
    architecture read from the shapes, plus the settings shapes cannot show, is the model's."""
    fields, not_in_shapes = REAL_SIZES[name]
    config = Config(**fields)
    with torch.device("meta"):
        model = UNet2DCondition(config)
    assert config.layers_per_block == 2  # SD's, in every model above
    up_attention = ["CrossAttn" in kind for kind in config.up_block_types]
    shapes = {sgm_key(k, 2, up_attention): tuple(v.shape) for k, v in model.state_dict().items()}
    names, architecture = single_file_names(shapes)
    assert set(names) == set(model.state_dict())
    assert Config(**architecture, **{key: fields[key] for key in not_in_shapes}) == config


def test_a_file_with_only_sdxl_text_encoders_is_a_single_file_without_a_unet(tmp_path: Path) -> None:
    file = tmp_path / "text-only.safetensors"
    weights.save_state_dict(
        {"conditioner.embedders.0.transformer.text_model.final_layer_norm.weight": torch.ones(4)}, file
    )
    assert weights.detect_format(file, unet.SPEC.checkpoint_layout) == "single-file"
    with pytest.raises(WeightsError, match=r"no model\.diffusion_model\.\* keys"):
        weights.read_component_weights(file, unet.SPEC)
