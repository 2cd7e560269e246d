"""The `diffstack` command line, a module per command. Prints a DiffstackError as one clear message (traceback
only with --debug)."""

from __future__ import annotations

import argparse
import os
import sys
import traceback
import warnings
from collections.abc import Sequence

import core
from core.cli import batch, check, eval, generate, list, train, validate
from core.containment import Terminated, tracking_interrupts
from core.errors import DiffstackError

COMMANDS = (generate, batch, list, validate, check, train, eval)
"""One module per command, each with `add_parser(commands)` and `run(args) -> exit code`."""

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
    parser.add_argument(
        "--strict",
        action="store_true",
        help="a plugin that fails to load, or a kind/name two plugins provide, is fatal",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(commands)
    return parser


def show_warning(message: Warning | str, category: type[Warning], *_: object, **__: object) -> None:
    """Python warnings (a dropped setting, a truncated prompt, …) as one `warning: …` line on stderr."""
    print(f"warning: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with warnings.catch_warnings(), tracking_interrupts():
            warnings.showwarning = show_warning
            return args.run(args)
    except DiffstackError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:  # the reader went away (`diffstack list | head`): stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python's recipe: the exit-time flush is moot
        return 141
    except Terminated:
        print("terminated", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
