"""`extends:` — a registry file builds on the bundled registry (`extends: bundled`) or on another file,
inheriting its plugins, components and pipelines with their weights."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest
import torch

import core
from core import RegistryError
from core.registry import bundled_registry_path

PARTS = Path(__file__).with_name("registry_parts.py")

BASE = """
version: 1
plugins: [registry_parts]
components:
  enc: {kind: encoder, plugin: part-encoder}
  den: {kind: denoiser, plugin: part-denoiser, weights: weights/den.safetensors}
  txt: {kind: text, plugin: part-text}
pipelines:
  base:
    encoder: enc
    denoiser: den
    text: txt
    scheduler: {plugin: part-scheduler}
    sampler: {plugin: part-sampler}
default_pipeline: base
"""


@pytest.fixture
def base(tmp_path: Path) -> tuple[Path, torch.nn.Linear]:
    """A registry in its own folder, with a plugin module and weights next to it."""
    folder = tmp_path / "shared"
    (folder / "weights").mkdir(parents=True)
    shutil.copy(PARTS, folder / PARTS.name)
    reference = torch.nn.Linear(4, 4)
    state = {f"proj.{k}": v for k, v in reference.state_dict().items()}
    core.weights.save_state_dict(state, folder / "weights/den.safetensors")
    (folder / "registry.yaml").write_text(textwrap.dedent(BASE))
    return folder / "registry.yaml", reference


def write(folder: Path, text: str) -> Path:
    path = folder / "mine.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_extends_bundled_reuses_the_shapes_tiny_parts(tmp_path):
    path = write(
        tmp_path,
        """
        version: 1
        extends: bundled
        pipelines:
          mine:
            encoder: shapes-vae
            denoiser: shapes-unet
            text: shapes-clip
            scheduler: {plugin: euler, config: {beta_schedule: scaled_linear, beta_start: 0.00085, beta_end: 0.012}}
            sampler: {plugin: cfg}
            defaults: {height: 64, width: 64, steps: 4}
        default_pipeline: mine
    """,
    )
    registry = core.load_registry(path)
    bundled = core.load_registry(bundled_registry_path())
    assert registry.pipeline_names == [*bundled.pipeline_names, "mine"]
    assert registry.default_pipeline == "mine"
    mine, theirs = registry.build(device="cpu"), bundled.build(device="cpu")
    for name, parameter in theirs.denoiser.state_dict().items():
        assert torch.equal(mine.denoiser.state_dict()[name], parameter), name


def test_inherited_weights_and_plugins_resolve_against_the_file_that_declares_them(base, tmp_path):
    base_file, reference = base
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    path = write(
        elsewhere,
        """
        version: 1
        extends: ../shared/registry.yaml
        pipelines:
          faster:
            encoder: enc
            denoiser: den
            text: txt
            scheduler: {plugin: part-scheduler, config: {eta: 0.5}}
            sampler: {plugin: part-sampler}
    """,
    )
    registry = core.load_registry(path)
    assert registry.default_pipeline == "base"  # inherited: this file sets none
    pipe = registry.build("faster", device="cpu")
    assert torch.equal(pipe.denoiser.proj.weight, reference.weight)
    assert pipe.scheduler.config.eta == 0.5


def test_an_entry_of_the_same_name_replaces_the_inherited_one(base, tmp_path):
    base_file, _ = base
    path = write(
        tmp_path,
        f"""
        version: 1
        extends: {base_file}
        components:
          den: {{kind: denoiser, plugin: part-denoiser, config: {{context_dim: 8}}}}
    """,
    )
    declaration = core.load_registry(path).component_declaration("den")
    assert declaration.weights is None and declaration.config == {"context_dim": 8}


@pytest.mark.parametrize(
    ("extends", "message"),
    [
        ("nowhere.yaml", r"mine.yaml: extends: registry file not found: .*nowhere.yaml"),
        ("mine.yaml", r"extend each other in a cycle"),
        ("[bundled]", r"extends: expected `bundled` or a registry file path, got \['bundled'\]"),
    ],
)
def test_a_bad_extends_is_a_registry_error_naming_the_file(tmp_path, extends, message):
    path = write(tmp_path, f"version: 1\nextends: {extends}\n")
    with pytest.raises(RegistryError, match=message):
        core.load_registry(path)


def test_two_files_extending_each_other_are_a_cycle(tmp_path):
    (tmp_path / "a.yaml").write_text("version: 1\nextends: b.yaml\n")
    (tmp_path / "b.yaml").write_text("version: 1\nextends: a.yaml\n")
    with pytest.raises(RegistryError, match=r"a.yaml -> .*b.yaml -> .*a.yaml"):
        core.load_registry(tmp_path / "a.yaml")


def test_a_problem_in_an_inherited_entry_names_the_file_it_is_in(base, tmp_path):
    base_file, _ = base
    broken = base_file.with_name("broken.yaml")
    broken.write_text(base_file.read_text().replace("plugin: part-encoder", "plugin: part-encodr"))
    path = write(tmp_path, f"version: 1\nextends: {broken}\n")
    with pytest.raises(RegistryError) as caught:
        core.load_registry(path)
    [problem] = caught.value.problems
    assert problem.startswith("components -> enc -> plugin: no encoder plugin named 'part-encodr'")
    assert problem.endswith(f"(in {broken}, inherited through extends:)")
