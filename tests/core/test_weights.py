"""`core.weights`: formats and their detection, lazy strict loading, meta-device builds, and clear errors."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from core import WeightsError, weights
from plugins import clip_text, ddim, unet, vae_kl
from plugins.unet import Config as UNetConfig
from plugins.unet import UNet2DCondition
from plugins.vae_kl import AutoencoderKL
from plugins.vae_kl import Config as VAEConfig

UNET, VAE, CLIP = unet.SPEC, vae_kl.SPEC, clip_text.SPEC  # the plugins whose checkpoint layouts are read
SPECS = {"denoiser": UNET, "encoder": VAE, "text": CLIP, "scheduler": ddim.diffstack_components()[0]}

TINY_UNET = dict(
    block_out_channels=[16, 32],
    down_block_types=["CrossAttnDownBlock2D", "DownBlock2D"],
    up_block_types=["UpBlock2D", "CrossAttnUpBlock2D"],
    layers_per_block=1,
    attention_head_dim=2,
    cross_attention_dim=8,
    norm_num_groups=8,
    sample_size=8,
)
TINY_VAE = dict(
    block_out_channels=[8, 16],
    down_block_types=["DownEncoderBlock2D"] * 2,
    up_block_types=["UpDecoderBlock2D"] * 2,
    layers_per_block=1,
    norm_num_groups=4,
    sample_size=16,
)
SD15_UNET_CONFIG = {  # unet/config.json of runwayml/stable-diffusion-v1-5
    "_class_name": "UNet2DConditionModel",
    "_diffusers_version": "0.6.0",
    "act_fn": "silu",
    "attention_head_dim": 8,
    "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False,
    "cross_attention_dim": 768,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "out_channels": 4,
    "sample_size": 64,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
}
SD21_UNET_CONFIG = {  # unet/config.json of stabilityai/stable-diffusion-2-1
    **SD15_UNET_CONFIG,
    "_diffusers_version": "0.10.0.dev0",
    "attention_head_dim": [5, 10, 20, 20],
    "cross_attention_dim": 1024,
    "dual_cross_attention": False,
    "num_class_embeds": None,
    "only_cross_attention": False,
    "sample_size": 96,
    "use_linear_projection": True,
    "upcast_attention": True,
}
SD15_TEXT_CONFIG = {  # text_encoder/config.json of runwayml/stable-diffusion-v1-5
    "_name_or_path": "openai/clip-vit-large-patch14",
    "architectures": ["CLIPTextModel"],
    "attention_dropout": 0.0,
    "bos_token_id": 0,
    "dropout": 0.0,
    "eos_token_id": 2,
    "hidden_act": "quick_gelu",
    "hidden_size": 768,
    "initializer_factor": 1.0,
    "initializer_range": 0.02,
    "intermediate_size": 3072,
    "layer_norm_eps": 1e-05,
    "max_position_embeddings": 77,
    "model_type": "clip_text_model",
    "num_attention_heads": 12,
    "num_hidden_layers": 12,
    "pad_token_id": 1,
    "projection_dim": 768,
    "torch_dtype": "float32",
    "transformers_version": "4.22.0.dev0",
    "vocab_size": 49408,
}


class Small(nn.Module):
    def __init__(self, width: int = 4) -> None:
        super().__init__()
        self.proj = nn.Linear(width, 3)
        self.norm = nn.LayerNorm(3)


def write_json(path: Path, data: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def tiny_unet() -> UNet2DCondition:
    torch.manual_seed(0)
    return UNet2DCondition(UNetConfig(**TINY_UNET)).eval()


def load_unet(state, config: dict = TINY_UNET, source: str = "test") -> UNet2DCondition:
    build = lambda: UNet2DCondition(UNetConfig(**config))  # noqa: E731
    return weights.build_with_weights(build, state, component="unet", source=source)


@pytest.fixture
def pipeline_folder(tmp_path: Path) -> tuple[Path, UNet2DCondition]:
    """A diffusers-format folder: model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/."""
    unet = tiny_unet()
    root = tmp_path / "sd-tiny"
    write_json(root / "model_index.json", {"_class_name": "StableDiffusionPipeline"})
    write_json(root / "unet/config.json", {**SD15_UNET_CONFIG, **TINY_UNET})
    weights.save_state_dict(unet.state_dict(), root / "unet/diffusion_pytorch_model.safetensors")
    write_json(root / "vae/config.json", {"_class_name": "AutoencoderKL", "act_fn": "silu", **TINY_VAE})
    vae = AutoencoderKL(VAEConfig(**TINY_VAE))
    weights.save_state_dict(vae.state_dict(), root / "vae/diffusion_pytorch_model.safetensors")
    write_json(root / "text_encoder/config.json", SD15_TEXT_CONFIG)
    text = {"embeddings.token_embedding.weight": torch.randn(5, 2), "embeddings.position_ids": torch.arange(3)[None]}
    weights.save_state_dict(text, root / "text_encoder/model.safetensors")  # transformers 5 style: no text_model.
    write_json(root / "tokenizer/vocab.json", {})
    write_json(root / "scheduler/scheduler_config.json", {"prediction_type": "v_prediction"})
    return root, unet


# ─── native files, lazy state, strict loading ──────────────────────────────────────────────────────────────


def test_native_file_round_trip(tmp_path: Path) -> None:
    source, target = Small(), Small()
    weights.save_state_dict(source.state_dict(), tmp_path / "small.safetensors")
    assert weights.detect_format(tmp_path / "small.safetensors") == "native"
    state, architecture = weights.read_component_weights(tmp_path / "small.safetensors", UNET)
    assert architecture is None and isinstance(state, weights.CheckpointState)
    assert state.shape("proj.weight") == (3, 4) and set(state) == set(source.state_dict())
    weights.load_into(target, state, component="small", source="test")
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value)


def test_reads_survive_remapping(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(weights, "REMAP_BYTES", 1)  # reopen the map after every tensor
    unet = tiny_unet()
    weights.save_state_dict(unet.state_dict(), tmp_path / "unet.safetensors")
    state, _ = weights.read_component_weights(tmp_path / "unet.safetensors", UNET, "native")
    loaded = load_unet(state)
    for key, value in unet.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_load_into_checks_everything_before_copying_anything() -> None:
    module, good = Small(), Small()
    before = {k: v.clone() for k, v in module.state_dict().items()}
    state = {**good.state_dict(), "extra.weight": torch.zeros(1), "norm.bias": torch.zeros(7)}
    del state["norm.weight"]
    with pytest.raises(WeightsError) as caught:
        weights.load_into(module, state, component="denoiser 'x'", source="file.safetensors")
    message = str(caught.value)
    assert "denoiser 'x'" in message and "file.safetensors" in message
    assert "missing keys: norm.weight" in message and "unexpected keys: extra.weight" in message
    assert "norm.bias: checkpoint (7,) vs model (3,)" in message
    for key, value in module.state_dict().items():
        assert torch.equal(value, before[key]), f"{key} was written although the load failed"


def test_mismatch_listing_is_capped_with_a_count() -> None:
    with pytest.raises(WeightsError, match=r"missing keys: .*… \(\d+ in all\)"):
        weights.load_into(tiny_unet(), {}, component="unet", source="empty")


def test_build_with_weights_materialises_from_the_checkpoint_only() -> None:
    source = Small()
    built = []

    def build() -> Small:
        module = Small()
        built.append(module.proj.weight.device.type)
        return module

    module = weights.build_with_weights(build, source.state_dict(), component="c", source="s", dtype=torch.bfloat16)
    assert built == ["meta"]
    assert module.proj.weight.dtype == torch.bfloat16 and module.proj.weight.device.type == "cpu"
    assert isinstance(module.proj.weight, nn.Parameter)
    assert torch.equal(module.proj.weight, source.proj.weight.to(torch.bfloat16))


def test_meta_initialisation_is_skipped_and_real_initialisation_is_not() -> None:
    real = torch.zeros(3, 4)
    with torch.device("meta"), weights.SkipInitOnMeta():
        meta = torch.empty(3, 4)
        assert nn.init.normal_(meta) is meta and nn.init.kaiming_uniform_(meta, a=5**0.5) is meta
        assert nn.init.normal_(tensor=meta, std=2.0) is meta
        nn.init.ones_(real)
    assert torch.equal(real, torch.ones(3, 4))


def test_build_with_weights_keeps_a_channels_last_layout_made_in_init() -> None:
    class ChannelsLast(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3).to(memory_format=torch.channels_last)

    state = ChannelsLast().state_dict()
    module = weights.build_with_weights(ChannelsLast, state, component="c", source="s")
    assert module.conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(module.conv.weight, state["conv.weight"])


def test_build_with_weights_builds_normally_when_init_computes_buffers() -> None:
    class WithTable(Small):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("table", torch.arange(4.0), persistent=False)

    module = weights.build_with_weights(WithTable, Small().state_dict(), component="c", source="s")
    assert torch.equal(module.table, torch.arange(4.0))


def test_build_with_weights_lets_the_vae_keep_float32() -> None:
    vae = AutoencoderKL(VAEConfig(**TINY_VAE))
    loaded = weights.build_with_weights(
        lambda: AutoencoderKL(VAEConfig(**TINY_VAE)), vae.state_dict(), component="vae", source="s", dtype=torch.float16
    )
    assert loaded.decoder.conv_out.weight.dtype == torch.float32
    assert torch.equal(loaded.decoder.conv_out.weight, vae.decoder.conv_out.weight)


# ─── diffusers folders ─────────────────────────────────────────────────────────────────────────────────────


def test_diffusers_folder_gives_architecture_and_weights(pipeline_folder) -> None:
    root, unet = pipeline_folder
    assert weights.detect_format(root) == "diffusers"
    state, architecture = weights.read_component_weights(root, UNET)
    assert architecture["prediction_type"] == "v_prediction"  # from scheduler/scheduler_config.json
    assert not any(key.startswith("_") for key in architecture) and "act_fn" not in architecture
    loaded = load_unet(state, architecture)
    sample, context = torch.randn(1, 4, 8, 8), torch.randn(1, 3, 8)
    with torch.inference_mode():
        assert torch.equal(loaded(sample, 9, context), unet(sample, 9, context))
    _, vae_architecture = weights.read_component_weights(root / "vae", VAE)  # a component folder directly
    assert VAEConfig(**vae_architecture) == VAEConfig(**TINY_VAE)


def test_diffusers_text_encoder_keys_config_and_tokenizer(pipeline_folder) -> None:
    root, _ = pipeline_folder
    state, architecture = weights.read_component_weights(root, CLIP)
    assert set(state) == {"text_model.embeddings.token_embedding.weight"}  # prefixed, position_ids dropped
    assert architecture == {
        "hidden_act": "quick_gelu",
        "hidden_size": 768,
        "intermediate_size": 3072,
        "layer_norm_eps": 1e-05,
        "max_position_embeddings": 77,
        "num_attention_heads": 12,
        "num_hidden_layers": 12,
        "vocab_size": 49408,
        "tokenizer": str(root / "tokenizer"),
    }


@pytest.mark.parametrize("config", [SD15_UNET_CONFIG, SD21_UNET_CONFIG], ids=["sd15", "sd21"])
def test_real_unet_configs_map_onto_our_config(tmp_path: Path, config: dict) -> None:
    write_json(tmp_path / "unet/config.json", config)
    mapped = UNetConfig(**weights.read_diffusers_config(tmp_path / "unet", UNET))
    assert mapped.cross_attention_dim == config["cross_attention_dim"]
    assert mapped.upcast_attention == config.get("upcast_attention", False)
    if config is SD15_UNET_CONFIG:
        assert mapped == UNetConfig(sample_size=64)


def test_config_written_by_installed_diffusers_maps(tmp_path: Path) -> None:
    diffusers = pytest.importorskip("diffusers")
    diffusers.UNet2DConditionModel(**TINY_UNET).save_config(tmp_path / "unet")
    diffusers.AutoencoderKL(**TINY_VAE).save_config(tmp_path / "vae")
    UNetConfig(**weights.read_diffusers_config(tmp_path / "unet", UNET))
    assert VAEConfig(**weights.read_diffusers_config(tmp_path / "vae", VAE)) == VAEConfig(**TINY_VAE)


def test_fp16_variant_and_sharded_weights(tmp_path: Path) -> None:
    state = Small().state_dict()
    write_json(tmp_path / "a/unet/config.json", {})
    weights.save_state_dict(state, tmp_path / "a/unet/diffusion_pytorch_model.fp16.safetensors")
    assert set(weights.read_component_weights(tmp_path / "a", UNET)[0]) == set(state)
    write_json(tmp_path / "b/unet/config.json", {})
    rest = {k: v for k, v in state.items() if k != "proj.weight"}
    weights.save_state_dict({"proj.weight": state["proj.weight"]}, tmp_path / "b/unet/part-1.safetensors")
    weights.save_state_dict(rest, tmp_path / "b/unet/part-2.safetensors")
    index = {"weight_map": {k: "part-1.safetensors" if k == "proj.weight" else "part-2.safetensors" for k in state}}
    write_json(tmp_path / "b/unet/diffusion_pytorch_model.safetensors.index.json", index)
    loaded, _ = weights.read_component_weights(tmp_path / "b", UNET)
    assert len(loaded.files) == 2 and all(torch.equal(loaded[k], v) for k, v in state.items())


# ─── errors: each names the file and the problem ──────────────────────────────────────────────────────────


def test_truncated_file(tmp_path: Path) -> None:
    path = tmp_path / "cut.safetensors"
    weights.save_state_dict({"w": torch.randn(64, 64)}, path)
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(WeightsError, match=r"cut\.safetensors: not a complete safetensors file") as caught:
        weights.read_component_weights(path, UNET)
    assert "truncated" in caught.value.hint


def test_non_safetensors_file(tmp_path: Path) -> None:
    path = tmp_path / "notes.safetensors"
    path.write_text("these are not weights")
    with pytest.raises(WeightsError, match=r"notes\.safetensors: not a valid safetensors file: header too large"):
        weights.detect_format(path)


@pytest.mark.parametrize("name", ["model.ckpt", "disguised.safetensors"])
def test_pickle_checkpoints_are_refused_with_a_conversion_hint(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    torch.save({"w": torch.zeros(2)}, path)
    with pytest.raises(WeightsError, match="pickle checkpoints are refused") as caught:
        weights.read_component_weights(path, UNET)
    assert "safetensors" in caught.value.hint


def test_bin_only_diffusers_folder_is_refused(tmp_path: Path) -> None:
    write_json(tmp_path / "unet/config.json", SD15_UNET_CONFIG)
    torch.save({}, tmp_path / "unet/diffusion_pytorch_model.bin")
    with pytest.raises(WeightsError, match=r"diffusion_pytorch_model\.bin: pickle checkpoints"):
        weights.read_component_weights(tmp_path, UNET)


def test_folder_missing_config_json(tmp_path: Path) -> None:
    write_json(tmp_path / "model_index.json", {})
    (tmp_path / "unet").mkdir()
    weights.save_state_dict(Small().state_dict(), tmp_path / "unet/diffusion_pytorch_model.safetensors")
    with pytest.raises(WeightsError, match=r"unet: no config\.json"):
        weights.read_component_weights(tmp_path, UNET)


def test_missing_subfolder_lists_what_is_there(tmp_path: Path) -> None:
    write_json(tmp_path / "model_index.json", {})
    write_json(tmp_path / "unet/config.json", {})
    with pytest.raises(WeightsError, match="no vae/ subfolder") as caught:
        weights.read_component_weights(tmp_path, VAE)
    assert "model_index.json" in caught.value.hint and "unet" in caught.value.hint


def test_config_for_a_different_architecture(tmp_path: Path) -> None:
    write_json(tmp_path / "unet/config.json", {**SD15_UNET_CONFIG, "_class_name": "UNet2DModel"})
    with pytest.raises(WeightsError, match="describes a UNet2DModel, but a denoiser here needs a UNet2DConditionModel"):
        weights.read_component_weights(tmp_path, UNET, "diffusers")


def test_config_feature_we_lack(tmp_path: Path) -> None:
    write_json(tmp_path / "unet/config.json", {**SD15_UNET_CONFIG, "class_embed_type": "timestep"})
    with pytest.raises(WeightsError, match=r"config\.json: class_embed_type='timestep' is a feature"):
        weights.read_component_weights(tmp_path, UNET)


def test_weights_for_a_different_architecture(tmp_path: Path) -> None:
    path = tmp_path / "big.safetensors"
    wider = UNet2DCondition(UNetConfig(**{**TINY_UNET, "block_out_channels": [16, 48]}))
    weights.save_state_dict(wider.state_dict(), path)
    state, _ = weights.read_component_weights(path, UNET)
    with pytest.raises(WeightsError, match=r"big\.safetensors does not fit the model — shape mismatches: .*\(48, "):
        load_unet(state, source=str(path))


def test_single_file_without_the_component(tmp_path: Path) -> None:
    path = tmp_path / "unet-only.safetensors"
    state = {"model.diffusion_model.out.2.weight": torch.zeros(1), "conditioner.embedders.1.model.x": torch.zeros(1)}
    weights.save_state_dict(state, path)
    assert weights.detect_format(path, UNET.checkpoint_layout) == "single-file"
    with pytest.raises(WeightsError, match=r"no first_stage_model\.\* keys for the encoder"):
        weights.read_component_weights(path, VAE)
    with pytest.raises(WeightsError, match="SDXL's two text encoders"):
        weights.read_component_weights(path, CLIP)


@pytest.mark.parametrize(
    ("kind", "fmt", "message"),
    [("scheduler", "auto", "have no weights"), ("denoiser", "ckpt", "unknown weights format")],
)
def test_bad_kind_or_format(tmp_path: Path, kind: str, fmt: str, message: str) -> None:
    with pytest.raises(WeightsError, match=message):
        weights.read_component_weights(tmp_path, SPECS[kind], fmt)


def test_folder_that_is_no_checkpoint_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="neither a diffusers pipeline"):
        weights.detect_format(tmp_path)
    with pytest.raises(WeightsError, match="weights file not found"):
        weights.read_component_weights(tmp_path / "nope.safetensors", UNET)


def test_a_plugin_without_a_checkpoint_layout_reads_native_files_only(tmp_path: Path, pipeline_folder) -> None:
    plain = dataclasses.replace(UNET, name="plain-unet", checkpoint_layout=None)
    model = tiny_unet()
    weights.save_state_dict(model.state_dict(), tmp_path / "unet.safetensors")
    state, _ = weights.read_component_weights(tmp_path / "unet.safetensors", plain)
    assert set(state) == set(model.state_dict())
    single = tmp_path / "sd.safetensors"
    weights.save_state_dict({"model.diffusion_model.out.2.weight": torch.zeros(1)}, single)
    for path, fmt, named in ((pipeline_folder[0], "auto", "diffusers"), (single, "single-file", "single-file")):
        message = f"denoiser plugin 'plain-unet' declares no checkpoint layout for the {named} format"
        with pytest.raises(WeightsError, match=message):
            weights.read_component_weights(path, plain, fmt)
