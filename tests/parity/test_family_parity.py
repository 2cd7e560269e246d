"""End-to-end parity for the SD 2.x and SDXL families (issue 14) with diffusers' pipelines as test-only oracles.

Random tiny models of each architecture are saved as diffusers folders; diffstack builds the same pipeline from a
registry file naming only plugins and the folder. Same prompt, seed (initial latents), steps and guidance →
final latents within 1e-4 relative, decoded images within 1/255 (fp32).

- SDXL: `StableDiffusionXLPipeline` — two text towers (penultimate states, pooled projection), the U-Net's
  text-time added embedding with size/crop ids, zeros for the empty negative prompt, Euler.
- SD 2.x: `StableDiffusionPipeline` with a v-prediction U-Net (linear projections, upcast attention) and a
  gelu text tower padding with "!" — the scheduler reads predictions as the U-Net states (`prediction_type`
  from the folder's scheduler config), DDIM.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from reference_sd import tiny_sd2_pipeline, tiny_sdxl_pipeline

import core

diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
PROMPT, STEPS, SIZE = "a large red circle on a blue background", 6, 64


def registry_for(root, folder: str, text: str, scheduler: str) -> core.Registry:
    path = root / "registry.yaml"
    path.write_text(
        "version: 1\n"
        "pipelines:\n"
        "  tiny:\n"
        f"    weights: {{path: {folder}, format: auto}}\n"
        "    encoder: {plugin: vae-kl}\n"
        "    denoiser: {plugin: unet2d-condition}\n"
        f"    text: {{plugin: {text}}}\n"
        f"    scheduler: {scheduler}\n"
        "    sampler: {plugin: cfg}\n"
    )
    return core.load_registry(path)


def seeded_noise(seed: int) -> torch.Tensor:
    """The initial latents diffstack draws for image 0 of a run with `seed`."""
    return torch.randn((1, 4, SIZE // 8, SIZE // 8), generator=torch.Generator("cpu").manual_seed(seed))


def ours_with_latents(pipe: core.Pipeline, **call) -> tuple[torch.Tensor, torch.Tensor]:
    """(final latents, images in [0, 1]) of one diffstack call."""
    events: list[core.StepEvent] = []
    generation = pipe(PROMPT, seed=0, steps=STEPS, height=SIZE, width=SIZE, callback=events.append, **call)
    return events[-1].latents, (generation.pixels / 2 + 0.5).clamp(0, 1)


def assert_parity(ours: tuple[torch.Tensor, torch.Tensor], latents: torch.Tensor, images: torch.Tensor) -> None:
    relative = ((ours[0] - latents).abs().max() / latents.abs().max()).item()
    assert relative <= 1e-4, f"final latents differ by {relative:.3g} relative"
    error = (ours[1] - images).abs().max().item()
    assert error <= 1 / 255, f"images differ by {error:.3g}"


@pytest.fixture(scope="module")
def sdxl(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("sdxl")
    reference = tiny_sdxl_pipeline(root)
    reference.save_pretrained(root / "tiny-xl")
    scheduler = (
        "{plugin: euler, config: {beta_schedule: scaled_linear, beta_start: 0.00085, beta_end: 0.012, "
        "timestep_spacing: leading, steps_offset: 1}}"
    )
    return reference, registry_for(root, "tiny-xl", "sdxl-text", scheduler).build("tiny", device="cpu")


@pytest.fixture(scope="module")
def sd2(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("sd2")
    reference = tiny_sd2_pipeline(root)
    reference.save_pretrained(root / "tiny-sd2")
    scheduler = (
        "{plugin: ddim, config: {beta_schedule: scaled_linear, beta_start: 0.00085, beta_end: 0.012, "
        "steps_offset: 1, set_alpha_to_one: false, clip_sample: false, timestep_spacing: leading}}"
    )
    return reference, registry_for(root, "tiny-sd2", "clip-text", scheduler).build("tiny", device="cpu")


def reference_run(reference, **call) -> tuple[torch.Tensor, torch.Tensor]:
    """(final latents, images in [0, 1]) of the diffusers pipeline on diffstack's initial latents."""
    common = dict(num_inference_steps=STEPS, height=SIZE, width=SIZE, latents=seeded_noise(0), **call)
    with torch.no_grad():
        latents = reference(PROMPT, output_type="latent", **common).images
        images = reference(PROMPT, output_type="pt", **common).images
    return latents, images


@pytest.mark.parametrize("guidance", [5.0, 1.0])
def test_sdxl_matches_diffusers(sdxl, guidance: float) -> None:
    reference, ours = sdxl
    assert ours.text.added_outputs == {"pooled": (16,)} and ours.denoiser.added_inputs["time_ids"] == (6,)
    assert_parity(ours_with_latents(ours, guidance_scale=guidance), *reference_run(reference, guidance_scale=guidance))


def test_sdxl_with_a_negative_prompt_matches_diffusers(sdxl) -> None:
    reference, ours = sdxl
    call = dict(guidance_scale=5.0, negative_prompt="blurry")
    assert_parity(ours_with_latents(ours, **call), *reference_run(reference, **call))


def test_sdxl_batch_of_two_prompts_keeps_each_row_aligned(sdxl) -> None:
    """Two prompts × two images: each image equals its own single run (added inputs batched like contexts)."""
    _, ours = sdxl
    batch = ours([PROMPT, "a cat"], seed=3, steps=2, num_images=2, height=SIZE, width=SIZE, guidance_scale=5.0)
    for j, prompt in enumerate([PROMPT, PROMPT, "a cat", "a cat"]):
        single = ours(prompt, seed=3 + j, steps=2, height=SIZE, width=SIZE, guidance_scale=5.0)
        torch.testing.assert_close(batch.pixels[j : j + 1], single.pixels, atol=1e-5, rtol=1e-4)


def test_sd2_v_prediction_matches_diffusers(sd2) -> None:
    reference, ours = sd2
    assert ours.denoiser.prediction_type == ours.scheduler.config.prediction_type == "v_prediction"
    call = dict(guidance_scale=6.0, negative_prompt="blurry")
    assert_parity(ours_with_latents(ours, **call), *reference_run(reference, **call))


def test_fifteen_lines_sdxl_equals_the_pipeline(sdxl) -> None:
    """examples/fifteen_lines_sdxl.py's loop, on the same parts, makes the pipeline's image."""
    spec = importlib.util.spec_from_file_location("fifteen_lines_sdxl", EXAMPLES / "fifteen_lines_sdxl.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    _, ours = sdxl
    loop = example.fifteen_lines_sdxl(ours, PROMPT, seed=4, steps=5, guidance=5.0)
    reference = ours(PROMPT, seed=4, steps=5, guidance_scale=5.0, negative_prompt="", height=SIZE, width=SIZE)
    assert loop.shape == reference.pixels.shape
    assert (loop - reference.pixels).abs().max() < 1e-4


@pytest.mark.parametrize(("family", "text"), [("sdxl", "sdxl-text"), ("sd2", "clip-text")])
def test_validate_checks_the_parts_as_the_weights_make_them(family, text, request, tmp_path) -> None:
    """Blocks that name only plugins take their architecture from the folder, in `validate` as in `build`: the
    plugins' defaults alone (SD 1.5's 768-wide U-Net, 2048-wide sdxl-text) would not fit together."""
    reference, _ = request.getfixturevalue(family)
    reference.save_pretrained(tmp_path / "folder")
    registry = registry_for(tmp_path, "folder", text, "{plugin: euler}")
    assert registry.check_parts() == [] and registry.check_weights() == ([], [])
