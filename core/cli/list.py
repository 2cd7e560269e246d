"""`diffstack list [plugins|components|pipelines]`: what is installed and what the registry declares."""

from __future__ import annotations

import argparse
from typing import Any

import core
from core.cli.shared import plugin_manager, table
from core.interfaces import PIPELINE_KINDS
from core.plugin_manager import PluginInfo
from core.registry import load_registry


def add_parser(commands: Any) -> None:
    parser = commands.add_parser("list", help="list plugins, components or pipelines")
    parser.add_argument("what", nargs="?", choices=["plugins", "components", "pipelines"], help="default: all")
    parser.add_argument(
        "--registry", metavar="FILE", help="registry file: its pipelines, and the plugins named under its `plugins:`"
    )
    parser.set_defaults(run=run)


def _package(info: PluginInfo) -> str:
    if info.distribution:
        return f"{info.distribution} {info.version}"
    return f"diffstack {core.__version__}" if info.source == "builtin" else "-"


def run(args: argparse.Namespace) -> int:
    manager = plugin_manager(args)
    sections = [args.what] if args.what else ["plugins", "components", "pipelines"]
    if "pipelines" in sections or args.registry is not None:
        registry = load_registry(args.registry, plugin_manager=manager)
    outputs = []
    if "plugins" in sections:
        provided: dict[str, list[str]] = {}
        for (kind, name), record in sorted(manager.components().items()):
            provided.setdefault(record.plugin.name, []).append(f"{kind}/{name}")
        plugin_rows = [
            (info.name, str(info.source), _package(info), ", ".join(provided.get(info.name, [])) or "-")
            for info in manager.plugins()
        ]
        outputs.append(table(plugin_rows, ("PLUGIN", "SOURCE", "PACKAGE", "PROVIDES")))
    if "components" in sections:
        component_rows = [
            (kind, name, record.plugin.name, record.spec.description)
            for (kind, name), record in sorted(manager.components().items())
        ]
        outputs.append(table(component_rows, ("KIND", "NAME", "PLUGIN", "DESCRIPTION")))
    if "pipelines" in sections:
        pipeline_rows = []
        for name in registry.pipeline_names:
            decl = registry.pipeline_declaration(name)
            parts = ", ".join(
                f"{slot}={ref if isinstance(ref, str) else ref.plugin}"
                for slot in PIPELINE_KINDS
                for ref in [getattr(decl, slot)]
            )
            pipeline_rows.append((name + (" (default)" if name == registry.default_pipeline else ""), parts))
        outputs.append(f"registry: {registry.path}\n" + table(pipeline_rows, ("PIPELINE", "PARTS")))
    print("\n\n".join(outputs))
    return 0
