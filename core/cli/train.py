"""`diffstack train vae|decoder|clip|unet`: train one stage of a model from scratch, by its recipe."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

import torch

from core.devices import resolve_device
from core.training import distributed, stages
from core.training.recipe_file import RECIPE_FILE, STAGES, load_recipe

DEFAULT_MODEL_DIR = Path("models/shapes-tiny")
"""The embedded model, trained from the repository root."""
DEFAULT_RUNS = Path("runs")


def add_parser(commands: Any) -> None:
    """Add `train STAGE [--recipe --steps --batch-size --lr --seed --out --model-dir --resume --device --threads]`."""
    parser = commands.add_parser(
        "train",
        help=f"train a stage of a model from scratch by its recipe (default: the embedded {DEFAULT_MODEL_DIR.name})",
        description="Train one stage of the model in --model-dir by its recipe (--recipe, default "
        f"MODEL_DIR/{RECIPE_FILE}): vae, then decoder (an optional fine-tune of the VAE's decoder), clip, then "
        "unet (which uses the autoencoder and the text encoder). Checkpoints go to --out (resumable with "
        "--resume); the finished component goes to --model-dir. Data-parallel over N processes: torchrun "
        "--nproc-per-node N --no-python diffstack train STAGE … (gloo on CPU, nccl on CUDA); --batch-size is "
        "the global batch, split evenly over the processes, so the run follows the single-process one.",
    )
    parser.add_argument("stage", choices=list(STAGES), help="vae, then decoder (optional), clip, unet")
    parser.add_argument(
        "--recipe",
        type=Path,
        metavar="FILE",
        help="the model's training recipe: plugins, configs, data set, hyper-parameters "
        f"(default MODEL_DIR/{RECIPE_FILE})",
    )
    parser.add_argument("--steps", type=int, help="total optimiser steps (default: the recipe's)")
    parser.add_argument(
        "--batch-size", type=int, help="the global batch, over all processes under torchrun (default: the recipe's)"
    )
    parser.add_argument("--lr", type=float, help="peak learning rate (default: the recipe's)")
    parser.add_argument("--seed", type=int, help="default: the recipe's, else 0")
    parser.add_argument(
        "--out",
        type=Path,
        help=f"checkpoint folder (default {DEFAULT_RUNS}/MODEL/STAGE, MODEL the last part of --model-dir)",
    )
    parser.add_argument(
        "--model-dir",
        type=Path,
        default=DEFAULT_MODEL_DIR,
        help=f"where the trained components go (default {DEFAULT_MODEL_DIR})",
    )
    parser.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    parser.add_argument(
        "--device",
        default="auto",
        help="auto (CUDA when present, else CPU), cpu, cuda, cuda:1, …; under torchrun, a CUDA device is "
        "cuda:LOCAL_RANK",
    )
    parser.add_argument(
        "--threads",
        type=int,
        help="CPU threads for torch (default: torch's choice; under torchrun on CPU, the CPUs divided by the "
        "processes per node)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    recipe = load_recipe(args.recipe or args.model_dir / RECIPE_FILE)
    config = stages.train_config(
        recipe, args.stage, {"steps": args.steps, "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed}
    )
    out = args.out or DEFAULT_RUNS / args.model_dir.name / args.stage
    with distributed.session(resolve_device(args.device)) as (shard, device):
        shard.rows(config.batch_size)  # a global batch the processes cannot share evenly: an error before any work
        if args.threads:
            torch.set_num_threads(args.threads)
        elif shard.world_size > 1 and device.type == "cpu":
            torch.set_num_threads(distributed.cpu_threads())
        began = time.perf_counter()
        report = stages.RUNNERS[args.stage](recipe, config, out, args.model_dir, resume=args.resume, device=device)
    if not shard.is_main:
        return 0
    result = report.pop("result")
    processes = f" × {shard.world_size} processes" if shard.world_size > 1 else ""
    print(
        f"{args.stage}: {result.step} steps on {device}{processes}, final loss {result.loss:.5f}, "
        f"{result.seconds:.0f} s of training, {time.perf_counter() - began:.0f} s in all"
    )
    for key, value in report.items():
        print(f"{args.stage}: {key} = {value:.6g}" if isinstance(value, float) else f"{args.stage}: {key} = {value}")
    print(f"{args.stage}: wrote {args.model_dir / stages.WEIGHT_FILES[args.stage]}")
    return 0
