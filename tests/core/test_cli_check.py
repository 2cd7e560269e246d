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
