"""What several commands share: the plugin manager they report on, the output-folder check, plain-text
tables."""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from core.errors import InputError, PluginWarning
from core.plugin_manager import PluginManager


def plugin_manager(args: argparse.Namespace) -> PluginManager:
    """Built-ins and installed plugins, `--strict` applied; each problem printed once as `warning: …`, and
    whatever a registry file adds later is reported by Python's warnings (once each)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PluginWarning)
        manager = PluginManager.discover(strict=args.strict)
        manager.components()  # name clashes are found when the table is built
    for problem in manager.problems:
        print(f"warning: {problem}", file=sys.stderr)
    return manager


def table(rows: Sequence[tuple[str, ...]], header: tuple[str, ...]) -> str:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in [header, *rows]
    )


def check_writable(folder: Path, flag: str) -> None:
    """An InputError naming `flag` unless `folder` can be written to, or created and written to; creates nothing."""
    existing = next(p for p in (folder, *folder.parents) if p.exists())  # the folder, or where it would go
    problem = None
    if not existing.is_dir():
        problem = f"{existing} is not a folder"
    elif not os.access(existing, os.W_OK | os.X_OK):
        problem = f"{existing} is not writable"
    if problem is not None:
        raise InputError(
            f"cannot write to output folder {flag} {folder}: {problem}",
            hint=f"choose another {flag}, or fix its permissions",
        )
