"""A tiny SD-architecture pipeline from diffstack's own plugins, with saved random weights, so every process
that builds it gets the same model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import core
from core.weights import save_state_dict

PARTS = {"encoder": "vae-kl", "denoiser": "unet2d-condition", "text": "clip-text"}


def write_tiny_registry(folder: Path) -> Path:
    """Tiny vae-kl (f=2), unet2d-condition and clip-text (the plugins' example configs), weights saved
    as native safetensors, in a registry whose pipeline `tiny` runs 32×32 images in 4 DDIM steps."""
    manager = core.PluginManager.discover()
    torch.manual_seed(0)
    lines = ["version: 1", "components:"]
    for kind, plugin in PARTS.items():
        spec = manager.get(kind, plugin).spec
        module = spec.build(spec.config.model_validate(spec.example_config))
        with torch.no_grad():
            for p in module.parameters():
                p.add_(torch.randn_like(p) * 0.02)
        save_state_dict(module.state_dict(), folder / f"{kind}.safetensors")
        lines.append(
            f"  tiny-{kind}: {{kind: {kind}, plugin: {plugin}, config: {spec.example_config}, "
            f"weights: {kind}.safetensors}}"
        )
    lines += [
        "pipelines:",
        "  tiny:",
        "    encoder: tiny-encoder",
        "    denoiser: tiny-denoiser",
        "    text: tiny-text",
        "    scheduler: {plugin: ddim, config: {beta_schedule: scaled_linear, beta_start: 0.00085, beta_end: 0.012}}",
        "    sampler: {plugin: cfg}",
        "    defaults: {height: 32, width: 32, steps: 4, guidance_scale: 4.0}",
        "default_pipeline: tiny",
    ]
    registry = folder / "registry.yaml"
    registry.write_text("\n".join(lines) + "\n")
    return registry


@pytest.fixture(scope="session")
def tiny_registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_registry(tmp_path_factory.mktemp("tiny-sd"))


@pytest.fixture(scope="session")
def tiny_pipeline(tiny_registry: Path) -> core.Pipeline:
    return core.load_registry(tiny_registry).build(device="cpu")
