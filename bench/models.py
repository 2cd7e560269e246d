"""The model parts against diffusers, same tensors, same process: U-Net forward and checkpoint loading.

U-Net forward: Stable Diffusion 1.5's architecture (random weights, batch 2 = one image with classifier-free
guidance, 77 context tokens; 32×32 latents on the CPU, 64×64 in fp16 on CUDA) and the shapes-tiny config with
its shipped weights; ours as built and ours on the fast path (`core.performance.fast`), against diffusers'
`UNet2DConditionModel`.

Loading: an SD 1.5-sized fp16 diffusers folder (U-Net, VAE, text encoder) built into a pipeline by our registry
(fp16 target) and by diffusers' `StableDiffusionPipeline.from_pretrained`, each in a fresh process: wall
time and peak memory (peak RSS on the CPU, every weight read once so nothing stays merely mapped; peak
allocated GPU memory on CUDA) against the size of the files.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import torch

from bench.pipelines import sd15_pipeline, shapes_tiny_pipeline
from bench.reference import OURS_ONLY
from bench.row import Row
from bench.timing import measure, warmups
from core.performance import fast as fast_path
from core.performance import optimise_part

LOAD = """
import json, sys, time, torch
from bench.timing import resident_peak
{imports}
start = time.perf_counter()
{build}
sum(float(p.float().sum()) for part in parts for p in part.parameters())  # read every weight: mapped counts once read
seconds = time.perf_counter() - start
gpu = torch.cuda.max_memory_allocated() if sys.argv[2] == "cuda" else None
print(json.dumps({{"seconds": seconds, "rss": resident_peak(), "gpu": gpu}}))
"""
LOAD_OURS = LOAD.format(
    imports="from core.registry import load_registry",
    build="""pipe = load_registry(sys.argv[1]).build("sd15", device=sys.argv[2], dtype=torch.float16)
parts = (pipe.denoiser, pipe.encoder, pipe.text)""",
)
LOAD_DIFFUSERS = LOAD.format(
    imports="from diffusers import StableDiffusionPipeline",
    build="""pipe = StableDiffusionPipeline.from_pretrained(sys.argv[1], torch_dtype=torch.float16, safety_checker=None,
                                               requires_safety_checker=False).to(sys.argv[2])
parts = (pipe.unet, pipe.vae, pipe.text_encoder)""",
)


def unet_rows(device: torch.device, dtype: torch.dtype, repeats: int) -> list[Row]:
    from diffusers import UNet2DConditionModel

    size = 64 if device.type == "cuda" else 32
    cases = [
        (
            f"SD 1.5 arch, batch 2, {size}×{size}, 77 tokens",
            sd15_pipeline(device, dtype).denoiser,
            size,
            77,
            max(1, repeats // 2),
        ),
        ("shapes-tiny, batch 2, 8×8, 16 tokens", shapes_tiny_pipeline(device, dtype).denoiser, 8, 16, 10 * repeats),
    ]
    out = []
    for name, ours, size, tokens, runs in cases:
        with torch.device("meta"):
            reference = UNet2DConditionModel(**ours.config.model_dump(exclude=OURS_ONLY["unet"]))
        reference.load_state_dict(ours.state_dict(), assign=True)
        reference.eval()
        fast = optimise_part("denoiser", copy.deepcopy(ours), fast_path(device), device)
        generator = torch.Generator().manual_seed(0)
        sample = torch.randn(2, ours.in_channels, size, size, generator=generator).to(device, dtype)
        context = torch.randn(2, tokens, ours.context_dim, generator=generator).to(device, dtype)
        timestep = torch.tensor(500, device=device)
        calls = {
            "ours": lambda: ours(sample, timestep, context),
            "ours fast": lambda: fast(sample, timestep, context),
            "diffusers": lambda: reference(sample, timestep, context).sample,
        }
        with torch.inference_mode():
            results = measure(calls, device, runs, warmup_calls=warmups(calls, device))
        theirs = results["diffusers"]
        for label in ("ours", "ours fast"):
            difference = (results[label].output - theirs.output).abs().max().item()
            out.append(
                Row(
                    "unet forward",
                    f"{name} [{label}]",
                    results[label].median,
                    theirs.median,
                    note=f"max |Δ| {difference:.1e}",
                )
            )
    return out


def _load(script: str, folder: Path, device: torch.device) -> dict:
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "-c", script, str(folder), device.type], capture_output=True, text=True, cwd=root
    )
    if done.returncode:
        raise RuntimeError(f"loading benchmark failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def load_rows(device: torch.device, folder: Path) -> list[Row]:
    """Write an SD 1.5-sized fp16 diffusers folder into `folder`, then load it with ours and with diffusers."""
    from bench.reference import diffusers_pipeline

    pipe = diffusers_pipeline(sd15_pipeline(torch.device("cpu"), torch.float16), folder)
    pipe.save_pretrained(folder / "sd15")
    del pipe
    files = sum(f.stat().st_size for f in (folder / "sd15").rglob("*.safetensors"))
    registry = folder / "registry.yaml"
    registry.write_text(
        "version: 1\npipelines:\n  sd15:\n    weights: {path: sd15, format: diffusers}\n"
        "    encoder: {plugin: vae-kl}\n    denoiser: {plugin: unet2d-condition}\n"
        "    text: {plugin: clip-text}\n"
        "    scheduler: {plugin: ddim}\n    sampler: {plugin: cfg}\n"
    )
    ours, theirs = _load(LOAD_OURS, registry, device), _load(LOAD_DIFFUSERS, folder / "sd15", device)
    key = "gpu" if device.type == "cuda" else "rss"
    note = (
        f"files {files / 2**30:.2f} GiB; peak {key.upper()} / files: ours {ours[key] / files:.2f}, "
        f"diffusers {theirs[key] / files:.2f}"
    )
    return [
        Row(
            "checkpoint load",
            "SD 1.5 fp16 diffusers folder",
            ours["seconds"],
            theirs["seconds"],
            ours[key],
            theirs[key],
            note,
        )
    ]
