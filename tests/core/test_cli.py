"""The `diffstack` command: listing, validation, errors as one clear message with the right exit code."""

from __future__ import annotations

import pytest

import core
from core.cli import main

PLUGIN = """
from pydantic import BaseModel, ConfigDict
from core import ComponentSpec, hookimpl

class Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

@hookimpl
def diffstack_components():
    return [ComponentSpec(kind="sampler", name="acme-loop", factory=lambda c: c, config=Config, description="loops")]
"""


def test_version_and_help(capsys):
    with pytest.raises(SystemExit) as version:
        main(["--version"])
    assert version.value.code == 0
    assert capsys.readouterr().out.strip() == f"diffstack {core.__version__}"
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "examples:" in out and "diffstack check scheduler/ddim" in out


def test_list_shows_installed_plugins_with_their_package(install_distribution, capsys):
    install_distribution("acme-loops", "3.1.4", entry_points={"acme": "acme_loops"}, modules={"acme_loops": PLUGIN})
    assert main(["list", "plugins"]) == 0
    line = next(row for row in capsys.readouterr().out.splitlines() if row.startswith("acme "))
    assert "entry-point" in line and "acme-loops 3.1.4" in line and "sampler/acme-loop" in line
    assert main(["list", "components"]) == 0
    row = next(row for row in capsys.readouterr().out.splitlines() if row.startswith("sampler "))
    assert row.split() == ["sampler", "acme-loop", "acme", "loops"]


def test_list_reports_a_broken_plugin_and_goes_on(install_distribution, capsys):
    install_distribution("acme-loops", "3.1.4", entry_points={"acme": "acme_loops"}, modules={"acme_loops": PLUGIN})
    install_distribution(
        "bad-dist", "0.0.1", entry_points={"bad": "bad_mod"}, modules={"bad_mod": "import not_installed_xyz"}
    )
    assert main(["list", "plugins"]) == 0
    captured = capsys.readouterr()
    assert "warning: plugin 'bad' from package bad-dist 0.0.1 failed to load and was skipped" in captured.err
    assert "ModuleNotFoundError" in captured.err
    assert "acme-loops 3.1.4" in captured.out
    assert main(["--strict", "list", "plugins"]) == 1
    assert "error: plugin 'bad' from package bad-dist 0.0.1 failed to load" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["check", "scheduler"], 2, "expected KIND/NAME, got 'scheduler'"),
        (["check", "schedular/ddim"], 2, "unknown component kind 'schedular'"),
        (["check", "sampler/acme-lop"], 2, "did you mean 'acme-loop'"),
        (["check", "sampler/acme-loop", "--config", "{bad"], 2, "--config is not valid JSON"),
        (["check", "sampler/acme-loop", "--config", '{"x": 1}'], 2, "x: Extra inputs are not permitted"),
        (["validate", "/no/such/registry.yaml"], 2, "registry file not found: /no/such/registry.yaml"),
    ],
)
def test_errors_are_one_clear_message(install_distribution, capsys, argv, code, message):
    install_distribution("acme-loops", "3.1.4", entry_points={"acme": "acme_loops"}, modules={"acme_loops": PLUGIN})
    assert main(argv) == code
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err
    assert "Traceback" not in err


def test_debug_shows_the_traceback(capsys):
    assert main(["--debug", "validate", "/no/such/registry.yaml"]) == 2
    assert "Traceback" in capsys.readouterr().err


def test_unknown_command_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as caught:
        main(["frobnicate"])
    assert caught.value.code == 2
