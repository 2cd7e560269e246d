"""Benchmarks of the model parts against diffusers (the reference), same weights, same process, on CPU.

1. U-Net forward at SD 1.5's architecture (random weights, batch 2, 32×32 latents, 77 context tokens) and at
   the plugin's tiny example config: best wall time of ours (default and `channels_last`) and of diffusers'
   `UNet2DConditionModel`, runs interleaved, and the ratio ours / diffusers (target ≤ 1.0).
2. Loading an SD 1.5-sized fp16 U-Net from a safetensors file with `core.weights` (read_component_weights +
   build_with_weights, target dtype float16), in a fresh subprocess, every weight read once afterwards: peak
   RSS (VmHWM) against the file size (target ≤ 1.3×), with diffusers' `from_pretrained` for comparison
   (diffusers leaves the weights in the file's memory map, which counts in RSS once read).

Run: `python bench/models.py [--runs N] [--skip-sd15] [--skip-load]`. Needs diffusers (a test dependency).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch

from core import weights
from plugins import unet as unet_plugin
from plugins.unet import Config, UNet2DCondition

LOAD_OURS = """
import json, sys, torch
from core import weights
from plugins.unet import Config, UNet2DCondition
def rss():
    lines = [l.split() for l in open('/proc/self/status') if l.startswith(('VmRSS', 'VmHWM'))]
    return {l[0].rstrip(':'): int(l[1]) * 1024 for l in lines}
before = rss()['VmRSS']
state, architecture = weights.read_component_weights(sys.argv[1], 'denoiser')
model = weights.build_with_weights(lambda: UNet2DCondition(Config(**architecture)), state, component='unet',
                                   source=sys.argv[1], dtype=torch.float16)
assert model.conv_in.weight.dtype == torch.float16
sum(float(p.float().sum()) for p in model.parameters())  # touch every weight: what is mapped but unread counts later
print(json.dumps({'before': before, 'peak': rss()['VmHWM']}))
"""
LOAD_DIFFUSERS = """
import json, sys, torch
def rss():
    lines = [l.split() for l in open('/proc/self/status') if l.startswith(('VmRSS', 'VmHWM'))]
    return {l[0].rstrip(':'): int(l[1]) * 1024 for l in lines}
from diffusers import UNet2DConditionModel
before = rss()['VmRSS']
model = UNet2DConditionModel.from_pretrained(sys.argv[1], subfolder='unet', torch_dtype=torch.float16)
sum(float(p.float().sum()) for p in model.parameters())  # touch every weight: what is mapped but unread counts later
print(json.dumps({'before': before, 'peak': rss()['VmHWM']}))
"""


def best_seconds(runs: int, *calls: Callable[[], object]) -> list[float]:
    """Best wall time of each call over `runs` interleaved rounds after one warm-up round (the minimum is the
    figure least disturbed by other load on the machine)."""
    times: list[list[float]] = [[] for _ in calls]
    for round_ in range(runs + 1):
        for i, call in enumerate(calls):
            start = time.perf_counter()
            call()
            if round_:
                times[i].append(time.perf_counter() - start)
    return [min(t) for t in times]


def unet_forward(config: dict, batch: int, size: int, tokens: int, runs: int) -> dict[str, float]:
    """Seconds per forward of ours, ours with channels_last and diffusers on the same random weights, and the
    max abs difference of ours from diffusers."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    reference = UNet2DConditionModel(**{"cross_attention_dim": 768, **config}).eval()
    ours = UNet2DCondition(Config(**config)).eval()
    ours.load_state_dict(reference.state_dict())
    ours_cl = UNet2DCondition(Config(**config, channels_last=True)).eval()
    ours_cl.load_state_dict(reference.state_dict())
    sample = torch.randn(batch, ours.in_channels, size, size)
    context = torch.randn(batch, tokens, ours.context_dim)
    timestep = torch.tensor([500] * batch)
    with torch.inference_mode():
        difference = (ours(sample, timestep, context) - reference(sample, timestep, context).sample).abs().max().item()
        seconds = best_seconds(
            runs,
            lambda: ours(sample, timestep, context),
            lambda: ours_cl(sample, timestep, context),
            lambda: reference(sample, timestep, context),
        )
    return {"ours": seconds[0], "ours_cl": seconds[1], "diffusers": seconds[2], "difference": difference}


def peak_rss(script: str, target: Path) -> dict[str, int]:
    done = subprocess.run([sys.executable, "-c", script, str(target)], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def load_peak(folder: Path) -> tuple[int, dict[str, int], dict[str, int]]:
    """Write a random SD 1.5-sized fp16 U-Net as a diffusers folder; peak RSS of loading it, ours and diffusers'."""
    with torch.device("meta"):
        shapes = UNet2DCondition(Config()).state_dict()
    state = {k: torch.randn(v.shape, dtype=torch.float16) * 0.02 for k, v in shapes.items()}
    ours_only = {"channels_last", "prediction_type"}
    config = {"_class_name": "UNet2DConditionModel", **json.loads(Config().model_dump_json(exclude=ours_only))}
    (folder / "unet").mkdir(parents=True)
    (folder / "unet/config.json").write_text(json.dumps(config))
    file = folder / "unet/diffusion_pytorch_model.safetensors"
    weights.save_state_dict(state, file)
    del state
    return file.stat().st_size, peak_rss(LOAD_OURS, folder), peak_rss(LOAD_DIFFUSERS, folder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="timed rounds per model (after one warm-up)")
    parser.add_argument("--skip-sd15", action="store_true", help="skip the SD 1.5-sized forward")
    parser.add_argument("--skip-load", action="store_true", help="skip the loading benchmark")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU float32")
    print(f"{'U-Net forward (best of N)':<46}{'ours s':>9}{'diffusers s':>13}{'ratio':>7}"
          f"{'channels_last s':>17}{'ratio':>7}{'max |diff|':>12}")
    example = unet_plugin.diffstack_components()[0].example_config
    cases = [("tiny example config, batch 2, 16×16, 8 tok", example, 16, 8, max(args.runs, 20))]
    if not args.skip_sd15:
        cases.append(("SD 1.5 architecture, batch 2, 32×32, 77 tok", {}, 32, 77, args.runs))
    for name, config, size, tokens, runs in cases:
        t = unet_forward(config, 2, size, tokens, runs)
        print(f"{name:<46}{t['ours']:>9.4f}{t['diffusers']:>13.4f}{t['ours'] / t['diffusers']:>7.3f}"
              f"{t['ours_cl']:>17.4f}{t['ours_cl'] / t['diffusers']:>7.3f}{t['difference']:>12.2e}")
    if not args.skip_load:
        with tempfile.TemporaryDirectory() as folder:
            size, ours, theirs = load_peak(Path(folder))
        print(f"\nloading an SD 1.5-sized fp16 U-Net (file {size / 2**30:.2f} GiB) → float16, CPU, fresh process")
        print(f"{'':<14}{'RSS before':>12}{'peak RSS':>11}{'peak / file':>13}{'(peak − before) / file':>25}")
        for name, rss in (("ours", ours), ("diffusers", theirs)):
            print(
                f"{name:<14}{rss['before'] / 2**30:>10.2f}Gi{rss['peak'] / 2**30:>9.2f}Gi"
                f"{rss['peak'] / size:>13.2f}{(rss['peak'] - rss['before']) / size:>25.2f}"
            )


if __name__ == "__main__":
    main()
