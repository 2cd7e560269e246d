"""The GPU suite (`bench/gpu.sh` runs it): Stable Diffusion 1.5's architecture, random weights, fp16, 512²,
one image with classifier-free guidance (the U-Net at batch 2), DDIM; 20 and 50 steps for each of

    diffusers eager (SDPA) · diffusers + torch.compile (U-Net) · diffstack eager ·
    diffstack fast path (`core.performance.fast`)

it/s comes from the difference of the two runs, (50 − 20) / (t50 − t20), so text encoding and VAE decoding
cancel out; s/image is the 50-step time. The bound is 1.6 TFLOP per CFG step at the fp16 matmul rate this
card reaches on a large square matmul (measured here), so `of bound` = it/s × 1.6 TFLOP / that rate (scaled
by the pixel count at other sizes). Compilation happens in the untimed warm-up run of each variant.
`--device cpu` (float32) runs the same script small, as tests/e2e/test_bench.py does, so it is known to work
before a GPU machine is lent.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings
from pathlib import Path

import torch

from bench.pipelines import PROMPT, sd15_pipeline
from bench.reference import diffusers_pipeline
from bench.timing import measure, synchronize
from core.performance import apply_performance, fast

FLOP_PER_STEP = 1.6e12


def matmul_rate(device: torch.device, dtype: torch.dtype, n: int, repeats: int = 20) -> float:
    """FLOP/s of an n×n matmul in `dtype` on `device`."""
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    a @ b
    synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    synchronize(device)
    return 2 * n**3 * repeats / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu", description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda (default; fp16) or cpu (float32, a smoke run)")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, nargs=2, default=[20, 50])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--variants", nargs="+", default=["diffusers", "diffusers-compile", "diffstack", "diffstack-fast"]
    )
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    device = torch.device(args.device)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    rate = matmul_rate(device, dtype, 8192 if device.type == "cuda" else 1024)
    flop_per_step = FLOP_PER_STEP * (args.size / 512) ** 2
    ours = sd15_pipeline(device, dtype)
    latents = torch.randn(1, 4, args.size // 8, args.size // 8, generator=torch.Generator().manual_seed(0))
    latents = latents.to(device, dtype)
    with tempfile.TemporaryDirectory() as folder:
        reference = diffusers_pipeline(ours, Path(folder))
    outputs, results = {}, []
    for variant in args.variants:
        if variant == "diffusers-compile":
            reference.unet.to(memory_format=torch.channels_last)
            reference.unet = torch.compile(reference.unet, mode="max-autotune", fullgraph=True)
        if variant == "diffstack-fast":
            apply_performance(ours, fast(device))

        def run(steps: int, variant: str = variant) -> torch.Tensor:
            with torch.inference_mode():
                if variant.startswith("diffusers"):
                    image = reference(
                        PROMPT,
                        negative_prompt="",
                        latents=latents,
                        num_inference_steps=steps,
                        guidance_scale=7.5,
                        height=args.size,
                        width=args.size,
                        output_type="pt",
                    ).images
                    return image * 2 - 1
                return ours(
                    PROMPT,
                    seed=0,
                    steps=steps,
                    guidance_scale=7.5,
                    height=args.size,
                    width=args.size,
                    negative_prompt="",
                    progress=False,
                ).pixels

        short, long = (measure({variant: lambda s=s: run(s)}, device, args.repeats)[variant] for s in args.steps)
        it_s = (args.steps[1] - args.steps[0]) / (long.median - short.median)
        outputs[variant] = run(args.steps[1]).float()
        results.append(
            {
                "variant": variant,
                "it_s": it_s,
                "s_per_image": long.median,
                "peak_gib": long.peak_bytes / 2**30,
                "of_bound": it_s * flop_per_step / rate,
                "max_diff_vs_diffusers": (outputs[variant] - outputs["diffusers"]).abs().max().item()
                if "diffusers" in outputs
                else None,
            }
        )
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(
        f"{name}, torch {torch.__version__}, {str(dtype).removeprefix('torch.')} matmul {rate / 1e12:.2f} TFLOP/s, "
        f"{args.size}², steps {args.steps}, batch 1 with CFG"
    )
    print(f"{'variant':<20}{'it/s':>8}{'s/image':>10}{'peak GiB':>10}{'of bound':>10}{'max |Δ| vs diffusers':>22}")
    for r in results:
        diff = "" if r["max_diff_vs_diffusers"] is None else f"{r['max_diff_vs_diffusers']:.3g}"
        print(
            f"{r['variant']:<20}{r['it_s']:>8.1f}{r['s_per_image']:>10.3f}{r['peak_gib']:>10.2f}{r['of_bound']:>9.1%}{diff:>22}"
        )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
