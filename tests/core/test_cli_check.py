"""`diffstack check KIND/NAME` runs the contract suite on an installed plugin and prints each check."""

from __future__ import annotations

import pytest

from core.cli import main
from core.contracts import CONTRACTS

BROKEN = """
import torch
from core import ComponentSpec, hookimpl
import toy_plugin

class SwappedTimesteps(toy_plugin.ToyScheduler):
    def set_timesteps(self, num_inference_steps, device=None, *, strength=1.0):
        super().set_timesteps(num_inference_steps, device, strength=strength)
        self.timesteps = self.timesteps.flip(0)

@hookimpl
def diffstack_components():
    config = toy_plugin.ToySchedulerConfig
    return [ComponentSpec(kind="scheduler", name="swapped", factory=SwappedTimesteps, config=config)]
"""


@pytest.fixture(autouse=True)
def toy_installed(install_distribution):
    install_distribution("diffstack-toys", "0.0.1", entry_points={"toy": "toy_plugin"})


@pytest.mark.parametrize("kind", sorted(CONTRACTS))
def test_check_passes_every_toy_component(kind, capsys):
    assert main(["check", f"{kind}/toy-{kind}"]) == 0
    out = capsys.readouterr().out
    checks = CONTRACTS[kind].check_names()
    assert "package diffstack-toys 0.0.1" in out
    for check in checks:
        assert f"PASS  {check.removeprefix('test_')}" in out
    assert out.rstrip().endswith(f"{len(checks)} passed, 0 failed")


def test_check_uses_the_given_config(capsys):
    assert main(["check", "denoiser/toy-denoiser", "--config", '{"in_channels": 3, "context_dim": 5}']) == 0
    assert '"in_channels":3' in capsys.readouterr().out


def test_check_fails_a_broken_plugin_on_the_check_it_violates(install_distribution, capsys):
    install_distribution(
        "broken-scheduler", "1.0", entry_points={"swapped": "swapped_mod"}, modules={"swapped_mod": BROKEN}
    )
    assert main(["check", "scheduler/swapped"]) == 1
    out = capsys.readouterr().out
    failed = [line.split()[1].rstrip(":") for line in out.splitlines() if line.startswith("  FAIL")]
    assert "timesteps_descending" in failed
    assert "PASS  init_noise_sigma" in out
    assert f"{len(failed)} failed" in out
    after = out.split("FAIL  timesteps_descending", 1)[1].splitlines()
    rule = next(line.strip() for line in after if line.strip().startswith("rule:"))
    assert rule.startswith('rule: `set_timesteps(n, device="cpu")` makes `timesteps` a 1-D CPU tensor')
    assert "rule:" not in out.split("PASS  init_noise_sigma", 1)[1].splitlines()[1]


def test_verbose_prints_every_rule(capsys):
    assert main(["check", "scheduler/toy-scheduler", "--verbose"]) == 0
    out = capsys.readouterr().out
    assert out.count("rule: ") == len(CONTRACTS["scheduler"].check_names())


KWARGS_SCHEDULER = """
import toy_plugin
from core import ComponentSpec, hookimpl

class KeywordsOnly(toy_plugin.ToyScheduler):
    \"\"\"diffusers' style: built from keyword arguments, so `type(s)(s.config)` fails.\"\"\"
    def __init__(self, config=None, **kwargs):
        if config is not None:
            raise TypeError("linspace() received an invalid combination of arguments - got (float, float, FrozenDict)")
        super().__init__(toy_plugin.ToySchedulerConfig(**kwargs))

@hookimpl
def diffstack_components():
    return [ComponentSpec("scheduler", "keywords", lambda config: KeywordsOnly(), toy_plugin.ToySchedulerConfig)]
"""


def test_a_constructor_that_refuses_its_config_is_one_clear_failure(install_distribution, capsys):
    modules = {"keywords_mod": KWARGS_SCHEDULER}
    install_distribution("keywords-scheduler", "1.0", entry_points={"keywords": "keywords_mod"}, modules=modules)
    assert main(["check", "scheduler/keywords"]) == 1
    out = capsys.readouterr().out
    assert (
        "FAIL  constructor_accepts_its_own_config: the constructor must accept its own config: KeywordsOnly(s.config)"
        in out
    )
    rebuilt_failures = [line for line in out.splitlines() if "see constructor_accepts_its_own_config" in line]
    assert rebuilt_failures and all(len(line) < 200 for line in rebuilt_failures)
    assert "PASS  timesteps_descending" in out
