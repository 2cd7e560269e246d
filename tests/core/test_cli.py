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


def test_a_name_clash_disables_one_name_and_strict_makes_it_fatal(install_distribution, tmp_path, capsys):
    from test_plugin_manager import install_clashing_pair

    install_clashing_pair(install_distribution)
    out = tmp_path / "out"
    assert main(["generate", "a large red circle on a blue background", "--steps", "2", "--out", str(out)]) == 0
    assert len(list(out.glob("*.png"))) == 1
    err = capsys.readouterr().err
    assert err.count("scheduler 'acme' is provided by 2 plugins") == 1 and "first-dist 1.0" in err
    for argv in (["list"], ["validate"]):
        assert main(argv) == 0
    assert core.create("scheduler", "one") and core.create("scheduler", "ddim")
    capsys.readouterr()
    assert main(["--strict", "generate", "x", "--out", str(tmp_path / "strict")]) == 1
    assert "error: scheduler 'acme' is provided by 2 plugins" in capsys.readouterr().err
    assert not (tmp_path / "strict").exists()


def test_strict_generate_refuses_a_broken_plugin_and_plain_runs_warn_once(install_distribution, tmp_path, capsys):
    install_distribution("bad-dist", "0.0.1", entry_points={"bad": "bad_mod"}, modules={"bad_mod": "1/0"})
    assert main(["--strict", "generate", "x", "--out", str(tmp_path / "strict")]) == 1
    assert "error: plugin 'bad' from package bad-dist 0.0.1 failed to load" in capsys.readouterr().err
    assert main(["generate", "x", "--steps", "2", "--out", str(tmp_path / "plain")]) == 0
    assert capsys.readouterr().err.count("plugin 'bad' from package bad-dist 0.0.1 failed to load") == 1
