"""`sdxl-text`: the text contract, how the two towers combine, the empty-prompt rule, and config errors.
(Each tower's parity with transformers: tests/parity/test_clip_parity.py; the whole conditioner inside SDXL's
pipeline: tests/parity/test_family_parity.py.)"""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

import core
from core.contracts import TextConditionerContract
from plugins.sdxl_text import SPEC, Config, SDXLText

TINY = SPEC.example_config


@pytest.fixture(scope="module")
def text() -> SDXLText:
    torch.manual_seed(0)
    module = SDXLText(Config.model_validate(TINY)).eval()
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return module


class TestSDXLText(TextConditionerContract):
    @pytest.fixture
    def component(self, text: SDXLText) -> SDXLText:
        return text


def test_the_context_is_both_towers_side_by_side_and_pooled_is_the_second_towers(text: SDXLText) -> None:
    prompts = ["a red circle", "two squares"]
    with torch.inference_mode():
        out = text(prompts)
        first, _ = text.text_encoder.encode(prompts)
        second, pooled = text.text_encoder_2.encode(prompts)
    assert isinstance(out, core.Conditioning) and text.added_outputs == {"pooled": (16,)}
    assert torch.equal(out.context, torch.cat([first, second], dim=-1)) and out.context.shape == (2, 77, 64)
    assert torch.equal(out.added["pooled"], pooled)


def test_an_empty_prompt_is_zeros_unless_switched_off(text: SDXLText) -> None:
    with torch.inference_mode():
        out = text(["", "a cat"])
        kept = SDXLText(Config.model_validate({**TINY, "zeros_for_empty_prompt": False}))
        kept.load_state_dict(text.state_dict())
        encoded = kept.eval()([""])
    assert not out.context[0].any() and not out.added["pooled"][0].any()
    assert out.context[1].abs().sum() > 0
    assert encoded.context.abs().sum() > 0 and encoded.added["pooled"].abs().sum() > 0


def test_the_towers_read_sdxls_penultimate_state_without_the_final_norm() -> None:
    config = Config()
    for tower in (config.text_encoder, config.text_encoder_2):
        assert (tower.clip_skip, tower.final_layer_norm) == (2, False)
    assert (config.text_encoder.hidden_size, config.text_encoder_2.hidden_size) == (768, 1280)
    assert config.text_encoder_2.projection_dim == 1280 and config.text_encoder_2.pad_token == "!"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"text_encoder_2": {**TINY["text_encoder_2"], "projection_dim": None}}, "needs a projection_dim"),
        ({"text_encoder": {**TINY["text_encoder"], "max_length": 64}}, "max_length differ"),
    ],
)
def test_config_errors(change: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Config.model_validate({**TINY, **change})


def test_prompts_that_are_not_a_list_of_strings_are_input_errors(text: SDXLText) -> None:
    with pytest.raises(core.InputError, match="expects a list of prompt strings"):
        text("a cat")  # type: ignore[arg-type]
