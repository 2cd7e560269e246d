"""Shared fixtures: throwaway installed plugin distributions."""

from __future__ import annotations

import importlib
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

InstallDistribution = Callable[..., Path]


@pytest.fixture
def install_distribution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> InstallDistribution:
    """Install a throwaway distribution: modules + a `*.dist-info` with `diffstack` entry points on sys.path.

    `install("acme-schedulers", "1.2.0", entry_points={"acme": "acme_mod"}, modules={"acme_mod": "source"})`
    """

    def install(
        name: str, version: str, *, entry_points: dict[str, str], modules: dict[str, str] | None = None
    ) -> Path:
        root = tmp_path / f"site-{name}"
        root.mkdir()
        for module, source in (modules or {}).items():
            (root / f"{module}.py").write_text(textwrap.dedent(source))
            monkeypatch.delitem(sys.modules, module, raising=False)
        info = root / f"{name.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        lines = "".join(f"{key} = {value}\n" for key, value in entry_points.items())
        (info / "entry_points.txt").write_text(f"[diffstack]\n{lines}")
        monkeypatch.syspath_prepend(str(root))
        importlib.invalidate_caches()
        return root

    return install
