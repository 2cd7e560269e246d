"""OpenCLIP-layout text towers in original single files (SD 2.x: `cond_stage_model.model.`; SDXL's second
tower: `conditioner.embedders.1.model.`), verified independently of clip-text's key tables.

A random transformers `CLIPTextModelWithProjection` (gelu, 64-wide heads) is written out in OpenCLIP's layout by
the test-side conversion (`original_layouts.openclip_state`: fused q/k/v `in_proj`, `text_projection` (D, P)
applied as x @ W, `positional_embedding`, `ln_final`, plus `logit_scale` and the `attn_mask` buffer), loaded
through `core.weights`, and compared with (1) transformers' models fed the same ids and (2) our own load of the
diffusers SD 2.x folder equivalent: the tower truncated to N − 1 layers, with a tokenizer padding with "!".
An SD 2.x file's `text_projection` is not loaded (SD 2.x conditions on the context alone, as the folder does).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from original_layouts import openclip_state
from reference_sd import perturb, write_vocab_folder
from safetensors.torch import save_file

from core import CheckpointLayout, weights
from plugins.clip_text import SPEC, CLIPText, Config
from plugins.clip_text.checkpoint import hf_names, openclip_names

transformers = pytest.importorskip("transformers")

D, HEADS, LAYERS, FFN, P = 128, 2, 3, 200, 96
TOWER = dict(
    vocab_size=49408,
    hidden_size=D,
    intermediate_size=FFN,
    num_hidden_layers=LAYERS,
    num_attention_heads=HEADS,
    max_position_embeddings=77,
    hidden_act="gelu",
)
SD2 = "cond_stage_model.model."
SDXL_G = "conditioner.embedders.1.model."
PROMPTS = ["a photo of an astronaut riding a horse", "", "café 🐱, it's 4K", "a <|endoftext|> b"]


@pytest.fixture(scope="module")
def tower():
    torch.manual_seed(0)
    config = transformers.CLIPTextConfig(**TOWER, projection_dim=P, attn_implementation="eager")
    return perturb(transformers.CLIPTextModelWithProjection(config), scale=0.05)


@pytest.fixture(scope="module")
def files(tower, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tower as an SD 2.x single file, as an SDXL single file's second tower, and as the diffusers SD 2.x
    folder (tower cut to N − 1 layers, tokenizer padding with "!")."""
    root = tmp_path_factory.mktemp("openclip")
    state = openclip_state(tower)
    others = {
        "model.diffusion_model.out.2.bias": torch.zeros(4),
        "first_stage_model.decoder.conv_out.bias": torch.zeros(3),
    }
    save_file({SD2 + k: v for k, v in state.items()} | others, str(root / "sd2.safetensors"))
    save_file({SDXL_G + k: v for k, v in state.items()} | others, str(root / "sdxl.safetensors"))

    folder = root / "sd2-diffusers"
    folder.mkdir()
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    truncated_tower(tower).save_pretrained(folder / "text_encoder")
    vocab = write_vocab_folder(root / "vocab")
    transformers.CLIPTokenizer.from_pretrained(vocab, pad_token="!").save_pretrained(folder / "tokenizer")
    return {"sd2": root / "sd2.safetensors", "sdxl": root / "sdxl.safetensors", "diffusers": folder}


def truncated_tower(tower):
    """What diffusers' SD 2.x conversion keeps: a CLIPTextModel of the first N − 1 layers, no projection."""
    config = transformers.CLIPTextConfig(**TOWER | {"num_hidden_layers": LAYERS - 1}, attn_implementation="eager")
    model = transformers.CLIPTextModel(config).eval()
    kept = {  # transformers 5's CLIPTextModel is the text transformer itself (no `text_model.` in its keys)
        k.removeprefix("text_model."): v
        for k, v in tower.state_dict().items()
        if k.startswith("text_model.") and f".layers.{LAYERS - 1}." not in k
    }
    model.load_state_dict(kept, strict=True)
    return model


def load(path: Path, spec=SPEC, **overrides) -> tuple[CLIPText, dict]:
    state, architecture = weights.read_component_weights(path, spec, "auto")
    config = Config(**architecture | overrides)
    module = weights.build_with_weights(lambda: CLIPText(config), state, component="text", source=str(path))
    return module.eval(), architecture


def reference_ids(folder: Path, prompts: list[str]) -> torch.Tensor:
    """transformers' SD 2.x tokenization: pad "!" (id 0). (It also splits "!" out of prompts as the pad token,
    so the prompts here have none.)"""
    tokenizer = transformers.CLIPTokenizer.from_pretrained(folder)
    return tokenizer(prompts, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids


def assert_tight(actual: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    error = (actual - expected).abs().max().item()
    assert error <= 1e-6 * max(1.0, expected.abs().max().item()), f"{what}: max abs difference {error:.3g}"


def test_sd2_architecture_and_tensors(files, tower) -> None:
    state, architecture = weights.read_component_weights(files["sd2"], SPEC, "auto")
    assert weights.detect_format(files["sd2"], SPEC.checkpoint_layout) == "single-file"
    assert architecture == dict(
        vocab_size=49408,
        hidden_size=D,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,  # D / 64
        intermediate_size=FFN,
        max_position_embeddings=77,
        hidden_act="gelu",
        pad_token="!",
        clip_skip=2,
    )  # no projection_dim: SD 2.x does not use the projection, so it is not loaded
    reference = {k: v for k, v in tower.state_dict().items() if k.startswith("text_model.")}  # our names
    assert set(state) == set(reference)
    for key, value in reference.items():
        assert torch.equal(state[key], value), key


def test_sd2_single_file_equals_the_diffusers_sd2_folder(files, tower) -> None:
    """The single file (penultimate layer + final norm, pad "!") against transformers' truncated tower on
    transformers' ids, and bit for bit against our load of the diffusers folder."""
    single, _ = load(files["sd2"])
    folder, architecture = load(files["diffusers"])
    assert architecture["num_hidden_layers"] == LAYERS - 1 and "projection_dim" not in architecture
    ids = reference_ids(files["diffusers"] / "tokenizer", PROMPTS)
    assert (ids[1, 2:] == 0).all()  # the empty prompt: BOS, EOS, then pad id 0
    prompts = [*PROMPTS, "wow!!", "a (red) circle!"]  # with "!": our two loads tokenize alike
    with torch.inference_mode():
        expected = truncated_tower(tower)(ids).last_hidden_state
        context, pooled = single.encode(PROMPTS)
        assert pooled is None and single.added_outputs == {}
        assert torch.equal(single.tokenizer(prompts), folder.tokenizer(prompts))
        assert torch.equal(single.tokenizer(PROMPTS), ids)
        assert_tight(context, expected, "single file vs transformers' truncated tower")
        from_folder = folder(prompts)
        assert isinstance(from_folder, torch.Tensor)
        assert torch.equal(single.encode(prompts)[0], from_folder)
        assert torch.equal(single(prompts), from_folder)


def test_sdxl_second_tower_through_openclip_names(files, tower) -> None:
    """The layout an SDXL conditioner builds from `openclip_names`: penultimate hidden state without the final
    norm (clip_skip 2, final_layer_norm false) = hidden_states[-2]; pooled = text_embeds."""
    layout = CheckpointLayout(single_file_prefix=SDXL_G, single_file_names=openclip_names)
    spec = dataclasses.replace(SPEC, checkpoint_layout=layout)
    module, architecture = load(files["sdxl"], spec, clip_skip=2, final_layer_norm=False)
    assert "clip_skip" not in architecture and architecture["projection_dim"] == P
    ids = reference_ids(files["diffusers"] / "tokenizer", PROMPTS)
    with torch.inference_mode():
        out = tower(ids, output_hidden_states=True)
        conditioning = module(PROMPTS)
    assert module.added_outputs == {"pooled": (P,)}
    assert_tight(conditioning.context, out.hidden_states[-2], "context vs hidden_states[-2]")
    assert_tight(conditioning.added["pooled"], out.text_embeds, "pooled vs text_embeds")
    with pytest.raises(weights.WeightsError, match=r"no conditioner\.embedders\.1\.model\.\* keys"):
        weights.read_component_weights(files["sd2"], spec, "single-file")


def test_sdxl_first_tower_through_hf_names(tmp_path: Path) -> None:
    """`hf_names` under SDXL's `conditioner.embedders.0.transformer.` prefix (transformers' names)."""
    torch.manual_seed(1)
    small = Config(hidden_size=32, intermediate_size=40, num_hidden_layers=2, num_attention_heads=4)
    original = CLIPText(small).eval()
    path = tmp_path / "sdxl.safetensors"
    prefix = "conditioner.embedders.0.transformer."
    save_file({prefix + k: v.contiguous() for k, v in original.state_dict().items()}, str(path))
    spec = dataclasses.replace(
        SPEC, checkpoint_layout=CheckpointLayout(single_file_prefix=prefix, single_file_names=hf_names)
    )
    module, architecture = load(path, spec, num_attention_heads=4)
    assert architecture == dict(
        vocab_size=49408, hidden_size=32, num_hidden_layers=2, intermediate_size=40, max_position_embeddings=77
    )
    with torch.inference_mode():
        assert torch.equal(module(["a cat"]), original(["a cat"]))
