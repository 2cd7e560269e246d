"""`diffstack generate`: PNGs with their recipe, atomic and collision-free, --from-png, errors that write
nothing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import core
from core.cli import main


def generate(registry: Path, *argv: str) -> int:
    return main(["generate", "--registry", str(registry), *argv])


def written(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_png_carries_its_recipe_and_from_png_recreates_it(tiny_registry, tmp_path, capsys):
    out = tmp_path / "out"
    assert (
        generate(
            tiny_registry, "a red circle", "--seed", "3", "--num-images", "2", "--negative", "blurry", "--out", str(out)
        )
        == 0
    )
    assert written(out) == ["a-red-circle-3.png", "a-red-circle-4.png"]
    assert capsys.readouterr().out.split() == [str(out / "a-red-circle-3.png"), str(out / "a-red-circle-4.png")]
    recipe = json.loads(Image.open(out / "a-red-circle-4.png").text["diffstack"])
    scheduler_config = core.create("scheduler", "ddim", **recipe["scheduler_config"]).config
    assert scheduler_config.beta_schedule == "scaled_linear" and scheduler_config.clip_sample is True
    assert recipe | {"diffstack_version": "-", "scheduler_config": "-"} == {
        "prompt": "a red circle",
        "negative_prompt": "blurry",
        "seed": 4,
        "steps": 4,
        "guidance_scale": 4.0,
        "height": 32,
        "width": 32,
        "scheduler": "ddim",
        "scheduler_config": "-",
        "pipeline": "tiny",
        "num_images": 1,
        "strength": None,
        "batch_seed": 3,
        "batch_size": 2,
        "batch_index": 1,
        "diffstack_version": "-",
        "registry": str(tiny_registry),
    }
    again = tmp_path / "again"
    assert generate(tiny_registry, "--from-png", str(out / "a-red-circle-4.png"), "--out", str(again)) == 0
    [copy] = again.iterdir()
    assert np.array_equal(np.asarray(Image.open(copy)), np.asarray(Image.open(out / "a-red-circle-4.png")))


def test_never_overwrites_without_overwrite(tiny_registry, tmp_path):
    assert generate(tiny_registry, "a red circle", "--out", str(tmp_path)) == 0
    assert generate(tiny_registry, "a red circle", "--out", str(tmp_path)) == 0
    assert written(tmp_path) == ["a-red-circle-0-1.png", "a-red-circle-0.png"]
    target = tmp_path / "mine.png"
    assert generate(tiny_registry, "a red circle", "--out", str(target)) == 0
    before = target.read_bytes()
    assert generate(tiny_registry, "a blue square", "--out", str(target)) == 2
    assert target.read_bytes() == before
    assert generate(tiny_registry, "a blue square", "--out", str(target), "--overwrite") == 0
    assert target.read_bytes() != before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left


def test_grid_writes_one_contact_sheet(tiny_registry, tmp_path):
    assert generate(tiny_registry, "a red circle", "--num-images", "4", "--grid", "--out", str(tmp_path)) == 0
    [sheet] = tmp_path.iterdir()
    assert sheet.name == "a-red-circle-0-grid.png" and Image.open(sheet).size == (64, 64)
    assert json.loads(Image.open(sheet).text["diffstack"])["grid"] is True


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["a red circle", "--steps", "0"], "steps (num_inference_steps) must be an integer in [1, 1000]"),
        (["a red circle", "--guidance", "-2"], "guidance_scale must be ≥ 0"),
        (["a red circle", "--height", "33"], "height 33 is not a positive multiple of 2"),
        (["a red circle", "--pipeline", "tinny"], "did you mean 'tiny'"),
        (["a red circle", "--scheduler", "nope"], "no scheduler plugin named 'nope'"),
        (["--from-png", "/no/such.png"], "not a readable PNG"),
        ([], "no prompt given"),
    ],
)
def test_bad_input_writes_no_file(tiny_registry, tmp_path, capsys, argv, message):
    out = tmp_path / "out"
    assert generate(tiny_registry, *argv, "--out", str(out)) == 2
    assert message in capsys.readouterr().err
    assert written(out) == []


def test_unwritable_output_folder(tiny_registry, tmp_path, capsys):
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a folder")
    assert generate(tiny_registry, "a red circle", "--out", str(blocker / "images")) == 2
    assert "cannot write to output folder" in capsys.readouterr().err


def test_empty_registry_says_what_to_do(tmp_path, capsys):
    registry = tmp_path / "registry.yaml"
    registry.write_text("version: 1\n")
    assert generate(registry, "a red circle", "--out", str(tmp_path / "out")) == 2
    err = capsys.readouterr().err
    assert "no pipeline named and the registry has no `default_pipeline`" in err
    assert written(tmp_path / "out") == []


@pytest.mark.parametrize("value", [None, "/no/such/checkpoint"])
def test_sd15_says_what_to_set(tmp_path, monkeypatch, capsys, value):
    from core.registry import bundled_registry_path

    if value is None:
        monkeypatch.delenv("DIFFSTACK_SD15", raising=False)
    else:
        monkeypatch.setenv("DIFFSTACK_SD15", value)
    assert generate(bundled_registry_path(), "a cat", "--pipeline", "sd15", "--out", str(tmp_path / "out")) == 2
    err = capsys.readouterr().err
    assert ("DIFFSTACK_SD15}, which is not set" in err) if value is None else ("weights not found: /no/such" in err)
    assert "a diffusers folder" in err and "single-file .safetensors" in err
    assert written(tmp_path / "out") == []
