"""What several commands share: the plugin manager they report on, and plain-text tables."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from core.plugin_manager import PluginManager


def plugin_manager(args: argparse.Namespace) -> PluginManager:
    manager = PluginManager.discover(strict=args.strict)
    for problem in manager.problems:
        print(f"warning: {problem}", file=sys.stderr)
    return manager


def table(rows: Sequence[tuple[str, ...]], header: tuple[str, ...]) -> str:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in [header, *rows]
    )
