"""Original single-file SD 1.x checkpoints, verified independently of the plugins' key tables (their layouts).

A random tiny diffusers U-Net and VAE and a transformers CLIP text model are written out in the CompVis/LDM
layout by the test-side diffusers → LDM conversion (`original_layouts.ldm_checkpoint`, the inverse direction,
written separately). The file is then loaded (1) into our modules through `core.weights` and the plugins'
`CheckpointLayout`s and (2) into diffusers through its own `from_single_file` converter, offline with local
configs; both must reproduce (3) the original model's outputs.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from original_layouts import ldm_checkpoint, ldm_unet_key, ldm_vae_key

from core import weights
from plugins import clip_text, unet, vae_kl
from plugins.unet import Config as UNetConfig
from plugins.unet import UNet2DCondition
from plugins.unet import single_file_names as unet_single_file_names
from plugins.vae_kl import AutoencoderKL
from plugins.vae_kl import Config as VAEConfig
from plugins.vae_kl import single_file_names as vae_single_file_names

SPECS = {"denoiser": unet.SPEC, "encoder": vae_kl.SPEC, "text": clip_text.SPEC}
diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")

UNET = dict(
    block_out_channels=(16, 32, 32),
    layers_per_block=2,
    attention_head_dim=(2, 4, 4),
    cross_attention_dim=32,
    norm_num_groups=8,
    sample_size=16,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
)
VAE = dict(
    block_out_channels=(8, 16, 16),
    layers_per_block=1,
    norm_num_groups=4,
    sample_size=32,
    down_block_types=("DownEncoderBlock2D",) * 3,
    up_block_types=("UpDecoderBlock2D",) * 3,
)
CLIP = dict(
    vocab_size=99,
    hidden_size=32,
    intermediate_size=37,
    num_hidden_layers=2,
    num_attention_heads=4,
    max_position_embeddings=20,
)


# ─── fixtures ─────────────────────────────────────────────────────────────────────────────────────────────


def perturbed(module: torch.nn.Module) -> torch.nn.Module:
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return module.eval()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, torch.nn.Module]]:
    torch.manual_seed(0)
    originals = {
        "unet": perturbed(diffusers.UNet2DConditionModel(**UNET)),
        "vae": perturbed(diffusers.AutoencoderKL(**VAE)),
        "text": perturbed(transformers.CLIPTextModel(transformers.CLIPTextConfig(**CLIP))),
    }
    root = tmp_path_factory.mktemp("single-file")
    file = root / "tiny-sd1.safetensors"
    weights.save_state_dict(ldm_checkpoint(originals["unet"], originals["vae"], originals["text"]), file)
    configs = root / "configs"  # local diffusers configs for from_single_file (offline)
    originals["unet"].save_config(configs / "unet")
    originals["vae"].save_config(configs / "vae")
    return file, configs, originals


def ours(file: Path, kind: str, build, config_type, **overrides):
    state, architecture = weights.read_component_weights(file, SPECS[kind])
    config = config_type(**{**architecture, **overrides})
    module = weights.build_with_weights(lambda: build(config), state, component=kind, source=str(file))
    return module.eval(), architecture


def assert_same(a: torch.Tensor, b: torch.Tensor, what: str) -> None:
    error = (a - b).abs().max().item()
    assert error <= 1e-5 * max(1.0, b.abs().max().item()), f"{what}: max abs difference {error:.3g}"


# ─── tests ────────────────────────────────────────────────────────────────────────────────────────────────


def test_format_detected(checkpoint) -> None:
    for spec in SPECS.values():
        assert weights.detect_format(checkpoint[0], spec.checkpoint_layout) == "single-file"


def test_unet_three_ways(checkpoint) -> None:
    file, configs, originals = checkpoint
    not_in_shapes = {k: UNET[k] for k in ("attention_head_dim", "norm_num_groups", "sample_size")}
    unet, architecture = ours(file, "denoiser", UNet2DCondition, UNetConfig, **not_in_shapes)
    for key in ("block_out_channels", "layers_per_block", "down_block_types", "up_block_types", "cross_attention_dim"):
        assert architecture[key] == (list(UNET[key]) if isinstance(UNET[key], tuple) else UNET[key]), key
    theirs = diffusers.UNet2DConditionModel.from_single_file(
        str(file), config=str(configs), subfolder="unet", local_files_only=True
    ).eval()
    sample, context = torch.randn(2, 4, 16, 16), torch.randn(2, 6, 32)
    with torch.inference_mode():
        expected = originals["unet"](sample, 321, context).sample
        assert_same(unet(sample, 321, context), expected, "ours from the single file vs the original")
        assert_same(theirs(sample, 321, context).sample, expected, "diffusers from_single_file vs the original")


def test_vae_three_ways(checkpoint) -> None:
    file, configs, originals = checkpoint
    vae, architecture = ours(file, "encoder", AutoencoderKL, VAEConfig, norm_num_groups=4, sample_size=32)
    assert tuple(architecture["block_out_channels"]) == VAE["block_out_channels"]
    theirs = diffusers.AutoencoderKL.from_single_file(
        str(file), config=str(configs), subfolder="vae", local_files_only=True
    ).eval()
    images, latents = torch.rand(1, 3, 16, 24) * 2 - 1, torch.randn(1, 4, 3, 5)
    s = vae.scaling_factor
    with torch.inference_mode():
        expected = originals["vae"].encode(images).latent_dist.mode() * s
        assert_same(vae.encode(images, sample=False), expected, "ours: encode")
        assert_same(theirs.encode(images).latent_dist.mode() * s, expected, "diffusers from_single_file: encode")
        expected = originals["vae"].decode(latents / s).sample.clamp(-1, 1)  # our decode clamps, as pipelines do
        assert_same(vae.decode(latents), expected, "ours: decode")
        assert_same(theirs.decode(latents / s).sample.clamp(-1, 1), expected, "diffusers from_single_file: decode")


def test_text_keys_are_transformers_names(checkpoint) -> None:
    file, _, originals = checkpoint
    state, architecture = weights.read_component_weights(file, SPECS["text"])
    reference = {"text_model." + k.removeprefix("text_model."): v for k, v in originals["text"].state_dict().items()}
    assert set(state) == set(reference)
    for key, value in reference.items():
        assert torch.equal(state[key], value), key
    assert architecture == {k: CLIP[k] for k in architecture}


def test_sd15_sized_layouts_map_back_to_ours() -> None:
    """At SD 1.5's real architecture (built on the meta device, no memory): every LDM key maps onto one of ours
    and the architecture read from the shapes is SD 1.5's."""
    with torch.device("meta"):
        unet, vae = UNet2DCondition(UNetConfig()), AutoencoderKL(VAEConfig())
    up_attention = ["CrossAttn" in kind for kind in UNetConfig().up_block_types]
    shapes = {ldm_unet_key(k, 2, up_attention): tuple(v.shape) for k, v in unet.state_dict().items()}
    names, architecture = unet_single_file_names(shapes)
    assert len(shapes) == 686 and set(names) == set(unet.state_dict())
    assert UNetConfig(**architecture) == UNetConfig()
    shapes = {ldm_vae_key(k, 4): tuple(v.shape) for k, v in vae.state_dict().items()}
    names, architecture = vae_single_file_names(shapes)
    assert set(names) == set(vae.state_dict())
    assert VAEConfig(**architecture) == VAEConfig()
