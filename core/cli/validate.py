"""`diffstack validate [FILE]`: check a registry file and list every problem, then build each declared part
once without weights (model parts on the meta device) to check that its plugin returns what its interface asks,
and check each pipeline's parts fit and its `defaults` pass the rules a call is held to. `--deep` also opens each
checkpoint's header and checks every name and shape against the part's architecture, on the meta device."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from core.cli.shared import plugin_manager
from core.errors import RegistryError
from core.registry import load_registry


def add_parser(commands: Any) -> None:
    parser = commands.add_parser("validate", help="validate a registry file and list every problem")
    parser.add_argument("file", nargs="?", help="registry file (default: the registry in use)")
    parser.add_argument(
        "--deep",
        action="store_true",
        help="also open each checkpoint's header and check its names and shapes (no tensor data is read)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    registry = load_registry(args.file, plugin_manager=plugin_manager(args))
    problems = registry.check_parts()
    skipped: list[str] = []
    if args.deep:
        found, skipped = registry.check_weights()
        problems += found
    for line in skipped:
        print(f"skipped: {line}", file=sys.stderr)
    if problems:
        count = len(problems)
        raise RegistryError(
            f"{registry.path}: {count} problem{'s' if count > 1 else ''} found building the parts",
            problems,
            hint="fix the plugins, configs or defaults named above",
        )
    print(
        f"ok: {registry.path} — {len(registry.component_names)} components, "
        f"{len(registry.pipeline_names)} pipelines, default: {registry.default_pipeline or '(none)'}"
    )
    return 0
