"""`diffstack eval [PIPELINE]`: score a pipeline's images with the data set's pixel analyser."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch

from core.cli.shared import plugin_manager
from core.create import create
from core.registry import load_registry
from core.training import recipes, stages
from core.training.evaluate import attribute_accuracy, labelled_grid


def add_parser(commands: Any) -> None:
    """Add `eval [PIPELINE] [--registry --n --steps --guidance --out --seed --device --dataset]`."""
    parser = commands.add_parser(
        "eval",
        help="score a pipeline's images with the data set's pixel analyser",
        description="Generate captions of seen (3/4) and held-out (1/4) combinations, read each image back with "
        "the data set's analyser and print per-attribute accuracy, plus the encoder's PSNR on fresh images and a "
        "contact sheet of prompts × seeds.",
    )
    parser.add_argument("pipeline", nargs="?", help="pipeline name (default: the registry's default_pipeline)")
    parser.add_argument("--registry", metavar="FILE", help="registry file (default: the registry in use)")
    parser.add_argument("--n", type=int, default=200, help="captions to generate (default 200)")
    parser.add_argument("--steps", type=int, help="denoising steps (default: the pipeline's)")
    parser.add_argument("--guidance", type=float, help="classifier-free guidance scale (default: the pipeline's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("grid.png"), help="contact sheet PNG (default grid.png)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dataset", default=recipes.DATASET, help="data set plugin with attributes/analyse")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    pipe = load_registry(args.registry, plugin_manager=plugin_manager(args)).build(args.pipeline, device=args.device)
    settings = pipe.settings("", steps=args.steps, guidance_scale=args.guidance)

    def generate(prompts: list[str], seed: int) -> torch.Tensor:
        return pipe(
            prompts, seed=seed, steps=settings.steps, guidance_scale=settings.guidance_scale, progress=False
        ).pixels

    began = time.perf_counter()
    seed = args.seed + stages.EVAL_SEED_OFFSET
    counts = {"seen": args.n - args.n // 4, "held-out": args.n // 4}
    results = {}
    for group, split in (("seen", "train"), ("held-out", "heldout")):
        data = create("dataset", args.dataset, split=split, seed=seed, length=counts[group])
        results[group] = attribute_accuracy(generate, data, counts[group], seed=seed)
    psnr = stages.vae_psnr(pipe.encoder, stages.fresh_images(256, args.seed, pipe.device).to(pipe.dtype))
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

    rows = [create("dataset", args.dataset, split=split, seed=seed + 1, length=4) for split in ("train", "heldout")]
    labels = [data[i][1] for data in rows for i in range(len(data))]
    columns = 6
    images = torch.cat([generate([label] * columns, args.seed) for label in labels])
    held_out = [f"{label}{' (held out)' if r >= 4 else ''}" for r, label in enumerate(labels)]
    labelled_grid(images, held_out, columns).save(args.out)
    print(f"contact sheet ({len(labels)} prompts × {columns} seeds): {args.out}")
    return 0
