"""Full text-to-image against diffusers' `StableDiffusionPipeline`: same tensors, same process, same latents.

    sd15-arch    Stable Diffusion 1.5's architecture (U-Net, VAE, CLIP ViT-L/14 text tower) with random
                 weights; DDIM, guidance 7.5, one image (the U-Net runs at batch 2); 256² and 10 steps on the
                 CPU, 512² and 20 steps on CUDA
    shapes-tiny  the embedded model's shipped weights at its registry defaults (64², 20 DDIM steps, guidance 5)

Both sides get the prompt, an empty negative prompt and our seeded initial latents and return PIL images;
`max |Δ|` (in 8-bit pixel levels) between the two pictures shows that both computed the same image.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.reference import diffusers_pipeline, realistic_init
from bench.timing import measure, warmups
from core import weights
from core.create import create
from core.performance import Performance, apply_performance
from core.pipeline import Pipeline
from core.plugin_manager import PluginManager
from core.registry import bundled_registry_path, load_registry
from core.registry_schema import PipelineDefaults

PROMPT = "a large red circle on a blue background"
SD_DDIM = {
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "timestep_spacing": "leading",
}
SD15_TEXT = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12}


def _random_part(
    kind: str, plugin: str, config: dict[str, Any], seed: int, device: torch.device, dtype: torch.dtype
) -> Any:
    """Our component with realistic random weights (built on the meta device, then given the tensors)."""
    with torch.device("meta"):
        shapes = create(kind, plugin, **config).state_dict()
    state = realistic_init(shapes, seed)
    return (
        weights.build_with_weights(
            lambda: create(kind, plugin, **config), state, component=plugin, source="random", device=device, dtype=dtype
        )
        .eval()
        .requires_grad_(False)
    )


@functools.cache
def _sd15_random() -> Pipeline:
    device, dtype = torch.device("cpu"), torch.float32
    return Pipeline(
        "sd15-arch",
        encoder=_random_part("encoder", "vae-kl", {"force_upcast": False}, 1, device, dtype),
        denoiser=_random_part("denoiser", "unet2d-condition", {}, 2, device, dtype),
        text=_random_part("text", "clip-text", SD15_TEXT, 3, device, dtype),
        scheduler=create("scheduler", "ddim", **SD_DDIM),
        sampler=create("sampler", "cfg"),
        device=device,
        dtype=dtype,
        defaults=PipelineDefaults(guidance_scale=7.5, negative_prompt=""),
        plugin_manager=PluginManager.discover(),
        plugins={
            "encoder": "vae-kl",
            "denoiser": "unet2d-condition",
            "text": "clip-text",
            "scheduler": "ddim",
            "sampler": "cfg",
        },
    )


def sd15_pipeline(device: torch.device, dtype: torch.dtype) -> Pipeline:
    """Stable Diffusion 1.5's architecture with random weights, DDIM (SD's settings), classifier-free guidance.
    The float32 CPU pipeline is made once per process (~1.1 B random weights take ~18 s on two cores) and
    shared; another device or dtype gets a converted copy."""
    base = _sd15_random()
    if (torch.device(device), dtype) == (base.device, base.dtype):
        return base
    parts = {kind: copy.deepcopy(getattr(base, kind)).to(device, dtype) for kind in ("encoder", "denoiser", "text")}
    return dataclasses.replace(base, **parts, device=torch.device(device), dtype=dtype)


def shapes_tiny_pipeline(device: torch.device, dtype: torch.dtype) -> Pipeline:
    """The bundled shapes-tiny pipeline, eager (as shipped it runs the fast path: its `performance:` block)."""
    return load_registry(bundled_registry_path()).build(
        "shapes-tiny", device=device, dtype=dtype, performance=Performance()
    )


def _pixel_difference(a: Any, b: Any) -> int:
    return int(np.abs(np.asarray(a, dtype=np.int16) - np.asarray(b, dtype=np.int16)).max())


def compare(
    ours: Pipeline, size: int, steps: int, repeats: int, performance: Performance, eager: bool = True
) -> dict[str, Any]:
    """Time ours (a copy with `performance`, and as built if `eager`) against diffusers on the same tensors.

    A one-step generation warms up what `bench.timing.warmups` names (on the CPU the fast path, which
    packs its weights or compiles then). The timed runs' pictures are compared with diffusers' →
    {"results": {variant: Measurement}, "difference": {variant: max |Δ| levels}}.
    """
    guidance = ours.settings(PROMPT).guidance_scale
    factor = ours.encoder.downsample_factor
    latents = torch.randn(
        (1, ours.encoder.latent_channels, size // factor, size // factor), generator=torch.Generator().manual_seed(0)
    ).to(ours.device, ours.dtype)
    with tempfile.TemporaryDirectory() as folder:
        reference = diffusers_pipeline(ours, Path(folder))

    def run_ours(pipe: Pipeline, n: int) -> Any:
        return pipe(
            PROMPT,
            seed=0,
            steps=n,
            guidance_scale=guidance,
            height=size,
            width=size,
            negative_prompt="",
            progress=False,
        ).images[0]

    def run_reference(n: int) -> Any:
        with torch.inference_mode():
            return reference(
                PROMPT,
                negative_prompt="",
                latents=latents,
                num_inference_steps=n,
                guidance_scale=guidance,
                height=size,
                width=size,
            ).images[0]

    variants = {"ours": ours} if eager else {}
    variants["ours fast"] = apply_performance(
        dataclasses.replace(ours, denoiser=copy.deepcopy(ours.denoiser), encoder=copy.deepcopy(ours.encoder)),
        performance,
    )
    calls = {name: (lambda p=pipe: run_ours(p, steps)) for name, pipe in variants.items()}
    calls["diffusers"] = lambda: run_reference(steps)
    one_step = {name: (lambda p=pipe: run_ours(p, 1)) for name, pipe in variants.items()}
    one_step["diffusers"] = lambda: run_reference(1)
    warm = {name: one_step[name] for name in warmups(calls, ours.device)}
    results = measure(calls, ours.device, repeats, warmup=1, warmup_calls=warm)
    theirs = results["diffusers"].output
    return {
        "results": results,
        "difference": {name: _pixel_difference(results[name].output, theirs) for name in variants},
    }
