"""`diffstack batch JOBS.jsonl --out DIR`: every job of a JSON-lines file, resumable, on one process or Ray.

Exit codes: 0 every line ran; 3 some lines were left out (each reported on stderr with its line number) and
every other image was made; 2 nothing ran (bad arguments, no line that can run, or `--strict` with a line
left out); 1 a failure while running; 130 interrupted (Ctrl-C), 143 terminated — after 1, 130 and 143 the images
written so far stay valid, and a re-run resumes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from core.batch.jobs import BadLine
from core.batch.run import Engine, run_batch
from core.cli.shared import check_writable, plugin_manager
from core.errors import InputError
from core.registry import load_registry

SOME_LINES_LEFT_OUT = 3


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "batch",
        help="run every job of a JSON-lines file into a folder, resumably",
        description="Make every image of JOBS (one JSON object per line: prompt, and any of id, seed, "
        "negative_prompt, steps, guidance_scale, height, width, scheduler, num_images) into DIR/images/<id>-<k>.png, "
        "with DIR/manifest.jsonl listing each. Running the same command again skips the images already there "
        "and valid, and makes the rest. An image's bytes depend on its job line and --batch-size only.",
        epilog="exit codes: 0 every line ran; 3 some lines were left out (reported with their line numbers), the "
        "rest ran; 2 nothing ran (bad arguments, no line that can run, --strict with a bad line); 1 a failure "
        "while running, 130 interrupted, 143 terminated (re-run to resume)",
    )
    parser.add_argument("jobs", type=Path, metavar="JOBS.jsonl", help="the jobs, one JSON object per line")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder (created if needed)")
    parser.add_argument("--pipeline", help="pipeline name (default: the registry's default_pipeline)")
    parser.add_argument("--registry", metavar="FILE", help="registry file")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    parser.add_argument("--batch-size", type=int, default=4, help="images per pipeline call (default 4)")
    parser.add_argument("--engine", choices=("local", "ray"), default="local", help="local (default) or ray")
    parser.add_argument("--workers", type=int, help="ray: actors, each with its own pipeline (default 1)")
    parser.add_argument(
        "--ray-address", metavar="ADDR", help="ray: the cluster to join (default: start a local Ray instance)"
    )
    parser.add_argument(
        "--strict",
        dest="strict_lines",
        action="store_true",
        help="any line that cannot run: run nothing (after `batch`; `diffstack --strict` is about plugins)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.workers is not None and args.engine != "ray":
        raise InputError("--workers applies to --engine ray", hint="add --engine ray, or drop --workers")
    workers = 1 if args.workers is None else args.workers
    if workers < 1:
        raise InputError(f"--workers must be at least 1, got {workers}")
    check_writable(args.out, "--out")
    registry = load_registry(args.registry, plugin_manager=plugin_manager(args))
    name = args.pipeline or registry.default_pipeline
    engine: Engine | None = None
    if args.engine == "ray":
        from core.batch.ray_engine import ray_engine

        pipe = registry.outline(name)  # reads and checks the jobs without the weights; the actors hold them
        engine = ray_engine(str(registry.path), pipe.name, args.device, args.out, workers, args.ray_address)
    else:
        pipe = registry.build(name, device=args.device)

    def report(bad: BadLine) -> None:
        print(f"{args.jobs}:{bad}", file=sys.stderr)

    def warn(lines: list[int], message: str) -> None:
        shown = ", ".join(map(str, lines[:10])) + (f" and {len(lines) - 10} more" if len(lines) > 10 else "")
        print(f"warning: {args.jobs}:line{'s' * (len(lines) > 1)} {shown}: {message}", file=sys.stderr)

    result = run_batch(args.jobs, args.out, pipe, str(registry.path), engine, batch_size=args.batch_size,
                       strict=args.strict_lines, progress=sys.stderr.isatty(), on_bad_line=report,
                       on_warning=warn)  # fmt: skip
    print(
        f"{result.planned} images in {args.out}: {result.found_done} already done, {result.written} made now "
        f"({result.seconds:.1f} s); manifest: {args.out / 'manifest.jsonl'}"
        + (f"; {len(result.bad_lines)} line{'s' * (len(result.bad_lines) > 1)} left out" if result.bad_lines else "")
    )
    return SOME_LINES_LEFT_OUT if result.bad_lines else 0
