"""Behaviour of the `clip-text` text conditioner and its tokenizer (parity with transformers: tests/parity)."""

from __future__ import annotations

import copy
import gzip
import json
import warnings
from pathlib import Path

import pydantic
import pytest
import torch

from core import Conditioning, ConfigError, InputError, PluginManager, TextConditioner, WeightsError, weights
from core.checkpoint_layout import Unreadable
from core.contracts import TextConditionerContract
from plugins import clip_text
from plugins.clip_text import CLIPText, Config
from plugins.clip_text.checkpoint import openclip_names, single_file_names, tensor_names
from plugins.clip_text.tokenizer import SHIPPED_VOCAB, CLIPTokenizer, read_bpe_gz

TINY = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4)
BOS, EOS = 49406, 49407


def tiny(seed: int = 0, **overrides) -> CLIPText:
    torch.manual_seed(seed)
    return CLIPText(Config(**TINY | overrides)).eval()


@pytest.fixture(scope="module")
def text() -> CLIPText:
    return tiny()


@pytest.fixture(scope="module")
def tokenizer(text: CLIPText) -> CLIPTokenizer:
    return text.tokenizer


def write_folder(folder: Path, special_tokens: dict | None = None) -> Path:
    """A diffusers-style tokenizer/ folder holding the shipped vocabulary."""
    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges = read_bpe_gz(SHIPPED_VOCAB)
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
    if special_tokens is not None:
        (folder / "special_tokens_map.json").write_text(json.dumps(special_tokens))
    return folder


class TestCLIPText(TextConditionerContract):
    @pytest.fixture
    def component(self, text: CLIPText) -> CLIPText:
        return text


# -- the conditioner -------------------------------------------------------------------------------------------


def test_is_a_text_conditioner(text: CLIPText) -> None:
    assert isinstance(text, TextConditioner)
    assert (text.max_length, text.embedding_dim) == (77, 32)


def test_shape_dtype_and_no_grad(text: CLIPText) -> None:
    with torch.inference_mode():
        out = text(["a red circle", "", "a blue square on a green background"])
    assert out.shape == (3, 77, 32) and out.dtype == torch.float32
    assert torch.isfinite(out).all()


def test_follows_module_dtype() -> None:
    text = tiny().to(torch.bfloat16)
    with torch.inference_mode():
        assert text(["a red circle"]).dtype == torch.bfloat16


def test_empty_prompt_and_empty_batch(text: CLIPText, tokenizer: CLIPTokenizer) -> None:
    assert tokenizer([""]).tolist() == [[BOS] + [EOS] * 76]
    with torch.inference_mode():
        assert torch.isfinite(text([""])).all()
        assert text([]).shape == (0, 77, 32)


def test_over_long_prompt_is_truncated_with_a_warning(tokenizer: CLIPTokenizer) -> None:
    long = "one two three " * 30  # 90 tokens
    with pytest.warns(UserWarning, match=r"prompt 1 has 90 tokens.*truncated, dropping: 'one two three"):
        ids = tokenizer(["short", long])
    assert ids.shape == (2, 77)
    assert ids[1, 0] == BOS and ids[1, -1] == EOS
    exact = "one two three " * 25  # 75 tokens: fits exactly, no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.equal(tokenizer([exact])[0], ids[1])


def test_deterministic_and_batch_independent(text: CLIPText) -> None:
    prompts = ["a red circle", "a photo of a cat 🐱", ""]
    with torch.inference_mode():
        batch = text(prompts)
        assert torch.equal(batch, text(prompts))
        assert torch.equal(batch, tiny()(prompts))  # same seed, new instance
        for i, prompt in enumerate(prompts):
            torch.testing.assert_close(text([prompt])[0], batch[i], rtol=0, atol=1e-6)


def test_attention_is_causal(text: CLIPText) -> None:
    """A token's embedding depends only on the tokens before it: a shared prefix embeds identically."""
    with torch.inference_mode():
        a, b = text(["a red circle", "a red square"])
    torch.testing.assert_close(a[:3], b[:3], rtol=0, atol=1e-6)  # BOS, "a", "red"
    assert not torch.allclose(a[3], b[3])


def test_clip_skip_takes_an_earlier_layer(text: CLIPText) -> None:
    """clip_skip=2 on 3 layers == clip_skip=1 on the first 2 layers, same weights (then the final norm)."""
    skipping = CLIPText(Config(**TINY | {"clip_skip": 2}))
    skipping.load_state_dict(text.state_dict())
    shorter = CLIPText(Config(**TINY | {"num_hidden_layers": 2}))
    shorter.load_state_dict({k: v for k, v in text.state_dict().items() if ".layers.2." not in k})
    with torch.inference_mode():
        expected = shorter(["a red circle"])
        torch.testing.assert_close(skipping(["a red circle"]), expected, rtol=0, atol=0)
        assert not torch.allclose(text(["a red circle"]), expected)


def test_state_dict_uses_transformers_key_names(text: CLIPText) -> None:
    keys = set(text.state_dict())
    assert {
        "text_model.embeddings.token_embedding.weight",
        "text_model.embeddings.position_embedding.weight",
        "text_model.encoder.layers.0.self_attn.q_proj.weight",
        "text_model.encoder.layers.2.mlp.fc2.bias",
        "text_model.final_layer_norm.weight",
    } <= keys
    assert len(keys) == 4 + 16 * 3  # embeddings 2, final norm 2, 16 tensors per layer; no buffers


# -- projection, pooled output, final norm ----------------------------------------------------------------------


def test_without_projection_encode_gives_no_pooled(text: CLIPText) -> None:
    assert text.added_outputs == {} and text.text_projection is None
    with torch.inference_mode():
        context, pooled = text.encode(["a red circle"])
        assert pooled is None and torch.equal(context, text(["a red circle"]))


def test_projection_gives_a_conditioning_with_pooled() -> None:
    text = tiny(projection_dim=12)
    assert text.added_outputs == {"pooled": (12,)}
    assert tuple(text.state_dict()["text_projection.weight"].shape) == (12, 32)
    with torch.inference_mode():
        out = text(["a red circle", ""])
        context, pooled = text.encode(["a red circle", ""])
    assert isinstance(out, Conditioning) and set(out.added) == {"pooled"}
    assert out.context.shape == (2, 77, 32) and out.added["pooled"].shape == (2, 12)
    assert torch.equal(out.context, context) and torch.equal(out.added["pooled"], pooled)
    with torch.inference_mode():
        empty_context, empty_pooled = text.encode([])
    assert empty_context.shape == (0, 77, 32) and empty_pooled is not None and empty_pooled.shape == (0, 12)
    with torch.inference_mode():
        assert text.to(torch.bfloat16)(["a cat"]).added["pooled"].dtype == torch.bfloat16


def test_pooled_is_the_projected_final_normed_last_layer_at_the_first_eos() -> None:
    """Whatever clip_skip and final_layer_norm choose for the context."""
    text = tiny(projection_dim=8)
    sdxl = tiny(projection_dim=8, clip_skip=2, final_layer_norm=False)
    sdxl.load_state_dict(text.state_dict())
    prompts = ["a red circle", "a <|endoftext|> b", ""]
    ids = text.tokenizer(prompts)
    eos = [row.index(EOS) for row in ids.tolist()]
    assert eos == [4, 2, 1]
    with torch.inference_mode():
        last = text(prompts).context  # clip_skip 1, final norm: the last layer, normed
        expected = text.text_projection(last[torch.arange(3), eos])
        assert torch.equal(text.encode(prompts)[1], expected)
        assert torch.equal(sdxl.encode(prompts)[1], expected)


def test_final_layer_norm_false_leaves_the_hidden_state_unnormed() -> None:
    text = tiny()
    raw = tiny(final_layer_norm=False, clip_skip=2)
    raw.load_state_dict(text.state_dict())
    skipping = tiny(clip_skip=2)
    skipping.load_state_dict(text.state_dict())
    with torch.inference_mode():
        hidden = raw(["a red circle"])
        torch.testing.assert_close(text.text_model.final_layer_norm(hidden), skipping(["a red circle"]), rtol=0, atol=0)
        assert not torch.allclose(hidden, skipping(["a red circle"]))


def test_pad_token_overrides_the_tokenizer() -> None:
    text = tiny(pad_token="!")
    assert text.tokenizer([""])[0].tolist() == [BOS, EOS] + [0] * 75
    with pytest.raises(WeightsError, match="not in the vocabulary: pad '<|pad|>'"):
        tiny(pad_token="<|pad|>")


# -- checkpoint layouts ----------------------------------------------------------------------------------------


def test_tensor_names_keep_text_projection_unprefixed() -> None:
    keys = ["embeddings.token_embedding.weight", "text_model.final_layer_norm.bias", "text_projection.weight"]
    assert tensor_names([*keys, "text_model.embeddings.position_ids"]) == {
        "text_model.embeddings.token_embedding.weight": keys[0],
        "text_model.final_layer_norm.bias": keys[1],
        "text_projection.weight": keys[2],
    }


SD21_TEXT_CONFIG = {  # text_encoder/config.json of stabilityai/stable-diffusion-2-1 (a CLIPTextModel)
    "architectures": ["CLIPTextModel"],
    "hidden_act": "gelu",
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_attention_heads": 16,
    "num_hidden_layers": 23,
    "projection_dim": 512,
    "vocab_size": 49408,
    "max_position_embeddings": 77,
    "layer_norm_eps": 1e-05,
    "eos_token_id": 2,
    "torch_dtype": "float32",
}


@pytest.mark.parametrize(
    ("subfolder", "architecture", "projection_dim", "tokenizer"),
    [
        ("text_encoder", "CLIPTextModel", None, "tokenizer"),  # SD 2.x states its CLIP model's projection
        ("text_encoder_2", "CLIPTextModelWithProjection", 512, "tokenizer_2"),  # SDXL's second tower
    ],
)
def test_diffusers_config_keeps_projection_dim_for_a_model_with_projection(
    tmp_path: Path, subfolder: str, architecture: str, projection_dim: int | None, tokenizer: str
) -> None:
    folder = tmp_path / subfolder
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(SD21_TEXT_CONFIG | {"architectures": [architecture]}))
    write_folder(tmp_path / tokenizer)
    config = weights.read_diffusers_config(folder, clip_text.SPEC)
    assert config.get("projection_dim") == projection_dim
    assert config["tokenizer"] == str(tmp_path / tokenizer)
    assert Config(**config).num_hidden_layers == 23


def openclip_shapes(width: int = 64, layers: int = 2, projection: int = 16) -> dict[str, tuple[int, ...]]:
    shapes = {"token_embedding.weight": (49408, width), "positional_embedding": (77, width)}
    for i in range(layers):
        block = f"transformer.resblocks.{i}."
        shapes |= {block + "attn.in_proj_weight": (3 * width, width), block + "attn.in_proj_bias": (3 * width,)}
        for name, shape in [("ln_1", (width,)), ("ln_2", (width,)), ("attn.out_proj", (width, width))]:
            shapes |= {f"{block}{name}.weight": shape, f"{block}{name}.bias": (width,)}
        shapes |= {block + "mlp.c_fc.weight": (4 * width, width), block + "mlp.c_fc.bias": (4 * width,)}
        shapes |= {block + "mlp.c_proj.weight": (width, 4 * width), block + "mlp.c_proj.bias": (width,)}
    return shapes | {"ln_final.weight": (width,), "ln_final.bias": (width,), "text_projection": (width, projection)}


@pytest.mark.parametrize(
    ("width", "layers", "projection", "heads"),
    [(64, 2, 16, 1), (1024, 24, 1024, 16), (1280, 32, 1280, 20)],  # tiny, SD 2.x's ViT-H, SDXL's ViT-bigG
    ids=["tiny", "vit-h", "vit-bigg"],
)
def test_openclip_names_cover_our_module(width: int, layers: int, projection: int, heads: int) -> None:
    shapes = openclip_shapes(width, layers, projection) | {
        "logit_scale": (),
        "attn_mask": (77, 77),
        "visual.proj": (3,),
    }
    names, architecture = openclip_names(shapes)
    config = Config(**architecture)
    assert (config.num_hidden_layers, config.intermediate_size, config.hidden_act) == (layers, 4 * width, "gelu")
    assert (config.num_attention_heads, config.projection_dim, config.pad_token) == (heads, projection, "!")
    with torch.device("meta"):
        module = CLIPText(config)
    assert set(names) == set(module.state_dict())
    assert names["text_model.encoder.layers.1.self_attn.k_proj.bias"].rows == (width, 2 * width)
    assert names["text_projection.weight"].transpose


def test_openclip_unknown_tower_key_is_passed_on_for_strict_loading() -> None:
    names, _ = openclip_names(openclip_shapes() | {"transformer.resblocks.0.attn.extra": (1,)})
    assert names["transformer.resblocks.0.attn.extra"].key == "transformer.resblocks.0.attn.extra"


def test_sd2_single_file_names_report_keys_under_model() -> None:
    names, architecture = single_file_names({"model." + k: v for k, v in openclip_shapes().items()})
    assert architecture["clip_skip"] == 2
    assert names["text_model.embeddings.token_embedding.weight"].key == "model.token_embedding.weight"
    with pytest.raises(Unreadable) as info:
        single_file_names({"model.ln_final.weight": (64,)})
    assert "model.token_embedding.weight" in info.value.missing


def test_sdxl_file_is_named_as_a_lookalike(tmp_path: Path) -> None:
    path = tmp_path / "sdxl.safetensors"
    state = {"model.diffusion_model.out.2.bias": torch.zeros(1), "conditioner.embedders.1.model.x": torch.zeros(1)}
    weights.save_state_dict(state, path)
    with pytest.raises(WeightsError, match=r"no cond_stage_model\.\* keys .*SDXL's two text encoders"):
        weights.read_component_weights(path, clip_text.SPEC)


def test_deepcopy_gives_the_same_embeddings(text: CLIPText) -> None:
    with torch.inference_mode():
        torch.testing.assert_close(copy.deepcopy(text)(["a cat"]), text(["a cat"]), rtol=0, atol=0)


@pytest.mark.parametrize("bad", ["a single string", [1, 2], None])
def test_rejects_non_list_input(text: CLIPText, bad) -> None:
    with pytest.raises(InputError, match="list of prompt strings"):
        text(bad)


def test_shorter_max_length() -> None:
    text = tiny(max_length=8)
    with pytest.warns(UserWarning, match="more than the 6"):
        out = text(["one two three four five six seven"])
    assert out.shape == (1, 8, 32)


# -- config ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"clip_skip": 4}, "clip_skip 4 exceeds num_hidden_layers 3"),
        ({"clip_skip": 0}, "greater than or equal to 1"),
        ({"num_attention_heads": 5}, "not divisible"),
        ({"max_length": 78}, "exceeds max_position_embeddings"),
        ({"hidden_act": "relu"}, "quick_gelu"),
        ({"hidden_dropout": 0.1}, "Extra inputs are not permitted"),
        ({"projection_dim": 0}, "greater than or equal to 1"),
        ({"final_layer_norm": "sometimes"}, "valid boolean"),
    ],
)
def test_config_rejects(overrides: dict, message: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=message):
        Config(**TINY | overrides)


def test_defaults_are_sd1_text_tower() -> None:
    config = Config()
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (768, 12, 12)
    assert (config.intermediate_size, config.hidden_act, config.vocab_size, config.max_length) == (
        3072,
        "quick_gelu",
        49408,
        77,
    )


def test_vocab_size_must_cover_the_tokenizer() -> None:
    with pytest.raises(ConfigError, match="49408 tokens but vocab_size is 1000"):
        CLIPText(Config(**TINY | {"vocab_size": 1000}))


def test_plugin_declares_a_buildable_example() -> None:
    (spec,) = clip_text.diffstack_components()
    assert (spec.kind, spec.name) == ("text", "clip-text")
    component = spec.build(spec.config(**spec.example_config))
    with torch.inference_mode():
        assert component(["a cat"]).shape == (1, 77, spec.example_config["hidden_size"])


def test_registered_as_a_builtin() -> None:
    manager = PluginManager.discover(entry_points=False)
    assert manager.get("text", "clip-text").spec.factory is CLIPText


# -- tokenizer sources -----------------------------------------------------------------------------------------


def test_shipped_vocabulary_and_its_license_are_packaged() -> None:
    assert SHIPPED_VOCAB.is_file()
    assert "Copyright (c) 2021 OpenAI" in (SHIPPED_VOCAB.parent / "LICENSE").read_text()


def test_diffusers_folder_gives_the_same_ids(tmp_path: Path, tokenizer: CLIPTokenizer) -> None:
    folder = write_folder(tmp_path / "sd15" / "tokenizer", {"pad_token": "<|endoftext|>"})
    prompts = ["A photo of an astronaut, riding a HORSE!", "", "café 🐱 it's"]
    expected = tokenizer(prompts)
    assert torch.equal(CLIPTokenizer(folder)(prompts), expected)
    assert torch.equal(CLIPTokenizer(folder.parent)(prompts), expected)  # the model folder holding tokenizer/


def test_folder_special_tokens_map_sets_the_pad_token(tmp_path: Path) -> None:
    """SD 2.x tokenizers pad with "!" (id 0); a "!" inside the prompt stays an ordinary token."""
    pad = {"content": "!", "lstrip": False, "normalized": False, "rstrip": False, "single_word": False}
    sd2 = CLIPTokenizer(write_folder(tmp_path / "tokenizer", {"pad_token": pad}))
    ids = sd2(["wow!"])[0].tolist()
    assert ids[:4] == [BOS, 2781, 256, EOS]  # "wow</w>", "!</w>"
    assert ids[4:] == [0] * 73


def test_tokenizer_config_json_is_read_when_there_is_no_special_tokens_map(tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "tokenizer")
    (folder / "tokenizer_config.json").write_text(json.dumps({"pad_token": "!", "model_max_length": 77}))
    assert CLIPTokenizer(folder)([""])[0, -1] == 0


def test_literal_special_tokens_in_a_prompt(tokenizer: CLIPTokenizer) -> None:
    assert tokenizer(["a <|endoftext|> b"])[0, :5].tolist() == [BOS, 320, EOS, 321, EOS]


def missing(d: Path) -> Path:
    return d / "missing"


def folder_without_vocab(d: Path) -> Path:
    return d


def not_gzip(d: Path) -> Path:
    (d / "vocab.txt.gz").write_bytes(b"not gzip")
    return d / "vocab.txt.gz"


def short_gz(d: Path) -> Path:
    (d / "vocab.txt.gz").write_bytes(gzip.compress(b"header\na b\n"))
    return d / "vocab.txt.gz"


def unknown_special_token(d: Path) -> Path:
    return write_folder(d, {"bos_token": "<|start|>"})


def bad_merge_line(d: Path) -> Path:
    (write_folder(d) / "merges.txt").write_text("a b c\n")
    return d


def bad_vocab_json(d: Path) -> Path:
    (write_folder(d) / "vocab.json").write_text("{")
    return d


@pytest.mark.parametrize(
    "make, message",
    [
        (missing, "no such file or folder"),
        (folder_without_vocab, "no vocab.json"),
        (not_gzip, "not a readable gzip"),
        (short_gz, "expected 48894 merges"),
        (unknown_special_token, "not in the vocabulary: bos '<|start|>'"),
        (bad_merge_line, "merges.txt line 1"),
        (bad_vocab_json, "cannot read vocab.json"),
    ],
    ids=lambda x: x.__name__ if callable(x) else "",
)
def test_bad_tokenizer_source_is_a_clear_weights_error(tmp_path: Path, make, message: str) -> None:
    source = make(tmp_path)
    with pytest.raises(WeightsError, match=message) as info:
        CLIPText(Config(**TINY | {"tokenizer": source}))
    assert str(tmp_path) in str(info.value)
