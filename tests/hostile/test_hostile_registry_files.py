"""Hostile registry files: each is a RegistryError naming the file, quickly, with no traceback from the CLI
and nothing written (issue 17, "bounded parsing")."""

from __future__ import annotations

import re
import time
import tracemalloc
from pathlib import Path

import pytest

import core
from core import RegistryError
from core.bounded_yaml import MAX_DEPTH, MAX_NODES
from core.cli import main
from core.validation import MAX_SHOWN

LAUGHS = (
    "version: 1\na: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
    + "".join(
        f"{name}: &{name} [{', '.join([f'*{previous}'] * 9)}]\n"
        for previous, name in zip("abcdefgh", "bcdefghi", strict=True)
    )
    + "components: *i\n"
)  # 9^9 ≈ 387 million strings from 0.4 KB

CASES = {
    "billion-laughs": (LAUGHS.encode(), rf"expands to more than {MAX_NODES} values"),
    "deeply-nested": (b"version: 1\ncomponents: " + b"[" * 5000 + b"]" * 5000, rf"nested more than {MAX_DEPTH}"),
    "binary": (b"\x89PNG\r\n\x1a\n\x00\xff\xfe\x00", r"not UTF-8 text \(byte 0\)"),
    "huge-integer": (b"version: 1\ndefault_pipeline: " + b"9" * 5000, r"integer string conversion"),
    "too-large": (b"version: 1\n" + b"#" * (2 << 20), r"bytes is not a registry file"),
    "top-level-list": (b"- version: 1\n", r"the top level must be a mapping"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_hostile_registry_is_refused_quickly_and_cheaply(tmp_path: Path, name: str) -> None:
    content, message = CASES[name]
    path = tmp_path / "registry.yaml"
    path.write_bytes(content)
    tracemalloc.start()
    began = time.perf_counter()
    try:
        with pytest.raises(RegistryError, match=message) as caught:
            core.load_registry(path)
        seconds, peak = time.perf_counter() - began, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert str(caught.value).startswith(str(path))
    assert seconds < 2 and peak < 50e6, (seconds, peak)


@pytest.mark.parametrize("command", [["validate", "{path}"], ["list", "pipelines", "--registry", "{path}"],
                                     ["generate", "x", "--registry", "{path}", "--out", "{out}"]])  # fmt: skip
def test_the_cli_prints_one_error_and_writes_nothing(tmp_path, capsys, command):
    path = tmp_path / "registry.yaml"
    path.write_text(LAUGHS)
    out = tmp_path / "out" / "image.png"
    assert main([part.format(path=path, out=out) for part in command]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}: refused: expands to more than") and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["registry.yaml"]


def test_an_offending_value_is_shown_short(tmp_path):
    path = tmp_path / "registry.yaml"
    path.write_text("version: 1\ncomponents: [" + ", ".join(["x" * 50] * 2000) + "]\n")
    with pytest.raises(RegistryError) as caught:
        core.load_registry(path)
    [line] = [line for line in str(caught.value).splitlines() if "components:" in line]
    assert len(line) < MAX_SHOWN + 100, line


def test_a_registry_with_a_few_aliases_still_loads(tmp_path):
    path = tmp_path / "registry.yaml"
    path.write_text(
        "version: 1\n"
        "x-schedule: &schedule {beta_schedule: scaled_linear, beta_start: 0.00085, beta_end: 0.012}\n"
        "components:\n"
        "  s1: {kind: scheduler, plugin: ddim, config: *schedule}\n"
        "  s2: {kind: scheduler, plugin: euler, config: *schedule}\n"
    )
    with pytest.raises(RegistryError, match=r"x-schedule: Extra inputs are not permitted"):
        core.load_registry(path)  # the alias resolves; only the unknown top-level key is a problem


@pytest.mark.parametrize("module", ["../outside", "/tmp/evil", "sub/dir", "-rf"])
def test_a_plugins_entry_is_a_module_name_not_a_path(tmp_path, module):
    (tmp_path / "outside.py").write_text("raise SystemExit('imported from outside the registry folder')")
    folder = tmp_path / "registry"
    folder.mkdir()
    path = folder / "registry.yaml"
    path.write_text(f"version: 1\nplugins: [{module!r}]\n")
    with pytest.raises(RegistryError, match=rf"plugins -> 0: plugins: '{re.escape(module)}' is not a module name"):
        core.load_registry(path)


def test_validate_holds_defaults_to_the_rules_a_call_is_held_to(tmp_path, capsys):
    path = tmp_path / "registry.yaml"
    path.write_text(
        "version: 1\nextends: bundled\npipelines:\n  odd:\n    encoder: shapes-vae\n    denoiser: shapes-unet\n"
        "    text: shapes-clip\n    scheduler: {plugin: ddim}\n    sampler: {plugin: cfg}\n"
        "    defaults: {height: 60, width: 64, steps: 20}\n"
    )
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "pipeline 'odd': height 60 is not a positive multiple of 8 (the encoder's downsample factor)" in err
