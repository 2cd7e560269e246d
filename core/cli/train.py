"""`diffstack train vae|decoder|clip|unet`: train one stage of the embedded shapes-tiny model from scratch."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

import torch

from core.devices import resolve_device
from core.training import recipes, stages

DEFAULT_MODEL_DIR = Path("models/shapes-tiny")
DEFAULT_RUNS = Path("runs/shapes-tiny")


def add_parser(commands: Any) -> None:
    """Add `train STAGE [--steps --batch-size --lr --seed --out --model-dir --resume --device --threads]`."""
    parser = commands.add_parser(
        "train",
        help="train a stage of the embedded shapes-tiny model from scratch",
        description="Train one stage of shapes-tiny: vae, then decoder (an optional fine-tune of the VAE's "
        "decoder), clip, then unet (which uses the autoencoder and the text encoder). "
        "Checkpoints go to --out (resumable with --resume); the finished component goes to --model-dir.",
    )
    parser.add_argument("stage", choices=list(recipes.STAGES), help="vae, then decoder (optional), clip, unet")
    parser.add_argument("--steps", type=int, help="total optimiser steps (default: the recipe's)")
    parser.add_argument("--batch-size", type=int, help="default: the recipe's")
    parser.add_argument("--lr", type=float, help="peak learning rate (default: the recipe's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help=f"checkpoint folder (default {DEFAULT_RUNS}/STAGE)")
    parser.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR, help="where the trained components go")
    parser.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present, else CPU), cpu, cuda, cuda:1, …")
    parser.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    config = stages.train_config(
        args.stage, {"steps": args.steps, "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed}
    )
    out = args.out or DEFAULT_RUNS / args.stage
    began = time.perf_counter()
    report = stages.RUNNERS[args.stage](config, out, args.model_dir, resume=args.resume, device=device)
    result = report.pop("result")
    print(
        f"{args.stage}: {result.step} steps on {device}, final loss {result.loss:.5f}, "
        f"{result.seconds:.0f} s of training, {time.perf_counter() - began:.0f} s in all"
    )
    for key, value in report.items():
        print(f"{args.stage}: {key} = {value:.6g}" if isinstance(value, float) else f"{args.stage}: {key} = {value}")
    print(f"{args.stage}: wrote {args.model_dir / recipes.WEIGHT_FILES[args.stage]}")
    return 0
