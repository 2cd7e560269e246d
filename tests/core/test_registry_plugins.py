"""Plugins named under a registry's `plugins:` are first-class: `list` and `check` see them with `--registry`,
and a factory that returns the wrong kind of object is reported by `validate` and by `generate`, by name."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

import core
from core.cli import main
from core.registry import bundled_registry_path

PLUGIN = """
from pydantic import BaseModel, ConfigDict
from core import ComponentSpec, hookimpl
from plugins.ddim import DDIM, Config

class Empty(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

class NotAScheduler:
    def __init__(self, config):
        self.config = config

@hookimpl
def diffstack_components():
    return [
        ComponentSpec("scheduler", "fine", DDIM, Config, example_config={"clip_sample": False}),
        ComponentSpec("scheduler", "hollow", NotAScheduler, Empty),
    ]
"""


def write_registry(folder: Path, scheduler: str) -> Path:
    (folder / "localplug.py").write_text(PLUGIN)
    models = bundled_registry_path().parent / "models" / "shapes-tiny"
    registry = folder / "registry.yaml"
    registry.write_text(
        textwrap.dedent(f"""\
        version: 1
        plugins: [localplug]
        pipelines:
          local:
            encoder: {{plugin: vae-kl, weights: {models / "encoder.safetensors"}}}
            denoiser: {{plugin: unet2d-condition, weights: {models / "denoiser.safetensors"}}}
            text: {{plugin: clip-text, weights: {models / "text.safetensors"}}}
            scheduler: {{plugin: {scheduler}}}
            sampler: {{plugin: cfg}}
            defaults: {{height: 64, width: 64, steps: 2}}
        """)
    )
    return registry


@pytest.fixture
def clean_modules(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.delitem(sys.modules, "diffstack_registry_plugin_localplug", raising=False)


def test_a_factory_returning_the_wrong_object_is_a_validate_and_generate_error(tmp_path, capsys, clean_modules):
    registry = write_registry(tmp_path, "hollow")
    assert main(["validate", str(registry)]) == 2
    err = capsys.readouterr().err
    assert "pipeline 'local' -> scheduler: scheduler plugin 'hollow' returned a NotAScheduler" in err
    assert "which lacks order, timesteps, init_noise_sigma, set_timesteps" in err and "Traceback" not in err
    assert main(["generate", "x", "--registry", str(registry), "--out", str(tmp_path / "out")]) == 1
    assert "returned a NotAScheduler, which lacks" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_list_and_check_see_registry_plugins(tmp_path, capsys, clean_modules):
    registry = write_registry(tmp_path, "fine")
    assert main(["validate", str(registry)]) == 0
    assert main(["list", "plugins", "--registry", str(registry)]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("localplug "))
    assert "registry" in row and "scheduler/fine" in row and "scheduler/hollow" in row
    assert main(["check", "scheduler/fine", "--registry", str(registry)]) == 0
    assert "17 passed, 0 failed" in capsys.readouterr().out
    assert main(["check", "scheduler/fine"]) == 2


def test_a_misspelled_plugins_module_says_where_it_looked_and_what_is_there(tmp_path):
    (tmp_path / "my_rules.py").write_text("")
    path = tmp_path / "registry.yaml"
    path.write_text("version: 1\nplugins: [my_rule]\ncomponents:\n  s: {kind: scheduler, plugin: mine}\n")
    with pytest.raises(core.RegistryError) as caught:
        core.load_registry(path)
    first, second = caught.value.problems
    assert f"(no {tmp_path / 'my_rule.py'}, so it was imported by name) (did you mean 'my_rules'?)" in first
    assert second.endswith("the `plugins:` module 'my_rule' that failed above may provide it")
