"""Parity of `clip-text` with transformers (test-only oracle): `CLIPTextModel` and `CLIPTextModelWithProjection`
on the same random weights (SD 1.x, SD 2.x's truncated tower, SDXL's penultimate un-normed context and pooled
projection), and `CLIPTokenizer` built from the same vocabulary files (derived here from the shipped OpenAI .gz,
no downloads).

transformers 5's `CLIPTokenizer` is the `tokenizers`-backed one only: it never uses ftfy (not installed here
either) nor html.unescape, which OpenAI's reference tokenizer applies first. Prompts with mojibake or HTML
entities ("&amp;") therefore tokenize like transformers/diffusers, not like OpenAI's original.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
from reference_sd import write_vocab_folder

from plugins.clip_text import CLIPText, Config
from plugins.clip_text.tokenizer import CLIPTokenizer

transformers = pytest.importorskip("transformers")

MAX_LENGTH = 77


@pytest.fixture(scope="module")
def vocab_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_vocab_folder(tmp_path_factory.mktemp("tokenizer"))


@pytest.fixture(scope="module")
def reference_tokenizer(vocab_folder: Path):
    return transformers.CLIPTokenizer.from_pretrained(vocab_folder)


def reference_ids(tokenizer, prompts: list[str]) -> torch.Tensor:
    """How diffusers' SD pipelines tokenize."""
    batch = tokenizer(prompts, padding="max_length", max_length=MAX_LENGTH, truncation=True, return_tensors="pt")
    return batch.input_ids


def varied_prompts() -> list[str]:
    """≥ 300 prompts: punctuation, case, digits, apostrophes, accents, CJK, emoji, whitespace, long, empty."""
    hand = [
        "",
        " ",
        "   ",
        "\n",
        "\t\t",
        "a",
        "A",
        "a photo of an astronaut riding a horse on mars",
        "A Photo Of An ASTRONAUT",
        "hello, world!",
        "hello,world!!!",
        "what?!?",
        "...",
        "--- ___ ***",
        "(masterpiece:1.2), best quality, ((detailed))",
        "[cat|dog]",
        "{a, b}",
        "<lora:foo:0.8>",
        "it's",
        "IT'S",
        "don't won't can't",
        "we're they've I'm you'll he'd",
        "rock 'n' roll",
        "'quoted'",
        "o'clock",
        "''s",
        "'s",
        "the 1990s",
        "2024-01-01",
        "3.14159",
        "1,000,000",
        "42",
        "x²+y³",
        "½ ¼ ¾",
        "café naïve résumé",
        "Crème Brûlée",
        "ÀÉÎÕÜ",
        "straße STRASSE",
        "İstanbul ıi",
        "Ελληνικά ΣΊΣΥΦΟΣ",
        "Москва ЁЖ",
        "日本語のテキスト",
        "中文字符测试",
        "한국어 텍스트",
        "ไทย",
        "עברית",
        "العربية",
        "emoji 😀🎉🔥",
        "👍🏽",
        "👨‍👩‍👧‍👦 family",
        "🇯🇵 flag",
        "❤️ heart",
        "a😀b",
        "e\u0301 combining",
        "multiple    spaces",
        "tabs\tand\nnewlines\r\nmixed",
        "  leading and trailing  ",
        "\u00a0nbsp\u2003em",
        "zero\u200bwidth",
        "<|startoftext|>",
        "<|endoftext|>",
        "a <|endoftext|> b",
        "<|ENDOFTEXT|>",
        "a<|startoftext|>b",
        "!",
        "hello!",
        "wow!!",
        "#hashtag @mention",
        "https://example.com/a?b=c&d=e",
        "email@example.com",
        "C++ and C#",
        "$100 €50 £20 ¥1000",
        "100%",
        "a/b\\c",
        "snake_case camelCase",
        "&amp; &lt;tag&gt;",
        '"double" “curly” ‘single’',
        "em—dash en–dash",
        "…ellipsis",
        "~~~~~",
        "😀" * 100,
        "word " * 100,
        "a, " * 60,
        "supercalifragilisticexpialidocious " * 10,
        "1234567890" * 10,
    ]
    rng = random.Random(0)
    parts = [
        "a",
        "the",
        "photo",
        "of",
        "red",
        "Blue",
        "CIRCLE",
        "square",
        "on",
        "background",
        "4k",
        "8K",
        "HDR",
        "it's",
        "don't",
        "they're",
        "we've",
        "I'm",
        "you'll",
        "she'd",
        ",",
        ".",
        "!",
        "?",
        ":",
        ";",
        "(",
        ")",
        "((",
        "))",
        "[",
        "]",
        "-",
        "_",
        "'",
        '"',
        "&",
        "#",
        "%",
        "+",
        "=",
        "/",
        "1",
        "23",
        "456",
        "2.5",
        "café",
        "naïve",
        "Über",
        "東京",
        "猫",
        "ラーメン",
        "😀",
        "🔥",
        "🐱",
        "✨",
        "\u00e9",
        "e\u0301",
        "  ",
        "\t",
        "\n",
    ]
    generated = []
    for _ in range(260):
        words = rng.choices(parts, k=rng.randint(1, 40))
        generated.append("".join(w + rng.choice(["", " ", " ", " ", "  "]) for w in words))
    prompts = hand + generated
    assert len(prompts) >= 300
    return prompts


def test_tokenizer_matches_transformers(reference_tokenizer, vocab_folder: Path) -> None:
    prompts = varied_prompts()
    expected = reference_ids(reference_tokenizer, prompts)
    for source in (None, vocab_folder):  # the shipped .gz and the derived vocab.json/merges.txt
        tokenizer = CLIPTokenizer(source)
        with pytest.warns(UserWarning, match="truncated"):
            ours = tokenizer(prompts)
        mismatched = [p for p, a, b in zip(prompts, ours, expected, strict=True) if not torch.equal(a, b)]
        assert not mismatched, f"{len(mismatched)} prompts differ, e.g. {mismatched[:3]!r}"


def test_shipped_vocabulary_is_openais(reference_tokenizer) -> None:
    """Well-known SD 1.x ids, so the shipped file is the vocabulary real checkpoints were trained with."""
    ids = reference_ids(reference_tokenizer, ["a photo of an astronaut riding a horse"])[0, :10].tolist()
    assert ids == [49406, 320, 1125, 539, 550, 18376, 6765, 320, 4558, 49407]
    assert len(reference_tokenizer) == 49408


OURS_ONLY = {"clip_skip", "final_layer_norm", "max_length", "tokenizer", "pad_token", "projection_dim"}


def randomized(reference):
    """`reference` with every weight random (LayerNorm scales near 1), in eval mode."""
    with torch.no_grad():
        for name, p in reference.named_parameters():
            is_norm_scale = "norm" in name and name.endswith("weight")
            p.copy_(1 + 0.1 * torch.randn_like(p) if is_norm_scale else 0.1 * torch.randn_like(p))
    return reference.eval()


def random_pair(config: Config, seed: int, **reference_overrides):
    """Our model and transformers' (`CLIPTextModelWithProjection` when `projection_dim` is set, else
    `CLIPTextModel`) with the same random weights (LayerNorms included), fp32."""
    torch.manual_seed(seed)
    reference_config = transformers.CLIPTextConfig(
        **config.model_dump(exclude=OURS_ONLY), attn_implementation="eager", **reference_overrides
    )
    if config.projection_dim is None:
        reference = randomized(transformers.CLIPTextModel(reference_config))
    else:
        reference_config.projection_dim = config.projection_dim
        reference = randomized(transformers.CLIPTextModelWithProjection(reference_config))
    ours = CLIPText(config).eval()
    ours.load_state_dict(ours_from_transformers(reference.state_dict()), strict=True)
    return ours, reference


def ours_from_transformers(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers 5's CLIPTextModel is the text transformer itself (keys without `text_model.`, as it saves
    them); a CLIPTextModelWithProjection holds it as `text_model` beside `text_projection`."""
    return {k if k.startswith(("text_model.", "text_projection.")) else f"text_model.{k}": v for k, v in state.items()}


def scaled_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """max |actual − expected| relative to max(1, max |expected|)."""
    return (actual - expected).abs().max().item() / max(expected.abs().max().item(), 1.0)


CONFIGS = [
    dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4),
    dict(
        hidden_size=48, intermediate_size=80, num_hidden_layers=3, num_attention_heads=6, hidden_act="gelu", clip_skip=2
    ),
    dict(
        hidden_size=64,
        intermediate_size=100,
        num_hidden_layers=4,
        num_attention_heads=2,
        clip_skip=2,
        layer_norm_eps=1e-6,
    ),
    dict(
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=3,
        num_attention_heads=1,
        hidden_act="gelu",
        clip_skip=3,
        max_position_embeddings=80,
    ),
    dict(
        hidden_size=24,
        intermediate_size=24,
        num_hidden_layers=1,
        num_attention_heads=3,
        max_length=20,
        max_position_embeddings=20,
    ),
]


@pytest.mark.parametrize("overrides", CONFIGS, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items())[:60])
def test_model_matches_transformers(overrides: dict, reference_tokenizer) -> None:
    config = Config(**overrides)
    ours, reference = random_pair(config, seed=len(CONFIGS) + config.hidden_size)
    prompts = ["a photo of an astronaut riding a horse", "", "🐱 café, it's 4K!!", "word " * 10]
    ids = reference_tokenizer(
        prompts, padding="max_length", max_length=config.max_length, truncation=True, return_tensors="pt"
    ).input_ids
    with torch.inference_mode():
        out = reference(ids, output_hidden_states=True)
        # diffusers' recipe: hidden_states[-(its clip_skip + 1)] then the final norm; ours = its + 1
        expected = reference.final_layer_norm(out.hidden_states[-config.clip_skip])
        if config.clip_skip == 1:
            torch.testing.assert_close(expected, out.last_hidden_state, rtol=0, atol=0)
        actual = ours(prompts)
    assert actual.shape == (len(prompts), config.max_length, config.hidden_size)
    assert scaled_error(actual, expected) <= 1e-5


PROMPTS = ["a photo of an astronaut riding a horse", "", "🐱 café, it's 4K!!", "a <|endoftext|> b", "word " * 90]

PROJECTED = dict(hidden_size=48, intermediate_size=80, num_hidden_layers=3, num_attention_heads=6, hidden_act="gelu")


@pytest.mark.parametrize("eos_token_id", [49407, 2], ids=["eos-first-match", "legacy-eos-argmax"])
@pytest.mark.parametrize(
    "overrides",
    [
        dict(projection_dim=24, clip_skip=2, final_layer_norm=False),  # SDXL's towers
        dict(projection_dim=40),
        dict(projection_dim=16, clip_skip=3, final_layer_norm=True),
    ],
    ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()),
)
def test_projection_matches_clip_text_model_with_projection(
    overrides: dict, eos_token_id: int, reference_tokenizer
) -> None:
    """context = hidden_states[-clip_skip] (final-normed if final_layer_norm), pooled = text_embeds: the
    projection of the final-normed last layer at the first EOS (transformers' legacy configs with
    eos_token_id 2 take the argmax id instead, the same token for the OpenAI vocabulary, where EOS is the
    highest id)."""
    config = Config(**PROJECTED | overrides)
    ours, reference = random_pair(config, seed=config.projection_dim or 0, eos_token_id=eos_token_id)
    ids = reference_ids(reference_tokenizer, PROMPTS)
    with torch.inference_mode():
        out = reference(ids, output_hidden_states=True)
        hidden = out.hidden_states[-config.clip_skip]
        expected = reference.text_model.final_layer_norm(hidden) if config.final_layer_norm else hidden
        with pytest.warns(UserWarning, match="truncated"):
            context, pooled = ours.encode(PROMPTS)
        with pytest.warns(UserWarning, match="truncated"):
            conditioning = ours(PROMPTS)
    assert ours.added_outputs == {"pooled": (config.projection_dim,)}
    assert pooled is not None and pooled.shape == (len(PROMPTS), config.projection_dim)
    assert scaled_error(context, expected) <= 1e-5
    assert scaled_error(pooled, out.text_embeds) <= 1e-5
    assert torch.equal(conditioning.context, context) and torch.equal(conditioning.added["pooled"], pooled)


def test_truncated_tower_matches_clip_skip_2(reference_tokenizer) -> None:
    """SD 2.x: diffusers' folders hold the text tower cut to N − 1 layers (final norm kept), SD 2.x's own code
    takes the penultimate layer then the final norm: ours both ways vs transformers' N-layer model."""
    config = Config(**PROJECTED | {"clip_skip": 2})
    skipping, reference = random_pair(config, seed=7)
    truncated = CLIPText(Config(**PROJECTED | {"num_hidden_layers": 2})).eval()
    truncated.load_state_dict({k: v for k, v in skipping.state_dict().items() if ".layers.2." not in k})
    reference_truncated = transformers.CLIPTextModel(
        transformers.CLIPTextConfig(**Config(**PROJECTED | {"num_hidden_layers": 2}).model_dump(exclude=OURS_ONLY))
    ).eval()
    reference_truncated.load_state_dict({k.removeprefix("text_model."): v for k, v in truncated.state_dict().items()})
    prompts = PROMPTS[:4]
    ids = reference_ids(reference_tokenizer, prompts)
    with torch.inference_mode():
        out = reference(ids, output_hidden_states=True)
        expected = reference.final_layer_norm(out.hidden_states[-2])
        assert scaled_error(reference_truncated(ids).last_hidden_state, expected) <= 1e-6
        ours_skipping, ours_truncated = skipping(prompts), truncated(prompts)
    assert scaled_error(ours_skipping, expected) <= 1e-5
    assert scaled_error(ours_truncated, expected) <= 1e-5
    assert torch.equal(ours_skipping, ours_truncated)
