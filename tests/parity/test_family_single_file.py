"""Original single-file SD 2.x and SDXL checkpoints load into diffstack and agree with the diffusers folder exactly.

From ONE random tiny reference pipeline per family (`reference_sd.tiny_sdxl_pipeline` / `tiny_sd2_pipeline`,
the oracles of test_family_parity.py), two checkpoints are written: the diffusers folder (`save_pretrained`) and
a single file in the original layout, by test-side converters independent of the plugins' key tables
(`original_layouts`):

- SDXL: `model.diffusion_model.*` (SGM U-Net with `label_emb`), `first_stage_model.*` (LDM VAE),
  `conditioner.embedders.0.transformer.text_model.*` (first tower, transformers' names) and
  `conditioner.embedders.1.model.*` (second tower, OpenCLIP's, with `text_projection` (D, P) and `logit_scale`).
- SD 2.x: `model.diffusion_model.*`, `first_stage_model.*` and `cond_stage_model.model.*` (OpenCLIP) with one
  more random resblock than the folder's tower — the layer diffusers' conversion drops and SD 2.x never reads
  (diffstack reads the single file's tower at its penultimate layer), so it must change nothing.

Both are built from one registry file with the same scheduler; the single-file pipeline states what a single
file cannot — the bundled `sdxl` / `sd21` pipelines' `config:` blocks (SDXL's VAE scaling factor; SD 2.x's
v-prediction and upcast attention) and what only a tiny model needs (`TINY`: head counts that are not 64 wide,
8 norm groups, SDXL's time-id width 8). The architecture read from the file's shapes must be the folder's and a
full generation must give bit-identical pixels. The bundled pipelines themselves build from such files through
`extends: bundled` with only the tiny keys overridden (`TINY`: the bundled blocks are SDXL's and SD 2.1's real
sizes, which a tiny file cannot meet).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from original_layouts import sd2_checkpoint, sdxl_checkpoint
from reference_sd import tiny_sd2_pipeline, tiny_sdxl_pipeline
from safetensors.torch import save_file

import core
from core import weights
from core.registry import bundled_registry_path
from plugins import clip_text, sdxl_text, unet, vae_kl

diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")

PROMPT, SIZE = "a large red circle on a blue background", 64
CALL = dict(seed=3, steps=4, height=SIZE, width=SIZE, guidance_scale=5.0, negative_prompt="blurry")
BUNDLED = {"sdxl": "sdxl", "sd2": "sd21"}  # the bundled registry's pipeline for each family
TEXT = {"sdxl": sdxl_text, "sd2": clip_text}

# The bundled pipelines' blocks a single file needs (registry.yaml: `sdxl`, `sd21`), written out here.
SCHEDULERS = {
    "sdxl": {
        "plugin": "euler",
        "config": {
            "beta_schedule": "scaled_linear",
            "beta_start": 0.00085,
            "beta_end": 0.012,
            "timestep_spacing": "leading",
            "steps_offset": 1,
        },
    },
    "sd2": {
        "plugin": "ddim",
        "config": {
            "beta_schedule": "scaled_linear",
            "beta_start": 0.00085,
            "beta_end": 0.012,
            "prediction_type": "v_prediction",
            "timestep_spacing": "leading",
            "steps_offset": 1,
            "set_alpha_to_one": False,
            "clip_sample": False,
        },
    },
}
MIRRORED = {
    "sdxl": {"encoder": {"scaling_factor": 0.13025}, "denoiser": {}, "text": {}},
    "sd2": {"encoder": {}, "denoiser": {"prediction_type": "v_prediction", "upcast_attention": True}, "text": {}},
}

# What a tiny file cannot state and SDXL / SD 2.1 files need not: 16-wide heads (the readers assume 64), 8 norm
# groups, training sizes, SDXL's time-id width 8 (the reader assumes 256) with the SDXL keys the bundled block
# sets at real size. attention_head_dim comes with the per-level keys only because registry validation checks
# a config block alone, against the plugin's 4-level defaults (test_a_per_level_key_alone_… below).
XL_LEVELS = dict(
    block_out_channels=[32, 64],
    down_block_types=["DownBlock2D", "CrossAttnDownBlock2D"],
    up_block_types=["CrossAttnUpBlock2D", "UpBlock2D"],
    attention_head_dim=[2, 4],
)
SD2_LEVELS = dict(
    block_out_channels=[32, 64],
    down_block_types=["CrossAttnDownBlock2D", "DownBlock2D"],
    up_block_types=["UpBlock2D", "CrossAttnUpBlock2D"],
    attention_head_dim=[2, 4],
)
TINY_VAE = {"norm_num_groups": 8, "sample_size": 64}
TINY: dict[str, dict[str, dict[str, Any]]] = {
    "sdxl": {
        "encoder": TINY_VAE,
        "denoiser": {
            **XL_LEVELS,
            "norm_num_groups": 8,
            "sample_size": 8,
            "cross_attention_dim": 64,
            "addition_embed_type": "text_time",
            "addition_time_embed_dim": 8,
            "projection_class_embeddings_input_dim": 64,
        },
        "text": {"text_encoder": {"num_attention_heads": 4}, "text_encoder_2": {"num_attention_heads": 4}},
    },
    "sd2": {
        "encoder": TINY_VAE,
        "denoiser": {**SD2_LEVELS, "norm_num_groups": 8, "sample_size": 8},
        "text": {"num_attention_heads": 4},
    },
}
# Where the architecture a file's shapes show is not the tiny folder's, and why (everything else must be equal).
FILE_VS_FOLDER = {
    "sdxl": {
        "encoder": {},
        "denoiser": {"addition_time_embed_dim": (256, 8)},  # SDXL's, assumed: no shape shows it
        "text": {"text_encoder_2": {"num_attention_heads": (1, 4), "pad_token": ("!", None)}},  # 64-wide heads
    },
    "sd2": {
        "encoder": {},
        "denoiser": {},
        "text": {  # one more layer, read at the penultimate; 64-wide heads assumed; OpenCLIP pads with "!"
            "num_hidden_layers": (3, 2),
            "clip_skip": (2, None),
            "num_attention_heads": (1, 4),
            "pad_token": ("!", None),
        },
    },
}


def merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """`override` over `base`, nested mappings merged key by key."""
    out = dict(base)
    for key, value in override.items():
        below = out.get(key)
        out[key] = merged(below, value) if isinstance(value, dict) and isinstance(below, dict) else value
    return out


def pipeline_block(weights_path: str, text: str, family: str, configs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {
        "weights": {"path": weights_path, "format": "auto"},
        "encoder": {"plugin": "vae-kl", "config": configs["encoder"]},
        "denoiser": {"plugin": "unet2d-condition", "config": configs["denoiser"]},
        "text": {"plugin": text, "config": configs["text"]},
        "scheduler": SCHEDULERS[family],
        "sampler": {"plugin": "cfg"},
    }


def write_registry(path: Path, document: dict[str, Any]) -> core.Registry:
    path.write_text(json.dumps(document, indent=1))  # JSON is YAML
    return core.load_registry(path)


@pytest.fixture(scope="module", params=["sdxl", "sd2"])
def family(request, tmp_path_factory: pytest.TempPathFactory):
    """(family, root, folder, single file, folder-built pipeline, single-file-built pipeline)."""
    name = request.param
    root = tmp_path_factory.mktemp(name)
    if name == "sdxl":
        reference = tiny_sdxl_pipeline(root)
        state = sdxl_checkpoint(reference)
    else:
        reference = tiny_sd2_pipeline(root)
        state = sd2_checkpoint(reference, torch.Generator().manual_seed(7))
    folder, file = root / f"tiny-{name}", root / f"tiny-{name}.safetensors"
    reference.save_pretrained(folder)
    save_file(state, str(file))
    text = TEXT[name].SPEC.name
    single = {slot: merged(MIRRORED[name][slot], TINY[name][slot]) for slot in ("encoder", "denoiser", "text")}
    registry = write_registry(
        root / "registry.yaml",
        {
            "version": 1,
            "pipelines": {
                "folder": pipeline_block(folder.name, text, name, {"encoder": {}, "denoiser": {}, "text": {}}),
                "single": pipeline_block(file.name, text, name, single),
            },
        },
    )
    return name, root, folder, file, registry.build("folder", device="cpu"), registry.build("single", device="cpu")


def plain(value: Any) -> Any:
    """A config (or part of one) as plain data, sequences as lists."""
    if hasattr(value, "model_dump"):
        value = value.model_dump()
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    return list(value) if isinstance(value, tuple | list) else value


def differences(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """{key: (a's, b's)} where they differ, nested mappings compared key by key."""
    found: dict[str, Any] = {}
    for key in {**a, **b}:
        x, y = a.get(key), b.get(key)
        if isinstance(x, dict) and isinstance(y, dict):
            if inner := differences(x, y):
                found[key] = inner
        elif x != y:
            found[key] = (x, y)
    return found


def restricted(config: dict[str, Any], keys: dict[str, Any]) -> dict[str, Any]:
    """`config`'s values for the keys of `keys` (None where it has none), nested mappings alike."""
    return {
        key: restricted(config.get(key) or {}, inner) if isinstance(inner, dict) else config.get(key)
        for key, inner in keys.items()
    }


def specs(name: str) -> dict[str, core.ComponentSpec]:
    return {"encoder": vae_kl.SPEC, "denoiser": unet.SPEC, "text": TEXT[name].SPEC}


# ─── tests ────────────────────────────────────────────────────────────────────────────────────────────────


def test_the_file_is_detected_as_a_single_file(family) -> None:
    name, _, folder, file, _, _ = family
    for spec in specs(name).values():
        assert weights.detect_format(file, spec.checkpoint_layout) == "single-file", spec.name
        assert weights.detect_format(folder, spec.checkpoint_layout) == "diffusers", spec.name


def test_the_architecture_read_from_the_shapes_is_the_folders(family) -> None:
    """Every key a file's shapes state equals the folder's config, but for the family assumptions listed."""
    name, _, folder, file, _, _ = family
    for slot, spec in specs(name).items():
        _, from_file = weights.read_component_weights(file, spec)
        _, from_folder = weights.read_component_weights(folder, spec)
        assert from_file and from_folder, slot
        assert differences(plain(from_file), restricted(plain(from_folder), from_file)) == FILE_VS_FOLDER[name][slot]


def test_the_built_parts_have_the_folders_configs(family) -> None:
    """Built from the file (+ the registry's blocks) = built from the folder, but for where the tokenizer comes
    from (the folder's tokenizer/ or the bundled vocabulary, the same OpenAI one) and, for SD 2.x, how the
    tower reaches its penultimate layer."""
    name, _, _, _, from_folder, from_file = family
    for slot in ("encoder", "denoiser", "scheduler"):
        assert plain(getattr(from_file, slot).config) == plain(getattr(from_folder, slot).config), slot
    found = differences(plain(from_file.text.config), plain(from_folder.text.config))
    folder_text = plain(from_folder.text.config)
    if name == "sdxl":
        for part in ("text_encoder", "text_encoder_2"):
            assert found.pop(part) == {"tokenizer": (None, folder_text[part]["tokenizer"])}, part
        assert found == {}
        assert from_file.encoder.scaling_factor == 0.13025
    else:
        assert found.pop("tokenizer") == (None, folder_text["tokenizer"])
        assert found == {"num_hidden_layers": (3, 2), "clip_skip": (2, 1), "pad_token": ("!", None)}
        assert from_file.denoiser.prediction_type == from_file.scheduler.config.prediction_type == "v_prediction"


def test_a_generation_is_bit_identical(family) -> None:
    _, _, _, _, from_folder, from_file = family
    for call in (CALL, CALL | {"negative_prompt": "", "guidance_scale": 7.5}):
        assert torch.equal(from_file(PROMPT, **call).pixels, from_folder(PROMPT, **call).pixels), call


@pytest.mark.parametrize("family", ["sd2"], indirect=True)
def test_the_extra_sd2_layer_is_read_and_would_matter(family) -> None:
    """The SD 2.x file's last resblock is loaded (strictly) but not used: read at the last layer instead, the
    context would differ — so the equality above is not for want of a difference."""
    _, _, _, file, from_folder, from_file = family
    state, architecture = weights.read_component_weights(file, clip_text.SPEC)
    config = clip_text.Config(**architecture | {"num_attention_heads": 4, "clip_skip": 1})
    last = weights.build_with_weights(lambda: clip_text.CLIPText(config), state, component="text", source=str(file))
    with torch.inference_mode():
        expected = from_folder.text([PROMPT])
        assert torch.equal(from_file.text([PROMPT]), expected)
        assert not torch.allclose(last.eval()([PROMPT]), expected, atol=1e-3)


@pytest.fixture
def bundled_registry(family, monkeypatch: pytest.MonkeyPatch):
    """The bundled `sdxl` / `sd21` pipeline reading the family's single file from $DIFFSTACK_SDXL /
    $DIFFSTACK_SD21, through `extends: bundled`: the same pipeline, with `TINY`'s keys merged into its blocks."""
    name, root, _, file, _, _ = family
    pipeline = BUNDLED[name]
    monkeypatch.setenv(f"DIFFSTACK_{pipeline.upper()}", str(file))
    bundled = yaml.safe_load(bundled_registry_path().read_text())["pipelines"][pipeline]
    tiny = merged(bundled, {slot: {"config": config} for slot, config in TINY[name].items()})
    path = root / f"extends-{pipeline}.yaml"
    return pipeline, bundled, write_registry(path, {"version": 1, "extends": "bundled", "pipelines": {pipeline: tiny}})


def test_the_bundled_pipeline_builds_from_the_single_file(family, bundled_registry) -> None:
    name, _, _, _, from_folder, _ = family
    pipeline, bundled, registry = bundled_registry
    assert bundled["weights"]["path"] == f"${{DIFFSTACK_{pipeline.upper()}}}"
    for slot, config in MIRRORED[name].items():  # what this file's registry mirrors is the bundled one
        assert config.items() <= bundled[slot].get("config", {}).items(), slot
    assert bundled["scheduler"] == SCHEDULERS[name]
    pipe = registry.build(pipeline, device="cpu")
    assert plain(pipe.denoiser.config) == plain(from_folder.denoiser.config)
    assert plain(pipe.encoder.config) == plain(from_folder.encoder.config)
    generation = pipe(PROMPT, seed=1, steps=2, height=SIZE, width=SIZE, guidance_scale=5.0)
    assert generation.pixels.shape == (1, 3, SIZE, SIZE)
    expected = from_folder(PROMPT, seed=1, steps=2, height=SIZE, width=SIZE, guidance_scale=5.0).pixels
    assert torch.equal(generation.pixels, expected)
