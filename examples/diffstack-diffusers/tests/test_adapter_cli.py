"""The command-line and Python forms the README shows, run in-process."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import pytest
from diffstack_diffusers import ADAPTERS
from PIL import Image

import core
from core.cli import main

try:
    importlib.metadata.distribution("diffstack-diffusers")
except importlib.metadata.PackageNotFoundError:
    pytest.skip("not installed: pip install -e examples/diffstack-diffusers", allow_module_level=True)


def test_diffstack_check(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "scheduler/diffusers-ddim"]) == 0
    assert "17 passed, 0 failed" in capsys.readouterr().out


def test_diffstack_generate_with_a_swapped_scheduler(tiny_sd, tmp_path: Path) -> None:
    _, registry = tiny_sd
    out = tmp_path / "circle.png"
    argv = ["generate", "a red circle", "--registry", str(registry.path), "--pipeline", "tiny-diffusers-ddim"]
    argv += ["--scheduler", "diffusers-unipc", "--steps", "3", "--height", "64", "--width", "64", "--out", str(out)]
    assert main(argv) == 0
    assert Image.open(out).size == (64, 64)


def test_create_by_name() -> None:
    unipc = core.create("scheduler", "diffusers-unipc", beta_schedule="scaled_linear")
    assert isinstance(unipc, ADAPTERS["diffusers-unipc"]) and unipc.config.beta_schedule == "scaled_linear"
    assert ADAPTERS["diffusers-unipc"](solver_order=3).scheduler.config.solver_order == 3
