"""The third-party example `examples/diffstack-heun` (installed by the README's test command) is discovered
through its entry point and usable by name from a registry file, like any built-in."""

from __future__ import annotations

from pathlib import Path

import numpy as np

import core


def test_heun_is_discovered_from_its_entry_point():
    record = core.PluginManager.discover().get("scheduler", "heun")
    assert record.plugin.source == "entry-point"
    assert record.plugin.distribution == "diffstack-heun"


def test_registry_file_names_heun(tmp_path: Path):
    toys = Path(__file__).resolve().parents[1] / "toy_plugin.py"
    (tmp_path / "toy_plugin.py").write_text(toys.read_text())
    registry = tmp_path / "registry.yaml"
    registry.write_text(
        "version: 1\n"
        "plugins: [toy_plugin]\n"
        "pipelines:\n"
        "  toys:\n"
        "    encoder: {plugin: toy-encoder}\n"
        "    denoiser: {plugin: toy-denoiser}\n"
        "    text: {plugin: toy-text}\n"
        "    scheduler: {plugin: heun, config: {beta_schedule: scaled_linear, beta_start: 0.00085, beta_end: 0.012}}\n"
        "    sampler: {plugin: cfg}\n"
        "    defaults: {height: 16, width: 16, steps: 4, guidance_scale: 3.0}\n"
    )
    pipe = core.load_registry(registry).build(device="cpu")
    assert type(pipe.scheduler).__module__ == "diffstack_heun"
    calls = []
    [image] = pipe("a red circle", seed=1, callback=calls.append).images
    assert len(calls) == 2 * 4 - 1  # Heun: two denoiser calls per step but the last
    assert image.size == (16, 16) and np.asarray(image).std() > 0
