"""`core.create`: one component from its plugin's Config, with field-level errors."""

from __future__ import annotations

import pytest

import core
from core import ConfigError, UnknownComponentError

PLUGIN = """
from typing import Literal
from pydantic import BaseModel, ConfigDict, Field
from core import ComponentSpec, hookimpl

class Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    eta: float = Field(0.0, ge=0.0, le=1.0)
    spacing: Literal["leading", "trailing"] = "leading"

class Rule:
    def __init__(self, config):
        self.config = config

@hookimpl
def diffstack_components():
    return [ComponentSpec(kind="scheduler", name="rule", factory=Rule, config=Config)]
"""


@pytest.fixture(autouse=True)
def rule_plugin(install_distribution):
    install_distribution("rule-dist", "1.0", entry_points={"rule": "rule_mod"}, modules={"rule_mod": PLUGIN})


def test_create_applies_overrides_on_defaults():
    rule = core.create("scheduler", "rule", eta=0.25)
    assert (rule.config.eta, rule.config.spacing) == (0.25, "leading")


def test_create_reports_every_bad_field():
    with pytest.raises(ConfigError) as caught:
        core.create("scheduler", "rule", eta=2.0, spacing="middle", etta=1)
    message = str(caught.value)
    assert "scheduler 'rule'" in message
    assert "eta: Input should be less than or equal to 1" in message
    assert "spacing: Input should be 'leading' or 'trailing'" in message
    assert "etta: Extra inputs are not permitted" in message
    assert caught.value.exit_code == 2


def test_create_unknown_name():
    with pytest.raises(UnknownComponentError, match=r"did you mean 'rule'"):
        core.create("scheduler", "rul")
