"""Malformed checkpoints: each ends as one WeightsError naming the file and the problem, never a traceback from
a loader (issue 17, "loaders never trace back"). The hostile files are built here, byte by byte where needed."""

from __future__ import annotations

import json
import math
import os
import pickle
import re
import struct
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file
from torch import nn

import core
from core import DiffstackError, WeightsError, weights
from plugins import clip_text, unet, vae_kl
from plugins.clip_text import CLIPText
from plugins.clip_text import Config as CLIPConfig

FUZZ = settings(max_examples=200, deadline=None)
UNET, VAE, CLIP = unet.SPEC, vae_kl.SPEC, clip_text.SPEC  # the plugins whose checkpoint layouts are read
SPECS = {"denoiser": UNET, "encoder": VAE, "text": CLIP}


def write_raw(path: Path, header: dict, data: bytes = b"", *, length: int | None = None) -> Path:
    """A safetensors file as bytes: 8-byte little-endian header length (`length`, default the true one), the
    JSON header, then `data`."""
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text) if length is None else length) + text + data)
    return path


def write_json(path: Path, content: object | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content if isinstance(content, bytes) else json.dumps(content).encode())
    return path


class Small(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 3)


def load_small(path: Path, dtype: torch.dtype | None = None) -> nn.Module:
    state, _ = weights.read_component_weights(path, UNET)
    return weights.build_with_weights(Small, state, component="denoiser 'small'", source=str(path), dtype=dtype)


def refused(match: str, call, *args, **kwargs) -> WeightsError:
    """The WeightsError `call(*args, **kwargs)` raises, checked against the regex `match`."""
    with pytest.raises(WeightsError, match=match) as caught:
        call(*args, **kwargs)
    return caught.value


# ─── 1. diffusers folders: config.json, scheduler_config.json, shard indexes ──────────────────────────────

BAD_JSON = {
    "a-list": (b"[1, 2]", r"holds a JSON list, not an object"),
    "invalid": (b'{"in_channels": 4,', r"not valid JSON \(Expecting"),
    "not-utf8": (b'{"a": "\xff\xfe"}', r"not UTF-8 text \(byte 7\)"),
    "deeply-nested": (b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", r"not valid JSON \(nested too deeply\)"),
}


@pytest.mark.parametrize("name", sorted(BAD_JSON))
@pytest.mark.parametrize("file", ["unet/config.json", "scheduler/scheduler_config.json"])
def test_a_malformed_component_or_scheduler_config_names_the_file(tmp_path: Path, file: str, name: str) -> None:
    content, message = BAD_JSON[name]
    write_json(tmp_path / "model_index.json", {})
    write_json(tmp_path / "unet/config.json", {})
    weights.save_state_dict(Small().state_dict(), tmp_path / "unet/diffusion_pytorch_model.safetensors")
    write_json(tmp_path / file, content)
    error = refused(message, weights.read_component_weights, tmp_path, UNET)
    assert str(error).startswith(str(tmp_path / file))


@pytest.mark.parametrize(
    ("architectures", "refused_as"),
    [(5, None), ("CLIPTextModel", None), ([], None), ([["CLIPTextModel"]], "['CLIPTextModel']")],
)
def test_odd_class_names_in_a_config_are_ignored_or_named(tmp_path: Path, architectures, refused_as) -> None:
    """`architectures` should be a list of class names: a non-list is ignored, an odd first entry named."""
    write_json(tmp_path / "text_encoder/config.json", {"architectures": architectures, "_class_name": None})
    weights.save_state_dict({"w": torch.zeros(1)}, tmp_path / "text_encoder/model.safetensors")
    if refused_as is None:
        weights.read_component_weights(tmp_path, CLIP, "diffusers")
    else:
        refused(
            rf"config\.json: describes a {re.escape(refused_as)}, but a text here needs a CLIPTextModel",
            weights.read_component_weights,
            tmp_path,
            CLIP,
            "diffusers",
        )


def sharded_folder(tmp_path: Path, weight_map: object) -> Path:
    """A diffusers folder whose unet is one shard, `part-1.safetensors`, listed by `weight_map`."""
    write_json(tmp_path / "pipe/unet/config.json", {})
    weights.save_state_dict(Small().state_dict(), tmp_path / "pipe/unet/part-1.safetensors")
    write_json(tmp_path / "pipe/unet/diffusion_pytorch_model.safetensors.index.json", {"weight_map": weight_map})
    return tmp_path / "pipe"


@pytest.mark.parametrize(
    ("weight_map", "message"),
    [
        (["part-1.safetensors"], r"`weight_map` must map each tensor to its shard file, found \['part-1"),
        (None, r"`weight_map` must map each tensor to its shard file, found None"),
        ({"proj.weight": 5}, r"the shard of 'proj\.weight' must be a relative path, found 5"),
        ({"proj.weight": ""}, r"the shard of 'proj\.weight' must be a relative path, found ''"),
        ({"proj.weight": "../outside.safetensors"}, r"'\.\./outside\.safetensors' points outside .*unet"),
        ({"proj.weight": "sub/../../outside.safetensors"}, r"points outside"),
        ({"proj.weight": "{outside}"}, r"outside\.safetensors' points outside"),
        ({"proj.weight": "part-1.safetensors", "nope": "part-1.safetensors"}, r"part-1\.safetensors: has no tensor"),
        ({"proj.weight": "part-2.safetensors"}, r"weights file not found: .*part-2\.safetensors"),
    ],
)
def test_a_shard_index_is_checked_and_confined_to_its_folder(tmp_path: Path, weight_map, message: str) -> None:
    outside = tmp_path / "outside.safetensors"
    weights.save_state_dict(Small().state_dict(), outside)  # a real file there: refused by name, not by absence
    if isinstance(weight_map, dict):
        weight_map = {
            key: shard.format(outside=outside) if isinstance(shard, str) else shard for key, shard in weight_map.items()
        }
    folder = sharded_folder(tmp_path, weight_map)
    error = refused(message, weights.read_component_weights, folder, UNET)
    assert "index.json" in str(error) or "part-" in str(error)


def test_a_shard_inside_its_folder_still_loads(tmp_path: Path) -> None:
    folder = sharded_folder(tmp_path, {"proj.weight": "part-1.safetensors", "proj.bias": "./part-1.safetensors"})
    state, _ = weights.read_component_weights(folder, UNET)
    assert state.files == [folder / "unet/part-1.safetensors"]


# ─── 2. SD 1.x single files ───────────────────────────────────────────────────────────────────────────────

TEXT_PREFIX = "cond_stage_model.transformer."
TINY_CLIP = CLIPConfig(hidden_size=8, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2)


def text_single_file(path: Path, change: dict[str, torch.Tensor | None]) -> Path:
    """An SD 1.x single file holding a tiny CLIP text model, with the tensors in `change` replaced (None:
    removed)."""
    state = {TEXT_PREFIX + key: value for key, value in CLIPText(TINY_CLIP).state_dict().items()}
    for key, value in change.items():
        state.pop(TEXT_PREFIX + key)
        if value is not None:
            state[TEXT_PREFIX + key] = value
    weights.save_state_dict(state, path)
    return path


def load_text(path: Path) -> nn.Module:
    state, architecture = weights.read_component_weights(path, CLIP)
    config = CLIPConfig(**{**TINY_CLIP.model_dump(), **architecture})
    return weights.build_with_weights(lambda: CLIPText(config), state, component="text", source=str(path))


def test_a_single_file_text_encoder_loads(tmp_path: Path) -> None:
    assert load_text(text_single_file(tmp_path / "sd.safetensors", {})).embedding_dim == 8


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"text_model.embeddings.token_embedding.weight": None, "text_model.encoder.layers.0.mlp.fc1.weight": None},
            r"cannot read the text's architecture from this single-file checkpoint — missing keys: "
            r"cond_stage_model\.transformer\.text_model\.embeddings\.token_embedding\.weight, "
            r"cond_stage_model\.transformer\.text_model\.encoder\.layers\.0\.mlp\.fc1\.weight \(2\)",
        ),
        (
            {"text_model.embeddings.token_embedding.weight": torch.zeros(5)},
            r"misshapen keys: cond_stage_model\.transformer\.text_model\.embeddings\.token_embedding\.weight: "
            r"\(5,\) where 2 dimensions are expected \(1\)",
        ),
        (
            {"text_model.encoder.layers.0.mlp.fc2.weight": torch.zeros(8, 15)},
            r"does not fit the model — shape mismatches: text_model\.encoder\.layers\.0\.mlp\.fc2\.weight: "
            r"checkpoint \(8, 15\) vs model \(8, 16\)",
        ),
        (
            {"text_model.final_layer_norm.bias": None},
            r"does not fit the model — missing keys: text_model\.final_layer_norm\.bias \(1\)",
        ),
    ],
    ids=["missing-architecture-keys", "misshapen-architecture-key", "misshapen-tensor", "missing-tensor"],
)
def test_a_damaged_single_file_lists_missing_keys_and_compares_shapes(tmp_path: Path, change, message) -> None:
    path = text_single_file(tmp_path / "sd.safetensors", change)
    assert str(path) in str(refused(message, load_text, path))


@pytest.mark.parametrize("kind", ["denoiser", "encoder"])
def test_a_single_file_with_a_stray_key_names_what_its_architecture_needs(tmp_path: Path, kind: str) -> None:
    prefix = SPECS[kind].checkpoint_layout.single_file_prefix
    path = tmp_path / "stray.safetensors"
    weights.save_state_dict({prefix + "out.2.weight": torch.zeros(2), prefix + "decoder.up.7.x": torch.zeros(1)}, path)
    needed = "input_blocks.1.0.out_layers.3.weight" if kind == "denoiser" else "encoder.conv_in.weight"
    refused(rf"missing keys: .*{re.escape(prefix + needed)}", weights.read_component_weights, path, SPECS[kind])


def test_a_vae_attention_kernel_is_squeezed_only_when_it_is_1x1(tmp_path: Path) -> None:
    """A 3×3 kernel where a 1×1 conv projection belongs keeps its shape (a mismatch `load_into` reports)."""
    prefix = VAE.checkpoint_layout.single_file_prefix
    conv = torch.zeros(2, 2, 3, 3)
    names = ["encoder.conv_in.weight", "decoder.conv_out.weight", "encoder.down.0.block.0.conv2.weight"]
    state = {prefix + name: conv for name in [*names, "decoder.conv_in.weight", "encoder.mid.attn_1.q.weight"]}
    weights.save_state_dict(state, tmp_path / "vae.safetensors")
    loaded, _ = weights.read_component_weights(tmp_path / "vae.safetensors", VAE)
    key = "encoder.mid_block.attentions.0.to_q.weight"
    assert loaded.shape(key) == loaded[key].shape == (2, 2, 3, 3)


def test_a_single_file_key_with_a_huge_block_number_is_just_an_unexpected_key(tmp_path: Path) -> None:
    prefix = VAE.checkpoint_layout.single_file_prefix
    path = tmp_path / "vae.safetensors"
    weights.save_state_dict({prefix + f"decoder.up.{'9' * 5000}.block.0.w": torch.zeros(1)}, path)
    refused(r"missing keys", weights.read_component_weights, path, VAE)


# ─── 3. pickles told from damaged safetensors files by their structure ────────────────────────────────────


def legacy_torch_save(path: Path) -> None:
    torch.save({"w": torch.zeros(2)}, path, _use_new_zipfile_serialization=False)


@pytest.mark.parametrize(
    "write",
    [
        lambda path: torch.save({"w": torch.zeros(2)}, path),  # a zip archive
        legacy_torch_save,
        *(lambda path, p=protocol: path.write_bytes(pickle.dumps({"w": [0.0] * 4}, protocol=p)) for protocol in (2, 5)),
    ],
    ids=["torch-zip", "torch-legacy", "pickle-2", "pickle-5"],
)
def test_a_pickle_under_a_safetensors_name_is_refused_as_a_pickle(tmp_path: Path, write) -> None:
    path = tmp_path / "model.safetensors"
    write(path)
    assert "safetensors" in refused("pickle checkpoints are refused", weights.load_state_dict, path).hint


def test_a_damaged_safetensors_file_starting_with_0x80_is_not_called_a_pickle(tmp_path: Path) -> None:
    """Header length 640 = 0x280: the file starts with the bytes 0x80 0x02, pickle's protocol-2 opcode."""
    header = {"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}
    text = json.dumps(header)
    padded = (text + " " * (640 - len(text))).encode()
    path = tmp_path / "cut.safetensors"
    path.write_bytes(struct.pack("<Q", 640) + padded + b"\0" * 10)  # 6 bytes short of the data
    assert path.read_bytes()[:2] == b"\x80\x02"
    refused(
        r"cut\.safetensors: not a complete safetensors file: its header describes 664 bytes, the file has 658",
        weights.load_state_dict,
        path,
    )
    path.write_bytes(struct.pack("<Q", 640) + padded.replace(b"}}", b"}]") + b"\0" * 16)
    refused(r"not a valid safetensors file: invalid JSON in header", weights.load_state_dict, path)


def test_trailing_bytes_and_a_cut_header_are_named(tmp_path: Path) -> None:
    path = write_raw(tmp_path / "x.safetensors", {"w": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]}}, b"abc")
    refused(r"not a valid safetensors file: 1 bytes follow the tensor data", weights.load_state_dict, path)
    write_raw(path, {}, length=1000)
    refused(
        r"invalid header length \(its first 8 bytes give a 1000-byte JSON header; the file has 10 bytes\)",
        weights.load_state_dict,
        path,
    )


# ─── 4. NaN, inf and integer tensors ─────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_weights_name_the_file_and_the_tensor(tmp_path: Path, bad: float) -> None:
    state = Small().state_dict()
    state["proj.bias"][1] = bad
    weights.save_state_dict(state, tmp_path / "bad.safetensors")
    error = refused(
        r"bad\.safetensors: tensor 'proj\.bias' holds NaN or infinite values", load_small, tmp_path / "bad.safetensors"
    )
    assert "re-download" in error.hint


def test_values_too_large_for_float16_are_told_apart_from_damage(tmp_path: Path) -> None:
    state = Small().state_dict()
    state["proj.weight"][0, 0] = 1e6
    weights.save_state_dict(state, tmp_path / "big.safetensors")
    assert load_small(tmp_path / "big.safetensors").proj.weight[0, 0] == 1e6
    error = refused(
        r"tensor 'proj\.weight' has values too large for float16",
        load_small,
        tmp_path / "big.safetensors",
        torch.float16,
    )
    assert "float32" in error.hint


@pytest.mark.parametrize(("dtype", "name"), [(torch.int64, "I64"), (torch.bool, "BOOL"), (torch.uint8, "U8")])
def test_integer_or_bool_tensors_for_float_parameters_are_refused(tmp_path: Path, dtype, name: str) -> None:
    state = {**Small().state_dict(), "proj.weight": torch.ones(3, 4, dtype=dtype)}
    weights.save_state_dict(state, tmp_path / "int.safetensors")
    refused(
        rf"dtype mismatches: proj\.weight: checkpoint {name} vs model float32 \(1\)",
        load_small,
        tmp_path / "int.safetensors",
    )
    module = Small()
    before = module.proj.bias.clone()
    refused("dtype mismatches", weights.load_into, module, state, component="c", source="dict")
    assert torch.equal(module.proj.bias, before)  # nothing written


def test_a_dtype_torch_cannot_copy_from_is_refused_before_reading(tmp_path: Path) -> None:
    header = {
        "proj.weight": {"dtype": "F6_E2M3", "shape": [3, 4], "data_offsets": [0, 9]},
        "proj.bias": {"dtype": "F32", "shape": [3], "data_offsets": [9, 21]},
    }
    path = write_raw(tmp_path / "f6.safetensors", header, bytes(21))
    refused(r"dtype mismatches: proj\.weight: checkpoint F6_E2M3 vs model float32", load_small, path)
    refused(
        r"f6\.safetensors: tensor 'proj\.weight' cannot be read \(Dtype not understood", weights.load_state_dict, path
    )


# ─── 5. not a file ───────────────────────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize("fmt", ["auto", "native", "single-file"])
def test_a_fifo_is_refused_without_being_opened(tmp_path: Path, fmt: str) -> None:
    os.mkfifo(tmp_path / "pipe.safetensors")  # opening it would block until a writer appears
    refused(
        r"pipe\.safetensors: not a regular file \(a fifo, socket or device\)",
        weights.read_component_weights,
        tmp_path / "pipe.safetensors",
        UNET,
        fmt,
    )


def test_a_fifo_config_json_is_refused(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "config.json")
    refused(
        r"config\.json: not a regular file .* where a JSON file is expected",
        weights.read_component_weights,
        tmp_path,
        UNET,
    )


@pytest.mark.parametrize("fmt", ["native", "single-file"])
def test_a_folder_for_a_file_format_says_so(tmp_path: Path, fmt: str) -> None:
    error = refused(
        r"a folder where a \.safetensors file is expected", weights.read_component_weights, tmp_path, UNET, fmt
    )
    assert "format: auto" in error.hint


def test_an_unreadable_file_says_so(tmp_path: Path) -> None:
    path = tmp_path / "locked.safetensors"
    weights.save_state_dict(Small().state_dict(), path)
    path.chmod(0)
    if os.access(path, os.R_OK):
        pytest.skip("this user reads files whatever their mode (root)")
    refused(r"locked\.safetensors: cannot be read \(.*Permission denied", weights.load_state_dict, path)


# ─── 6. paths in metadata stay in the checkpoint's folder ─────────────────────────────────────────────────


@pytest.mark.parametrize("tokenizer", ["../tokenizer", "/etc", "a/../../b", 7])
def test_a_tokenizer_path_in_native_metadata_is_confined(tmp_path: Path, tokenizer: object) -> None:
    config = json.dumps({"hidden_size": 8, "tokenizer": tokenizer})
    path = tmp_path / "text.safetensors"
    save_file({"w": torch.zeros(1)}, str(path), metadata={"config": config})
    error = refused(
        r"text\.safetensors: the `config` metadata: `tokenizer` ", weights.read_component_weights, path, CLIP
    )
    assert "points outside" in str(error) or "must be a relative path" in str(error)


def test_a_tokenizer_path_inside_the_folder_is_resolved_against_it(tmp_path: Path) -> None:
    save_file({"w": torch.zeros(1)}, str(tmp_path / "t.safetensors"), metadata={"config": '{"tokenizer": "tok"}'})
    _, architecture = weights.read_component_weights(tmp_path / "t.safetensors", CLIP)
    assert architecture == {"tokenizer": str(tmp_path / "tok")}


def test_a_tokenizer_path_in_a_diffusers_config_is_confined(tmp_path: Path) -> None:
    write_json(tmp_path / "text_encoder/config.json", {"tokenizer": "/etc"})
    weights.save_state_dict({"w": torch.zeros(1)}, tmp_path / "text_encoder/model.safetensors")
    refused(
        r"text_encoder/config\.json: `tokenizer` '/etc' points outside",
        weights.read_component_weights,
        tmp_path,
        CLIP,
    )


# ─── 7. fuzzing: random and mutated safetensors files ────────────────────────────────────────────────────

ITEM_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "I64": 8, "I32": 4, "U8": 1, "BOOL": 1,
              "C64": 8, "U64": 8, "F8_E8M0": 1, "F4": 0.5, "F6_E2M3": 0.75}  # fmt: skip
ARCHITECTURE_KEYS = [
    "input_blocks.0.0.weight", "input_blocks.1.0.out_layers.3.weight", "input_blocks.1.1.proj_in.weight",
    "input_blocks.2.0.op.weight", "input_blocks.3.0.out_layers.3.weight", "output_blocks.0.1.proj_in.weight",
    "output_blocks.2.1.conv.weight", "middle_block.1.transformer_blocks.0.attn2.to_k.weight", "out.2.weight",
    "encoder.conv_in.weight", "decoder.conv_out.weight", "encoder.down.0.block.0.conv2.weight",
    "decoder.conv_in.weight", "decoder.up.0.block.0.conv1.weight", "encoder.mid.attn_1.q.weight",
    "text_model.embeddings.token_embedding.weight", "embeddings.position_embedding.weight",
    "text_model.encoder.layers.0.mlp.fc1.weight", "embeddings.position_ids",
]  # fmt: skip
PREFIXES = ["", *(spec.checkpoint_layout.single_file_prefix for spec in SPECS.values())]
KEYS = st.one_of(st.builds(str.__add__, st.sampled_from(PREFIXES), st.sampled_from(ARCHITECTURE_KEYS)), st.text())
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
METADATA = st.dictionaries(
    st.sampled_from(["config", "format", "x"]),
    st.text() | JSON.map(json.dumps) | st.sampled_from(['{"tokenizer": "../x"}', '{"tokenizer": "t"}', "[1]"]),
)


@st.composite
def safetensors_bytes(draw: st.DrawFn) -> bytes:
    """A safetensors file (tensors of sampled dtypes and small shapes under SD 1.x-like keys, metadata), then
    maybe one mutation: a field replaced by any JSON value, the length field changed, or bytes cut or flipped."""
    tensors = draw(
        st.dictionaries(
            KEYS, st.tuples(st.sampled_from(list(ITEM_BYTES)), st.lists(st.integers(0, 4), max_size=4)), max_size=6
        )
    )
    header: dict[str, Any] = {}
    offset = 0
    for key, (dtype, shape) in tensors.items():
        size = math.ceil(math.prod(shape) * ITEM_BYTES[dtype])
        header[key] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    if draw(st.booleans()):
        header["__metadata__"] = draw(METADATA)
    mutation = draw(st.sampled_from(["none", "field", "length", "cut", "flip"]))
    if mutation == "field" and tensors:
        entry = header[draw(st.sampled_from(sorted(tensors)))]
        entry[draw(st.sampled_from(["dtype", "shape", "data_offsets"]))] = draw(JSON)
    text = json.dumps(header).encode()
    length = draw(st.integers(0, 2**64 - 1)) if mutation == "length" else len(text)
    data = struct.pack("<Q", length) + text + draw(st.binary(min_size=offset, max_size=offset))
    if mutation == "cut":
        data = data[: draw(st.integers(0, len(data)))]
    if mutation == "flip":
        at = draw(st.integers(0, len(data) - 1))
        data = data[:at] + bytes([draw(st.integers(0, 255))]) + data[at + 1 :]
    return data


def read_everything(path: Path, kind: str) -> None:
    """Each loader entry point on `path`, each returned tensor read; only DiffstackErrors may come out."""
    spec = SPECS[kind]
    for call in (lambda: weights.load_state_dict(path), lambda: weights.read_component_weights(path, spec, "auto")):
        try:
            result = call()
            state = result if isinstance(result, dict) else result[0]
            for key in state:
                assert isinstance(state[key], torch.Tensor)
        except DiffstackError:
            pass


@FUZZ
@given(content=safetensors_bytes(), kind=st.sampled_from(["denoiser", "encoder", "text"]))
def test_any_safetensors_like_file_loads_or_is_a_diffstack_error(tmp_path_factory, content: bytes, kind: str) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "model.safetensors"
    path.write_bytes(content)
    read_everything(path, kind)


@FUZZ
@given(
    config=st.dictionaries(
        st.sampled_from(["_class_name", "architectures", "in_channels", "act_fn", "tokenizer", "prediction_type", "x"]),
        JSON,
    ),
    scheduler=JSON,
    weight_map=JSON,
)
def test_any_diffusers_json_is_read_or_is_a_diffstack_error(tmp_path_factory, config, scheduler, weight_map) -> None:
    root = tmp_path_factory.mktemp("fuzz")
    write_json(root / "unet/config.json", config)
    write_json(root / "scheduler/scheduler_config.json", scheduler)
    write_json(root / "unet/diffusion_pytorch_model.safetensors.index.json", {"weight_map": weight_map})
    for kind in ("denoiser", "text"):
        try:
            weights.read_component_weights(root / "unet", SPECS[kind], "diffusers")
        except DiffstackError:
            pass


@pytest.mark.parametrize("text", ["[1, 2]", '{"bos_token": {"x": 1}}', '{"eos_token": 5}', "[" * 100000])
def test_a_malformed_tokenizer_config_is_a_weights_error(tmp_path, text):
    from plugins.clip_text.tokenizer import read_folder

    (tmp_path / "vocab.json").write_text('{"a</w>": 0}')
    (tmp_path / "merges.txt").write_text("#version: 0.2\n")
    (tmp_path / "tokenizer_config.json").write_text(text)
    with pytest.raises(core.WeightsError, match="tokenizer_config.json"):
        read_folder(tmp_path)


@pytest.mark.parametrize("text", ["[1, 2]", "{", "[" * 100000])
def test_a_malformed_scheduler_config_is_a_config_error(tmp_path, text):
    from core.scheduler_from_diffusers import scheduler_from_diffusers

    (tmp_path / "scheduler_config.json").write_text(text)
    with pytest.raises(core.ConfigError, match="scheduler_config.json"):
        scheduler_from_diffusers(tmp_path)
