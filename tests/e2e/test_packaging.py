"""A non-editable install works from any directory: the wheel carries registry.yaml and models/, so the
main command generates with the embedded model, and examples/custom_pipeline.yaml (`extends: bundled`) runs."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheels")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(out),
            str(ROOT),
        ],
        check=True,
    )
    return next(out.glob("diffstack-*.whl"))


def test_wheel_carries_package_data_and_entry_points(wheel: Path):
    archive = zipfile.ZipFile(wheel)
    names = archive.namelist()
    assert "core/bundled/registry.yaml" in names
    assert any(name.startswith("core/bundled/models/") for name in names)
    assert "core/contracts/__init__.py" in names and "plugins/__init__.py" in names
    entry_points = archive.read(next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
    assert "diffstack = core.cli:main" in entry_points
    assert "[pytest11]" in entry_points and "core.contracts.pytest_plugin" in entry_points
    assert "[diffstack]" in entry_points and "ddim = plugins.ddim" in entry_points  # the built-ins


@pytest.mark.slow
def test_installed_wheel_runs_from_an_unrelated_directory(wheel: Path, tmp_path: Path):
    env = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    python = env / "bin" / "python"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--quiet",
            "--no-deps",
            "--no-index",
            str(wheel),
        ],
        check=True,
    )
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    (Path(site) / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    script = env / "bin" / "diffstack"
    listing = subprocess.run([str(script), "list", "plugins"], cwd=elsewhere, capture_output=True, text=True)
    assert listing.returncode == 0, listing.stderr
    assert listing.stdout.startswith("PLUGIN")
    validated = subprocess.run([str(script), "validate"], cwd=elsewhere, capture_output=True, text=True)
    assert validated.returncode == 0, validated.stderr
    assert f"ok: {Path(site).resolve() / 'core' / 'bundled' / 'registry.yaml'}" in validated.stdout
    generated = subprocess.run(
        [str(script), "generate", "a large red circle on a blue background"],
        cwd=elsewhere,
        capture_output=True,
        text=True,
    )
    assert generated.returncode == 0, generated.stderr
    assert (elsewhere / "a-large-red-circle-on-a-blue-background-0.png").is_file()
    shutil.copy(ROOT / "examples" / "custom_pipeline.yaml", elsewhere)  # `extends: bundled`: no paths into a checkout
    custom = [str(script), "generate", "a green square", "--registry", "custom_pipeline.yaml", "--out", "custom.png"]
    generated = subprocess.run(custom, cwd=elsewhere, capture_output=True, text=True)
    assert generated.returncode == 0, generated.stderr
    assert (elsewhere / "custom.png").is_file()
