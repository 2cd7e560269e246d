"""`diffstack train vae|clip|unet` and `diffstack eval PIPELINE`; the main CLI adds them with
`add_train_parser(commands)` and `add_eval_parser(commands)`."""
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import torch

from core.create import create
from core.devices import resolve_device
from core.registry import load_registry
from core.training import recipes, stages
from core.training.evaluate import attribute_accuracy, contact_sheet

DEFAULT_MODEL_DIR = Path("models/shapes-tiny")
DEFAULT_RUNS = Path("runs/shapes-tiny")


def add_train_parser(commands: argparse._SubParsersAction) -> None:
    """Add `train STAGE [--steps --batch-size --lr --seed --out --model-dir --resume --device --threads]`."""
    parser = commands.add_parser(
        "train", help="train a stage of the embedded shapes-tiny model from scratch",
        description="Train one stage of shapes-tiny: vae, then clip, then unet (which uses the first two). "
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
    parser.set_defaults(run=run_train)


def run_train(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    config = stages.train_config(args.stage, {"steps": args.steps, "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed})
    out = args.out or DEFAULT_RUNS / args.stage
    began = time.perf_counter()
    run = getattr(stages, f"run_{args.stage}")
    report = run(config, out, args.model_dir, resume=args.resume, device=device)
    result = report.pop("result")
    print(f"{args.stage}: {result.step} steps on {device}, final loss {result.loss:.5f}, "
          f"{result.seconds:.0f} s of training, {time.perf_counter() - began:.0f} s in all")
    for key, value in report.items():
        print(f"{args.stage}: {key} = {value:.6g}" if isinstance(value, float) else f"{args.stage}: {key} = {value}")
    print(f"{args.stage}: wrote {args.model_dir / recipes.WEIGHT_FILES[args.stage]}")
    return 0


def add_eval_parser(commands: argparse._SubParsersAction) -> None:
    """Add `eval [PIPELINE] [--registry --n --steps --guidance --out --seed --device --dataset]`."""
    parser = commands.add_parser(
        "eval", help="score a pipeline's images with the data set's pixel analyser",
        description="Generate captions of seen (3/4) and held-out (1/4) combinations, read each image back with "
        "the data set's analyser and print per-attribute accuracy, plus the encoder's PSNR on fresh images and a "
        "contact sheet of prompts × seeds.",
    )
    parser.add_argument("pipeline", nargs="?", default="shapes-tiny")
    parser.add_argument("--registry", metavar="FILE", help="registry file (default: the registry in use)")
    parser.add_argument("--n", type=int, default=200, help="captions to generate (default 200)")
    parser.add_argument("--steps", type=int, help="denoising steps (default: the pipeline's)")
    parser.add_argument("--guidance", type=float, help="classifier-free guidance scale (default: the pipeline's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("grid.png"), help="contact sheet PNG (default grid.png)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dataset", default=recipes.DATASET, help="data set plugin with attributes/analyse")
    parser.set_defaults(run=run_eval)


def run_eval(args: argparse.Namespace) -> int:
    pipe = load_registry(args.registry).build(args.pipeline, device=args.device)
    steps, guidance = pipe.default("steps", args.steps), pipe.default("guidance_scale", args.guidance)

    def generate(prompts: list[str], seed: int) -> torch.Tensor:
        return pipe(prompts, seed=seed, steps=steps, guidance_scale=guidance, output_type="tensor", progress=False)

    began = time.perf_counter()
    seed = args.seed + stages.EVAL_SEED_OFFSET
    counts = {"seen": args.n - args.n // 4, "held-out": args.n // 4}
    results = {}
    for group, split in (("seen", "train"), ("held-out", "heldout")):
        data = create("dataset", args.dataset, split=split, seed=seed, length=counts[group])
        results[group] = attribute_accuracy(generate, data, counts[group], seed=seed)
    psnr = stages.vae_psnr(pipe.encoder, stages.fresh_images(256, args.seed, pipe.device).to(pipe.dtype))
    print(f"{args.pipeline}: {args.n} captions, {steps} steps, guidance {guidance}, {time.perf_counter() - began:.0f} s on {pipe.device}")
    names = list(results["seen"])
    print("group      n    " + "  ".join(f"{name:>10}" for name in names))
    for group, accuracy in results.items():
        print(f"{group:<9} {counts[group]:>4}    " + "  ".join(f"{accuracy[name]:>9.1%}" for name in names))
    print(f"encoder PSNR on 256 fresh images: {psnr:.2f} dB")

    rows = [create("dataset", args.dataset, split=split, seed=seed + 1, length=4) for split in ("train", "heldout")]
    labels = [data[i][1] for data in rows for i in range(len(data))]
    columns = 6
    images = torch.cat([generate([label] * columns, args.seed) for label in labels])
    contact_sheet(images, [f"{label}{' (held out)' if r >= 4 else ''}" for r, label in enumerate(labels)], columns).save(args.out)
    print(f"contact sheet ({len(labels)} prompts × {columns} seeds): {args.out}")
    return 0
