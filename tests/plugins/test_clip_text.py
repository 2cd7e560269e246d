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

from core import ConfigError, InputError, PluginManager, TextConditioner, WeightsError
from core.contracts import TextConditionerContract
from plugins import clip_text
from plugins.clip_text import CLIPText, Config
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
