"""`diffstack check KIND/NAME`: run an interface's contract suite on one plugin's component."""

from __future__ import annotations

import argparse
import json
import textwrap
from typing import Any

from core.cli.shared import plugin_manager
from core.errors import InputError
from core.interfaces import KINDS
from core.registry import load_registry
from core.validation import validate_config


def add_parser(commands: Any) -> None:
    parser = commands.add_parser("check", help="run the contract suite on a plugin's component")
    parser.add_argument("target", metavar="KIND/NAME", help=f"e.g. scheduler/ddim; kinds: {', '.join(KINDS)}")
    parser.add_argument("--config", metavar="JSON", help="config to build it with (default: the plugin's example)")
    parser.add_argument("--registry", metavar="FILE", help="also know the plugins named under this file's `plugins:`")
    parser.add_argument("--verbose", action="store_true", help="print every check's rule (by default only under FAIL)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    kind, slash, name = args.target.partition("/")
    if not slash or not name:
        raise InputError(f"expected KIND/NAME, got {args.target!r}", hint="e.g. diffstack check scheduler/ddim")
    manager = plugin_manager(args)
    if args.registry is not None:
        load_registry(args.registry, plugin_manager=manager)
    record = manager.get(kind, name)
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
        print(
            f"  {'PASS' if result.passed else 'FAIL'}  {result.name}" + (f": {result.detail}" if result.detail else "")
        )
        if result.rule and (args.verbose or not result.passed):
            print(textwrap.indent(f"rule: {result.rule}", "        "))
    failed = sum(not r.passed for r in results)
    print(f"{len(results) - failed} passed, {failed} failed")
    return 1 if failed else 0
