"""Importing core and creating a scheduler loads no packing code (`core.prepacked`, `core.winograd`): those
are imported only when a part is optimised (`core.performance.optimise_part`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def imported_modules(code: str) -> set[str]:
    """The modules `python -X importtime -c code` imports, by name (its stderr lists one a line)."""
    run = subprocess.run([sys.executable, "-X", "importtime", "-c", code], cwd=ROOT, capture_output=True, text=True)
    lines = [line for line in run.stderr.splitlines() if line.startswith("import time:")]
    return {line.rsplit("|", 1)[-1].strip() for line in lines}


def test_creating_a_scheduler_does_not_import_the_packing_code() -> None:
    modules = imported_modules("import core; core.create('scheduler', 'ddim')")
    assert "core.schedules" in modules  # the listing is read right
    assert not {"core.prepacked", "core.winograd"} & modules
