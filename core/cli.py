"""The `diffstack` command line. Prints a DiffstackError as one clear message (traceback only with --debug)."""
from __future__ import annotations

import argparse
import json
import sys
import traceback
from typing import Sequence

import core
from core.errors import DiffstackError, InputError
from core.generate_command import add_generate_parser
from core.interfaces import KINDS
from core.plugin_manager import PluginInfo, PluginManager
from core.registry import load_registry
from core.training.cli import add_eval_parser, add_train_parser
from core.validation import validate_config

EXAMPLES = """\
examples:
  diffstack generate "a large red circle on a blue background"   a PNG from the default pipeline
  diffstack list plugins                 installed plugins and what they provide
  diffstack list pipelines               pipelines of the registry in use
  diffstack validate my-registry.yaml    check a registry file, listing every problem
  diffstack check scheduler/ddim         run the scheduler contract suite on the `ddim` plugin
  diffstack check scheduler/ddim --config '{"eta": 0.5, "clip_sample": false}'

The registry in use is --registry FILE, else $DIFFSTACK_REGISTRY, else ./registry.yaml, else the bundled one.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="diffstack",
        description="Text-to-image diffusion pipelines assembled from pluggable parts.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"diffstack {core.__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    parser.add_argument("--strict", action="store_true", help="a plugin that fails to load is fatal")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    listing = commands.add_parser("list", help="list plugins, components or pipelines")
    listing.add_argument("what", nargs="?", choices=["plugins", "components", "pipelines"], help="default: all")
    listing.add_argument("--registry", metavar="FILE", help="registry file (for pipelines)")
    listing.set_defaults(run=run_list)

    validate = commands.add_parser("validate", help="validate a registry file and list every problem")
    validate.add_argument("file", nargs="?", help="registry file (default: the registry in use)")
    validate.set_defaults(run=run_validate)

    check = commands.add_parser("check", help="run the contract suite on a plugin's component")
    check.add_argument("target", metavar="KIND/NAME", help=f"e.g. scheduler/ddim; kinds: {', '.join(KINDS)}")
    check.add_argument("--config", metavar="JSON", help="config to build it with (default: the plugin's example)")
    check.set_defaults(run=run_check)

    add_generate_parser(commands)
    add_train_parser(commands)
    add_eval_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except DiffstackError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _manager(args: argparse.Namespace) -> PluginManager:
    manager = PluginManager.discover(strict=args.strict)
    for problem in manager.problems:
        print(f"warning: {problem}", file=sys.stderr)
    return manager


def _table(rows: list[tuple[str, ...]], header: tuple[str, ...]) -> str:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in [header, *rows])


def _package(info: PluginInfo) -> str:
    if info.distribution:
        return f"{info.distribution} {info.version}"
    return f"diffstack {core.__version__}" if info.source == "builtin" else "-"


def run_list(args: argparse.Namespace) -> int:
    manager = _manager(args)
    sections = [args.what] if args.what else ["plugins", "components", "pipelines"]
    if "pipelines" in sections:
        registry = load_registry(args.registry, plugin_manager=manager)
    outputs = []
    if "plugins" in sections:
        provided: dict[str, list[str]] = {}
        for (kind, name), record in sorted(manager.components().items()):
            provided.setdefault(record.plugin.name, []).append(f"{kind}/{name}")
        rows = [
            (
                info.name,
                info.source,
                _package(info),
                ", ".join(provided.get(info.name, [])) or "-",
            )
            for info in manager.plugins()
        ]
        outputs.append(_table(rows, ("PLUGIN", "SOURCE", "PACKAGE", "PROVIDES")))
    if "components" in sections:
        rows = [
            (kind, name, record.plugin.name, record.spec.description)
            for (kind, name), record in sorted(manager.components().items())
        ]
        outputs.append(_table(rows, ("KIND", "NAME", "PLUGIN", "DESCRIPTION")))
    if "pipelines" in sections:
        rows = []
        for name in registry.pipeline_names:
            decl = registry.pipeline_declaration(name)
            parts = ", ".join(
                f"{slot}={ref if isinstance(ref, str) else ref.plugin}"
                for slot in ("encoder", "denoiser", "text", "scheduler", "sampler")
                for ref in [getattr(decl, slot)]
            )
            rows.append((name + (" (default)" if name == registry.default_pipeline else ""), parts))
        outputs.append(f"registry: {registry.path}\n" + _table(rows, ("PIPELINE", "PARTS")))
    print("\n\n".join(outputs))
    return 0


def run_validate(args: argparse.Namespace) -> int:
    registry = load_registry(args.file, plugin_manager=_manager(args))
    print(
        f"ok: {registry.path} — {len(registry.component_names)} components, "
        f"{len(registry.pipeline_names)} pipelines, default: {registry.default_pipeline or '(none)'}"
    )
    return 0


def run_check(args: argparse.Namespace) -> int:
    kind, slash, name = args.target.partition("/")
    if not slash or not name:
        raise InputError(f"expected KIND/NAME, got {args.target!r}", hint="e.g. diffstack check scheduler/ddim")
    record = _manager(args).get(kind, name)
    if args.config is None:
        data = record.spec.example_config
    else:
        try:
            data = json.loads(args.config)
        except json.JSONDecodeError as exc:
            raise InputError(f"--config is not valid JSON: {exc}", hint="""e.g. --config '{"eta": 0.5}'""") from None
        if not isinstance(data, dict):
            raise InputError("--config must be a JSON object", hint="""e.g. --config '{"eta": 0.5}'""")
    config = validate_config(record.spec.config, data, where=f"{kind} {name!r}")
    print(f"checking {kind}/{name} from {record.plugin.provider}")
    print(f"config: {config.model_dump_json()}")
    from core.contracts import run_contract

    results = run_contract(kind, lambda: record.spec.build(config))
    for result in results:
        print(f"  {'PASS' if result.passed else 'FAIL'}  {result.name}" + (f": {result.detail}" if result.detail else ""))
    failed = sum(not r.passed for r in results)
    print(f"{len(results) - failed} passed, {failed} failed")
    return 1 if failed else 0
