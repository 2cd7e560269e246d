"""`diffstack eval [PIPELINE]`: score a pipeline's images with the data set's pixel analyser.
`diffstack eval schedulers`: the scheduler lab (`core.scheduler_lab`) — every rule × NFE on one pipeline."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

from core.cli.shared import plugin_manager
from core.create import create
from core.errors import InputError
from core.registry import Registry, load_registry
from core.scheduler_lab import Captions, run_lab
from core.scheduler_lab_report import PLOT_HINT, table, write
from core.suggest import did_you_mean
from core.training import stages
from core.training.evaluate import GROUPS, attribute_accuracy, group_sizes, labelled_grid
from core.training.recipe_file import RECIPE_FILE, load_recipe


def add_parser(commands: Any) -> None:
    """Add `eval [PIPELINE] [--registry --n --steps --guidance --out --seed --device --dataset]`."""
    parser = commands.add_parser(
        "eval",
        help="score a pipeline's images with the data set's pixel analyser; `eval schedulers`: the scheduler lab",
        description="Generate captions of seen (3/4) and held-out (1/4) combinations, read each image back with "
        "the data set's analyser and print per-attribute accuracy, plus the encoder's PSNR on fresh images and a "
        "contact sheet of prompts × seeds. `diffstack eval schedulers [--pipeline P --schedulers a,b --nfe 4,8 "
        "--n N --out DIR]` instead measures every scheduler × NFE: solver error against a converged reference, "
        "the analyser's accuracy, and denoiser calls and time per image (table, CSV, JSON and plots in --out).",
    )
    parser.add_argument(
        "pipeline", nargs="?", help="pipeline name (default: the registry's default_pipeline), or `schedulers`"
    )
    parser.add_argument("--registry", metavar="FILE", help="registry file (default: the registry in use)")
    parser.add_argument("--n", type=int, help="captions to generate (default 200; the lab: 32)")
    parser.add_argument("--steps", type=int, help="denoising steps (default: the pipeline's)")
    parser.add_argument("--guidance", type=float, help="classifier-free guidance scale (default: the pipeline's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--out", type=Path, help="contact sheet PNG (default grid.png); the lab: a folder (default lab/)"
    )
    parser.add_argument("--pipeline", dest="lab_pipeline", metavar="P", help="the lab: the pipeline to measure")
    parser.add_argument(
        "--schedulers", type=names, help="the lab: comma-separated scheduler plugins (default: every installed one)"
    )
    parser.add_argument(
        "--nfe", type=numbers, default=LAB_NFE, help="the lab: denoiser-call budgets (default 4,6,8,10,15,20,30,50)"
    )
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "diffstack" / "scheduler-lab",
        help="the lab: folder keeping its reference solutions between runs (default ~/.cache/diffstack/scheduler-lab)",
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--dataset",
        help=f"data set plugin with attributes/analyse (default: the `dataset` of the training recipe, {RECIPE_FILE}, "
        "beside the pipeline's weights)",
    )
    parser.set_defaults(run=run)


def recipe_beside(registry: Registry, pipeline: str) -> Path | None:
    """The training recipe in the folder of `pipeline`'s weights — the denoiser's, else the encoder's, the text
    encoder's, the pipeline-wide `weights:` — or None when none of them has one."""
    refs = [registry.block(pipeline, slot).weights for slot in ("denoiser", "encoder", "text")]
    for ref in [*refs, registry.pipeline_declaration(pipeline).weights]:
        if ref is None:
            continue
        path = Path(os.path.expandvars(ref.path)).expanduser()  # an unset ${VAR} stays and is not found
        path = path if path.is_absolute() else registry.path.parent / path
        recipe = (path if path.is_dir() else path.parent) / RECIPE_FILE
        if recipe.is_file():
            return recipe
    return None


def dataset_of(registry: Registry, pipeline: str, args: argparse.Namespace) -> str:
    """`--dataset`, else the data set of the recipe beside `pipeline`'s weights."""
    if args.dataset:
        return str(args.dataset)
    recipe = recipe_beside(registry, pipeline)
    if recipe is None:
        raise InputError(
            f"no --dataset given, and pipeline {pipeline!r} has no training recipe ({RECIPE_FILE}) beside its "
            "weights to take the data set from",
            hint="pass --dataset NAME: a data set plugin with attributes/analyse (`diffstack list plugins`)",
        )
    return load_recipe(recipe, plugin_manager=registry.plugin_manager).dataset


LAB_NFE = (4, 6, 8, 10, 15, 20, 30, 50)
LAB_CAPTIONS = 32


def names(text: str) -> list[str]:
    """`a,b,c` → ["a", "b", "c"] (an argparse type)."""
    found = [part.strip() for part in text.split(",") if part.strip()]
    if not found:
        raise argparse.ArgumentTypeError("give at least one name, comma-separated")
    return found


def numbers(text: str) -> list[int]:
    """`4,8,16` → [4, 8, 16], each >= 1 (an argparse type)."""
    try:
        values = [int(part) for part in names(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers") from None
    if min(values) < 1:
        raise argparse.ArgumentTypeError("every NFE must be >= 1")
    return sorted(set(values))


def captions(dataset: str, n: int, seed: int) -> Captions:
    """n captions of `dataset`: 3/4 of seen combinations, 1/4 held out, with their attributes."""
    counts = group_sizes(n)
    texts, groups, truths = [], [], []
    for group, split in GROUPS:
        data = create("dataset", dataset, split=split, seed=seed, length=counts[group])
        for i in range(counts[group]):
            texts.append(data[i][1])
            groups.append(group)
            truths.append(data.attributes(i))
    return Captions(texts, groups, truths)


def run_lab_command(args: argparse.Namespace, registry: Registry) -> int:
    """`diffstack eval schedulers`: the lab on one pipeline, its report printed and written to --out."""
    name = args.lab_pipeline or registry.default_pipeline
    dataset = dataset_of(registry, name, args) if name is not None else ""
    pipe = registry.build(name, device=args.device)
    installed = registry.plugin_manager.names("scheduler")
    chosen = args.schedulers or installed
    unknown = [s for s in chosen if s not in installed]
    if unknown:
        raise InputError(
            f"no scheduler plugin named {', '.join(repr(s) + did_you_mean(s, installed) for s in unknown)}",
            hint=f"installed: {', '.join(installed)}",
        )
    n = args.n or LAB_CAPTIONS
    seed = args.seed + stages.EVAL_SEED_OFFSET
    found = captions(dataset, n, seed)
    analyse = create("dataset", dataset, split="train", seed=seed, length=1).analyse
    result = run_lab(pipe, chosen, args.nfe, found, analyse=analyse, seed=seed, guidance_scale=args.guidance,
                     progress=sys.stderr.isatty(), cache=args.cache)  # fmt: skip
    print(table(result))
    out = args.out or Path("lab")
    written = write(result, out)
    print(f"wrote {', '.join(str(p) for p in written)}")
    if not any(p.name == "error_vs_nfe.png" for p in written):
        print(PLOT_HINT)
    return 0


def run(args: argparse.Namespace) -> int:
    registry = load_registry(args.registry, plugin_manager=plugin_manager(args))
    if args.pipeline == "schedulers":
        return run_lab_command(args, registry)
    lab_only = [flag for flag, value in (("--pipeline", args.lab_pipeline), ("--schedulers", args.schedulers))
                if value is not None]  # fmt: skip
    if lab_only:
        raise InputError(
            f"{', '.join(lab_only)} belong to `diffstack eval schedulers`",
            hint="run `diffstack eval schedulers …`, or name the pipeline as `diffstack eval P`",
        )
    args.n = args.n or 200
    args.out = args.out or Path("grid.png")
    name = args.pipeline or registry.default_pipeline
    dataset = dataset_of(registry, name, args) if name is not None else ""  # no name: build says so
    pipe = registry.build(name, device=args.device)
    settings = pipe.settings("", steps=args.steps, guidance_scale=args.guidance)

    def generate(prompts: list[str], seed: int) -> torch.Tensor:
        return pipe(
            prompts, seed=seed, steps=settings.steps, guidance_scale=settings.guidance_scale, progress=False
        ).pixels

    began = time.perf_counter()
    seed = args.seed + stages.EVAL_SEED_OFFSET
    counts = group_sizes(args.n)
    results = {}
    for group, split in GROUPS:
        data = create("dataset", dataset, split=split, seed=seed, length=counts[group])
        results[group] = attribute_accuracy(generate, data, counts[group], seed=seed)
    psnr = stages.vae_psnr(pipe.encoder, stages.fresh_images(dataset, 256, args.seed, pipe.device).to(pipe.dtype))
    seconds = time.perf_counter() - began
    print(
        f"{pipe.name}: {args.n} captions, {settings.steps} steps, guidance {settings.guidance_scale}, "
        f"{seconds:.0f} s on {pipe.device}"
    )
    names = list(results["seen"])
    print("group      n    " + "  ".join(f"{name:>10}" for name in names))
    for group, accuracy in results.items():
        print(f"{group:<9} {counts[group]:>4}    " + "  ".join(f"{accuracy[name]:>9.1%}" for name in names))
    print(f"encoder PSNR on 256 fresh images: {psnr:.2f} dB")

    rows = [create("dataset", dataset, split=split, seed=seed + 1, length=4) for split in ("train", "heldout")]
    labels = [data[i][1] for data in rows for i in range(len(data))]
    columns = 6
    images = torch.cat([generate([label] * columns, args.seed) for label in labels])
    held_out = [f"{label}{' (held out)' if r >= 4 else ''}" for r, label in enumerate(labels)]
    labelled_grid(images, held_out, columns).save(args.out)
    print(f"contact sheet ({len(labels)} prompts × {columns} seeds): {args.out}")
    return 0
