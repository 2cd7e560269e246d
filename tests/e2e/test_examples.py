"""The examples run: the classic 15-line loop equals the pipeline it re-implements; the custom registry builds."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from PIL import Image

import core

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def load_example(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_fifteen_lines_equals_the_pipeline(tiny_pipeline):
    fifteen = load_example("fifteen_lines")
    ours = fifteen.fifteen_lines(tiny_pipeline, "a red circle", seed=4, steps=6, guidance=5.0)
    reference = tiny_pipeline(
        "a red circle", seed=4, steps=6, guidance_scale=5.0, negative_prompt="", scheduler="lms"
    ).pixels
    assert (ours - reference).abs().max() < 1e-4


def test_fifteen_lines_command_writes_a_png(tiny_registry, tmp_path, capsys):
    out = tmp_path / "loop.png"
    load_example("fifteen_lines").main(
        ["a red circle", "--registry", str(tiny_registry), "--steps", "3", "--out", str(out)]
    )
    assert capsys.readouterr().out.strip() == str(out)
    assert Image.open(out).size == (32, 32)


def test_custom_pipeline_example_builds_and_runs():
    registry = core.load_registry(EXAMPLES / "custom_pipeline.yaml")
    bundled = ["shapes-tiny", "sd15", "sd21", "sdxl"]  # extends: bundled
    assert registry.pipeline_names == [*bundled, "shapes-dpm", "shapes-edit"]
    dpm = registry.build("shapes-dpm", device="cpu")
    edit = registry.build("shapes-edit", device="cpu")
    assert dpm.denoiser is edit.denoiser  # named components are shared
    assert type(dpm.scheduler).__module__ == "plugins.dpmpp_2m" and dpm.scheduler.config.use_karras_sigmas
    [source] = dpm("a large red circle on a blue background", seed=1, steps=6).images
    [edited] = edit("a large red square on a blue background", image=source, steps=6).images
    assert source.size == edited.size == (64, 64)
