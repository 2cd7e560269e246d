"""Plugins that misbehave: `sys.exit(0)`, `KeyboardInterrupt`, exceptions in hooks. A command either does its
job (the plugin skipped, with a warning) or fails non-zero naming the plugin — never exit 0 in silence, never a
traceback, nothing written (issue 17, "containment")."""

from __future__ import annotations

import dataclasses
import os
import signal
import time
from pathlib import Path

import pytest
import torch

import core
from core import PluginError
from core.cli import main
from core.containment import contained, tracking_interrupts
from core.registry import bundled_registry_path

SHAPES = "a large red circle on a blue background"

EXITS_ON_IMPORT = "import sys\nsys.exit(0)\n"
INTERRUPTS_ON_IMPORT = "raise KeyboardInterrupt\n"
EXITS_IN_HOOK = """
import sys
from core import hookimpl

@hookimpl
def diffstack_components():
    sys.exit(0)
"""
EXITS_IN_FACTORY = """
import sys
from pydantic import BaseModel, ConfigDict
from core import ComponentSpec, hookimpl

class Config(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

def build(config):
    sys.exit(0)

@hookimpl
def diffstack_components():
    return [ComponentSpec("sampler", "quitter", build, Config)]
"""
STEP_HOOK = """
from core import hookimpl

@hookimpl
def diffstack_step_end(event):
    if event.step == 1:
        {statement}
"""
WEIGHTS_HOOK = """
from core import hookimpl

@hookimpl
def diffstack_load_weights(path, kind):
    raise OSError("cannot parse " + path.name)
"""


def generate(tmp_path: Path, *extra: str) -> int:
    return main([*extra[:1], "generate", SHAPES, "--steps", "2", "--out", str(tmp_path / "out"), *extra[1:]])


@pytest.mark.parametrize("source", [EXITS_ON_IMPORT, INTERRUPTS_ON_IMPORT, EXITS_IN_HOOK])
def test_an_installed_plugin_that_quits_while_loading_is_skipped(install_distribution, tmp_path, capsys, source):
    install_distribution("quitter", "0.1", entry_points={"quitter": "quitter_mod"}, modules={"quitter_mod": source})
    assert main(["generate", SHAPES, "--steps", "2", "--out", str(tmp_path / "out")]) == 0
    captured = capsys.readouterr()
    assert len(list((tmp_path / "out").glob("*.png"))) == 1
    [warning] = [line for line in captured.err.splitlines() if line.startswith("warning: plugin")]
    assert "plugin 'quitter' from package quitter 0.1 failed to load and was skipped" in warning
    assert ("SystemExit: sys.exit(0)" in warning) or ("KeyboardInterrupt" in warning)
    assert main(["--strict", "generate", SHAPES, "--steps", "2", "--out", str(tmp_path / "strict")]) == 1
    assert "quitter" in capsys.readouterr().err and not (tmp_path / "strict").exists()


def registry_with(tmp_path: Path, module: str, source: str, sampler: str = "cfg") -> Path:
    (tmp_path / f"{module}.py").write_text(source)
    path = tmp_path / "registry.yaml"
    path.write_text(
        f"version: 1\nextends: bundled\nplugins: [{module}]\n"
        "pipelines:\n  mine:\n    encoder: shapes-vae\n    denoiser: shapes-unet\n    text: shapes-clip\n"
        "    scheduler: {plugin: ddim, config: {clip_sample: false, beta_schedule: scaled_linear, "
        "beta_start: 0.00085, beta_end: 0.012}}\n"
        f"    sampler: {{plugin: {sampler}}}\n    defaults: {{height: 64, width: 64, steps: 2}}\n"
        "default_pipeline: mine\n"
    )
    return path


def test_a_registry_plugin_that_exits_on_import_is_a_registry_error(tmp_path, capsys):
    registry = registry_with(tmp_path, "exits", EXITS_ON_IMPORT)
    assert main(["validate", str(registry)]) == 2
    err = capsys.readouterr().err
    assert "plugins -> 0: plugin module 'exits' listed under `plugins:` failed to import: SystemExit" in err


def test_a_factory_that_exits_fails_the_command_naming_it(tmp_path, capsys):
    registry = registry_with(tmp_path, "quitter_factory", EXITS_IN_FACTORY, sampler="quitter")
    assert main(["generate", SHAPES, "--registry", str(registry), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "sampler plugin 'quitter', building it, raised SystemExit: sys.exit(0)" in err, err
    assert "Traceback" not in err and not (tmp_path / "out").exists()


@pytest.mark.parametrize(("statement", "shown"), [
    ("raise ValueError('bad event')", "ValueError: bad event"),
    ("import sys; sys.exit(0)", "SystemExit: sys.exit(0)"),
    ("raise KeyboardInterrupt", "KeyboardInterrupt"),
])  # fmt: skip
def test_a_step_hook_that_raises_stops_the_run_naming_it(tmp_path, capsys, statement, shown):
    registry = registry_with(tmp_path, "stepper", STEP_HOOK.format(statement=statement))
    assert main(["generate", SHAPES, "--registry", str(registry), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert f"error: plugin 'stepper' (module {tmp_path / 'stepper.py'}) in diffstack_step_end() raised {shown}" in err
    assert not (tmp_path / "out").exists()


def test_a_weights_hook_that_raises_names_the_plugin(tmp_path, capsys):
    registry = registry_with(tmp_path, "reader", WEIGHTS_HOOK)
    assert main(["generate", SHAPES, "--registry", str(registry), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "plugin 'reader'" in err and "in diffstack_load_weights() raised OSError: cannot parse" in err, err


def test_a_part_that_exits_mid_run_is_a_plugin_error():
    shapes_tiny = core.load_registry(bundled_registry_path()).build(device="cpu")

    class Quitting(torch.nn.Module):
        in_channels, context_dim = shapes_tiny.denoiser.in_channels, shapes_tiny.denoiser.context_dim

        def forward(self, sample, timestep, context):
            raise SystemExit(3)

    pipe = dataclasses.replace(shapes_tiny, denoiser=Quitting())
    with pytest.raises(PluginError, match=r"denoiser plugin 'unet2d-condition' .* raised SystemExit: sys.exit\(3\)"):
        pipe("a red circle")


def test_a_real_ctrl_c_still_interrupts_and_a_raised_one_is_the_plugins():
    with tracking_interrupts():
        with pytest.raises(PluginError, match="plugin x raised KeyboardInterrupt"), contained("plugin x"):
            raise KeyboardInterrupt  # no SIGINT behind it: the plugin's own
        with pytest.raises(KeyboardInterrupt), contained("plugin x"):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)  # interrupted at once
    with pytest.raises(KeyboardInterrupt), contained("plugin x"):  # nobody tracks: never second-guessed
        raise KeyboardInterrupt


def test_a_pydantic_error_from_plugin_code_shows_its_fields():
    from pydantic import BaseModel

    class Config(BaseModel):
        steps: int

    with pytest.raises(PluginError) as caught, contained("plugin x"):
        Config(steps="many")
    assert str(caught.value).startswith(
        "plugin x raised ValidationError of Config: steps: Input should be a valid integer, unable to parse string"
    )


def test_core_create_contains_a_factory_that_exits(install_distribution):
    install_distribution(
        "quitter", "0.1", entry_points={"quitter": "quitter_mod"}, modules={"quitter_mod": EXITS_IN_FACTORY}
    )
    with pytest.raises(PluginError, match=r"plugin 'quitter' \(module quitter_mod, package quitter 0.1\), building "
                                          r"sampler 'quitter', raised SystemExit: sys.exit\(0\)"):  # fmt: skip
        core.create("sampler", "quitter")
