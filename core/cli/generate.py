"""`diffstack generate`: build a pipeline from the registry, generate, write PNGs that carry their recipe.

The recipe is what the pipeline says it ran (`Generation.settings`), never re-derived here."""

from __future__ import annotations

import argparse
import dataclasses
import re
from pathlib import Path
from typing import Any

from PIL import Image

from core.cli.shared import check_writable, plugin_manager
from core.devices import resolve_device
from core.errors import InputError
from core.images import contact_sheet, read_recipe, save_png
from core.performance import fast
from core.recipe import parse_recipe, recipe_of
from core.registry import load_registry
from core.registry_schema import PipelineLimits
from core.validation import validate_config

RECIPE_FIELDS = (
    "prompt",
    "negative_prompt",
    "seed",
    "steps",
    "guidance_scale",
    "height",
    "width",
    "scheduler",
    "pipeline",
    "num_images",
)


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "generate",
        help="generate images from a prompt",
        description="Generate images with a registry pipeline; each PNG carries its recipe.",
        epilog='example: diffstack generate "a large red circle on a blue background" --seed 1 --num-images 4 --grid',
    )
    parser.add_argument("prompt", nargs="?", help="the text prompt (omit with --from-png)")
    parser.add_argument("--pipeline", help="pipeline name (default: the registry's default_pipeline)")
    parser.add_argument("--registry", metavar="FILE", help="registry file")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first image; image i uses seed + i")
    parser.add_argument("--steps", type=int, help="denoising steps (default: the pipeline's)")
    parser.add_argument("--guidance", type=float, help="classifier-free guidance scale (default: the pipeline's)")
    parser.add_argument("--negative", help="negative prompt")
    parser.add_argument("--height", type=int, help="image height in pixels")
    parser.add_argument("--width", type=int, help="image width in pixels")
    parser.add_argument("--num-images", type=int, default=1, help="images to generate")
    parser.add_argument(
        "--scheduler", help="swap the update rule by plugin name, carrying the pipeline's scheduler settings"
    )
    parser.add_argument("--image", metavar="PNG", help="init image for img2img")
    parser.add_argument("--strength", type=float, help="img2img strength in (0, 1]")
    parser.add_argument("--max-images", type=int, help="raise the pipeline's limit on images per call")
    parser.add_argument("--max-pixels", type=int, help="raise the pipeline's limit on height × width")
    parser.add_argument("--out", default=".", help="output folder, or a .png path for a single image")
    parser.add_argument("--overwrite", action="store_true", help="replace existing files")
    parser.add_argument("--grid", action="store_true", help="write one contact sheet instead of one file per image")
    parser.add_argument("--from-png", metavar="PNG", help="re-create an image from the recipe in a diffstack PNG")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    parser.add_argument("--dtype", help="float32, float16 or bfloat16 (default: fp16 on CUDA, fp32 on CPU)")
    parser.add_argument(
        "--fast",
        action="store_true",
        help="the fast path (core.performance.fast): channels_last + prepacked oneDNN weights + Winograd "
        "convolutions on the CPU; "
        "channels_last + torch.compile + CUDA graphs on a GPU, where the first image pays the compilation",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    request, pick, grid = _request(args)
    out = Path(args.out)
    single_file = out.suffix.lower() == ".png"
    if single_file and request["num_images"] > 1 and not grid and pick is None:
        raise InputError(
            f"--out {out} names one file but {request['num_images']} images were asked for",
            hint="give a folder, or add --grid",
        )
    if single_file and (out.is_dir() or (out.exists() and not args.overwrite)):
        problem = "is a folder" if out.is_dir() else "already exists"
        raise InputError(f"--out {out} {problem}", hint="pass --overwrite, or choose another --out")
    registry = load_registry(args.registry, plugin_manager=plugin_manager(args))
    check_writable(out.parent if single_file else out, "--out")
    if args.from_png and request["pipeline"] not in registry.pipeline_names:
        made_with = read_recipe(Path(args.from_png)).get("registry")
        raise InputError(
            f"{args.from_png} was made with pipeline {request['pipeline']!r}, which {registry.path} does not have",
            hint=f"pass --registry {made_with}"
            if isinstance(made_with, str) and made_with
            else "pass the --registry it was made with",
        )
    pipe = registry.build(
        request.pop("pipeline") or registry.default_pipeline,
        device=args.device,
        dtype=args.dtype,
        performance=fast(resolve_device(args.device)) if args.fast else None,
    )
    raised = {"max_images": args.max_images, "max_pixels": args.max_pixels}
    if any(value is not None for value in raised.values()):
        limits = {key: value for key, value in raised.items() if value is not None}
        pipe = dataclasses.replace(pipe, limits=validate_config(PipelineLimits, pipe.limits.model_dump() | limits,
                                                                 where="--max-images/--max-pixels"))  # fmt: skip
    init_image = _open_image(args.image) if args.image else None
    generation = pipe(request.pop("prompt"), **request, image=init_image, strength=args.strength)
    recipe = {**recipe_of(generation.settings), "registry": str(registry.path)}
    images = generation.images
    if grid:
        sheets = [(contact_sheet(images), {**recipe, "grid": True})]
    else:
        first, count = recipe["seed"], recipe["num_images"]
        sheets = [
            (
                images[i],
                {
                    **recipe,
                    "seed": first + i,
                    "num_images": 1,
                    "batch_seed": first,
                    "batch_size": count,
                    "batch_index": i,
                },
            )
            for i in (range(count) if pick is None else [pick])
        ]
    (out.parent if single_file else out).mkdir(parents=True, exist_ok=True)
    for image, own in sheets:
        print(save_png(image, _target(out, single_file, own, args.overwrite), own, overwrite=args.overwrite))
    return 0


def _request(args: argparse.Namespace) -> tuple[dict[str, Any], int | None, bool]:
    """(the call's arguments with `pipeline`, index of the one image to keep or None for all, whether to write
    a contact sheet)."""
    if not args.from_png:
        if args.prompt is None:
            raise InputError("no prompt given", hint='diffstack generate "a large red circle on a blue background"')
        request = {
            "prompt": args.prompt,
            "negative_prompt": args.negative,
            "seed": args.seed,
            "steps": args.steps,
            "guidance_scale": args.guidance,
            "height": args.height,
            "width": args.width,
            "scheduler": args.scheduler,
            "pipeline": args.pipeline,
            "num_images": args.num_images,
        }
        return request, None, args.grid
    if args.prompt is not None:
        raise InputError("give either a PROMPT or --from-png, not both")
    stored = parse_recipe(read_recipe(Path(args.from_png)), args.from_png)
    request = {field: getattr(stored, field) for field in RECIPE_FIELDS}
    if stored.grid:
        return request, None, True
    # re-run the whole batch the image came from: CPU kernels are not bitwise batch-size invariant
    first = stored.seed if stored.batch_seed is None else stored.batch_seed
    request.update(seed=first, num_images=stored.batch_size or 1)
    return request, stored.batch_index or 0, False


def _open_image(path: str) -> Image.Image:
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (OSError, ValueError) as exc:
        raise InputError(f"--image {path}: cannot read the image ({exc})") from None


def _target(out: Path, single_file: bool, recipe: dict[str, Any], overwrite: bool) -> Path:
    """`out` itself for a .png path; else `<slug>-<seed>.png` in `out`, numbered on until it is free."""
    if single_file:
        return out
    prompt = recipe["prompt"] if isinstance(recipe["prompt"], str) else recipe["prompt"][0]
    slug = re.sub(r"[^a-z0-9]+", "-", prompt.lower()).strip("-")[:60] or "image"
    stem = f"{slug}-{recipe['seed']}" + ("-grid" if recipe.get("grid") else "")
    candidate, number = out / f"{stem}.png", 1
    while candidate.exists() and not overwrite:
        candidate, number = out / f"{stem}-{number}.png", number + 1
    return candidate
