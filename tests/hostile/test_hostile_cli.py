"""Hostile command lines and PNG recipes: refused before any work, with the field named, exit 2, nothing
written (issue 17: limits, recipes, writing)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image, PngImagePlugin

from core.cli import main
from core.images import RECIPE_KEY

PROMPT = "a large red circle on a blue background"


@pytest.mark.parametrize(("extra", "message"), [
    (["--num-images", "1000000"], "1000000 images in one call is over this pipeline's limit of 64"),
    (["--height", "100000", "--width", "100000"], "100000×100000 = 10000000000 pixels per image is over"),
    (["--width", "100000"], "100000×64 = 6400000 pixels per image is over"),
    (["--seed", str(2**64)], "seed must be an integer in [0, 2⁶⁴ - 1]"),
    (["--seed", str(2**64 - 1), "--num-images", "2"], "seed must be an integer in [0, 2⁶⁴ - 1] for every image"),
    (["--seed", "-1"], "seed must be an integer in [0, 2⁶⁴ - 1]"),
    (["--num-images", "65", "--max-images", "0"], "max_images: Input should be greater than 0"),
])  # fmt: skip
def test_too_much_work_is_refused_before_any(tmp_path, capsys, extra, message):
    began = time.perf_counter()
    assert main(["generate", PROMPT, "--out", str(tmp_path / "out"), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err
    assert not (tmp_path / "out").exists() and time.perf_counter() - began < 30


def test_a_raised_limit_lets_the_call_run(tmp_path, capsys):
    argv = ["generate", PROMPT, "--steps", "1", "--num-images", "65", "--max-images", "65", "--grid"]
    assert main([*argv, "--out", str(tmp_path / "sheet.png")]) == 0
    assert Image.open(tmp_path / "sheet.png").size[0] > 64


def png_with_recipe(path: Path, recipe: object) -> Path:
    info = PngImagePlugin.PngInfo()
    info.add_text(RECIPE_KEY, recipe if isinstance(recipe, str) else json.dumps(recipe))
    Image.new("RGB", (64, 64)).save(path, pnginfo=info)
    return path


GOOD = {
    "prompt": PROMPT, "negative_prompt": "", "seed": 3, "steps": 2, "guidance_scale": 5.0, "height": 64,
    "width": 64, "scheduler": "ddim", "scheduler_config": {}, "pipeline": "shapes-tiny", "num_images": 1,
    "strength": None, "diffstack_version": "0", "batch_seed": 3, "batch_size": 1, "batch_index": 0,
}  # fmt: skip


@pytest.mark.parametrize(("change", "message"), [
    ({"seed": "3"}, "seed: Input should be a valid integer"),
    ({"seed": 3.5}, "seed: Input should be a valid integer"),
    ({"seed": 2**70}, "seed: Input should be less than or equal to 18446744073709551615"),
    ({"guidance_scale": "5"}, "guidance_scale: Input should be a valid number"),
    ({"guidance_scale": float("inf")}, "guidance_scale: Input should be a finite number"),
    ({"pipeline": 7}, "pipeline: Input should be a valid string"),
    ({"scheduler": 7}, "scheduler: Input should be a valid string"),
    ({"batch_index": 5}, "batch_index 5 is not below batch_size 1"),
    ({"batch_index": "0"}, "batch_index: Input should be a valid integer"),
    ({"registry_file": "/etc/passwd"}, "registry_file: Extra inputs are not permitted"),
    ({"height": 100000, "width": 100000}, "pixels per image is over this pipeline's limit"),
    ({"num_images": 10**6, "batch_size": 10**6}, "images in one call is over this pipeline's limit"),
])  # fmt: skip
def test_a_tampered_recipe_names_the_field(tmp_path, capsys, change, message):
    png = png_with_recipe(tmp_path / "in.png", {**GOOD, **change})
    assert main(["generate", "--from-png", str(png), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", "x" * 100])
def test_a_recipe_that_is_not_a_json_object_is_refused(tmp_path, capsys, text):
    png = png_with_recipe(tmp_path / "in.png", text)
    assert main(["generate", "--from-png", str(png), "--out", str(tmp_path / "out")]) == 2
    assert "recipe" in capsys.readouterr().err


def test_an_untouched_recipe_still_recreates_its_image(tmp_path, capsys):
    png = png_with_recipe(tmp_path / "in.png", GOOD)
    assert main(["generate", "--from-png", str(png), "--out", str(tmp_path / "out.png")]) == 0
    assert (tmp_path / "out.png").is_file()


def test_an_existing_single_file_target_is_refused_before_generating(tmp_path, capsys, monkeypatch):
    target = tmp_path / "taken.png"
    target.write_bytes(b"mine")
    (tmp_path / "folder.png").mkdir()
    monkeypatch.setattr("core.registry.Registry.build", lambda *a, **k: pytest.fail("built before checking --out"))
    assert main(["generate", PROMPT, "--out", str(target)]) == 2
    assert main(["generate", PROMPT, "--out", str(tmp_path / "folder.png"), "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert f"--out {target} already exists" in err and "folder.png is a folder" in err
    assert target.read_bytes() == b"mine"


@pytest.mark.slow
def test_sigterm_leaves_no_temp_file(tmp_path):
    """SIGTERM while a run is under way: exit 143, and no `.NAME.png.XXXX.tmp` is left in the output folder."""
    out = tmp_path / "out"
    cli = "import sys; from core.cli import main; sys.exit(main())"
    command = [sys.executable, "-c", cli, "generate", PROMPT, "--num-images", "64", "--steps", "200", "--out", str(out)]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    time.sleep(8)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 143, err
    assert err.strip().endswith("terminated")
    assert not out.exists() or not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_from_png_of_another_registrys_pipeline_names_that_registry(tmp_path, capsys):
    png = png_with_recipe(tmp_path / "in.png", {**GOOD, "pipeline": "mine", "registry": "/home/me/mine.yaml"})
    assert main(["generate", "--from-png", str(png), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "was made with pipeline 'mine', which" in err and "fix: pass --registry /home/me/mine.yaml" in err
