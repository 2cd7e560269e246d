"""A random tiny Stable Diffusion model saved as a diffusers folder, and a diffstack registry over it with one
pipeline per adapted scheduler class, `tiny-<plugin name>`. The model comes from the diffstack checkout's own
test helper (`tests/reference_sd.py`)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import diffusers
from diffstack_diffusers import ADAPTERS, EXAMPLE_CONFIGS

import core

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tests"))  # the checkout's tests/, for reference_sd

from reference_sd import tiny_sd_pipeline

SD_SCHEDULE = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear"}
"""Stable Diffusion 1.x's noise schedule, used on both sides."""


def scheduler_config(plugin: str) -> dict[str, Any]:
    """The scheduler settings of pipeline `tiny-<plugin>`: SD's schedule, plus the class's `EXAMPLE_CONFIGS`."""
    return SD_SCHEDULE | EXAMPLE_CONFIGS.get(ADAPTERS[plugin].diffusers_class.__name__, {})


def reference_scheduler(plugin: str) -> diffusers.SchedulerMixin:
    """A fresh diffusers scheduler of the adapter's class, with the settings of pipeline `tiny-<plugin>`."""
    return ADAPTERS[plugin].diffusers_class(**scheduler_config(plugin))


def tiny_sd(root: Path) -> tuple[diffusers.StableDiffusionPipeline, core.Registry]:
    """(diffusers' pipeline of the tiny model, the diffstack registry over its folder), both under `root`."""
    pipe = tiny_sd_pipeline(root)
    pipe.save_pretrained(root / "tiny-sd")
    lines = ["version: 1", "pipelines:"]
    for plugin in ADAPTERS:
        config = ", ".join(f"{key}: {value}" for key, value in scheduler_config(plugin).items())
        lines += [
            f"  tiny-{plugin}:",
            "    weights: {path: tiny-sd, format: diffusers}",
            "    encoder: {plugin: vae-kl}",
            "    denoiser: {plugin: unet2d-condition}",
            "    text: {plugin: clip-text}",
            f"    scheduler: {{plugin: {plugin}, config: {{{config}}}}}",
            "    sampler: {plugin: cfg}",
        ]
    (root / "registry.yaml").write_text("\n".join(lines) + "\n")
    return pipe, core.load_registry(root / "registry.yaml")
