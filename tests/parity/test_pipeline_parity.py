"""End-to-end parity with diffusers' StableDiffusionPipeline / StableDiffusionImg2ImgPipeline (test-only
oracles): a random tiny SD-architecture model saved as a diffusers folder, diffstack built from a registry
file pointing at that folder; same scheduler class, prompt, negative prompt, initial latents and guidance →
decoded images equal within 1e-4 (fp32)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from reference_sd import tiny_sd_pipeline

import core

diffusers = pytest.importorskip("diffusers")
pytest.importorskip("scipy")  # diffusers' LMS integrates its coefficients with scipy

# the registry's LMS declares `stability_cap: false`; the swaps to the other rules drop it, with a SwapWarning
pytestmark = pytest.mark.filterwarnings("ignore::core.errors.SwapWarning")

SCHEDULERS = {
    "lms": "LMSDiscreteScheduler",
    "ddim": "DDIMScheduler",
    "euler": "EulerDiscreteScheduler",
    "dpmpp-2m": "DPMSolverMultistepScheduler",
}
PROMPT, NEGATIVE, GUIDANCE, STEPS, SIZE = "a large red circle on a blue background", "blurry", 6.0, 8, 64


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("sd")
    pipe = tiny_sd_pipeline(root)
    pipe.save_pretrained(root / "tiny-sd")
    registry = root / "registry.yaml"
    registry.write_text(
        "version: 1\n"
        "pipelines:\n"
        "  tiny:\n"
        "    weights: {path: tiny-sd, format: diffusers}\n"
        "    encoder: {plugin: vae-kl}\n"
        "    denoiser: {plugin: unet2d-condition}\n"
        "    text: {plugin: clip-text}\n"
        "    scheduler: {plugin: lms, config: {beta_schedule: scaled_linear, beta_start: 0.00085, beta_end: 0.012,\n"
        "                                      stability_cap: false}}\n"  # diffusers' LMS exactly
        "    sampler: {plugin: cfg}\n"
    )
    ours = core.load_registry(registry).build("tiny", device="cpu")
    return pipe, ours


class LMSWithImg2ImgOrder(diffusers.LMSDiscreteScheduler if diffusers else object):
    """diffusers' LMS with one fix for img2img: its step picks the multistep order as min(step_index + 1, 4),
    so a run that starts at step_index k > 0 combines one derivative with 4th-order Lagrange weights. Capping
    the order at the derivatives actually collected (what diffstack's `lms` does) is the only change."""

    def step(self, *args, **kwargs):
        kwargs["order"] = min(len(self.derivatives) + 1, 4)
        return super().step(*args, **kwargs)


def seeded_noise(seed: int, channels: int = 4) -> torch.Tensor:
    """The initial latents diffstack draws for image 0 of a run with `seed`."""
    return torch.randn((1, channels, SIZE // 8, SIZE // 8), generator=torch.Generator("cpu").manual_seed(seed))


def assert_images_match(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    ours01 = (ours / 2 + 0.5).clamp(0, 1)  # diffusers' "pt" output is in [0, 1]
    error = (ours01 - theirs).abs().max().item()
    assert error <= 1e-4, f"max |ours − diffusers| = {error:.3g}"


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_txt2img_matches_diffusers(reference, name: str):
    pipe, ours = reference
    pipe.scheduler = getattr(diffusers, SCHEDULERS[name]).from_config(pipe.scheduler.config)
    with torch.no_grad():
        theirs = pipe(
            PROMPT,
            negative_prompt=NEGATIVE,
            latents=seeded_noise(7),
            guidance_scale=GUIDANCE,
            num_inference_steps=STEPS,
            height=SIZE,
            width=SIZE,
            output_type="pt",
        ).images
    mine = ours(
        PROMPT,
        negative_prompt=NEGATIVE,
        seed=7,
        guidance_scale=GUIDANCE,
        steps=STEPS,
        height=SIZE,
        width=SIZE,
        scheduler=name,
    ).pixels
    assert_images_match(mine, theirs)


@pytest.mark.parametrize("strength", [0.3, 0.8])
@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_img2img_matches_diffusers(reference, name: str, strength: float):
    pipe, ours = reference
    img2img = diffusers.StableDiffusionImg2ImgPipeline(**pipe.components)
    oracle = LMSWithImg2ImgOrder if name == "lms" else getattr(diffusers, SCHEDULERS[name])
    img2img.scheduler = oracle.from_config(pipe.scheduler.config)
    ramp = np.linspace(0, 255, SIZE, dtype=np.uint8)
    init = Image.fromarray(
        np.stack([np.tile(ramp, (SIZE, 1)), np.tile(ramp[:, None], (1, SIZE)), np.full((SIZE, SIZE), 90, np.uint8)], -1)
    )
    with torch.no_grad():
        theirs = img2img(
            PROMPT,
            image=init,
            strength=strength,
            negative_prompt=NEGATIVE,
            guidance_scale=GUIDANCE,
            num_inference_steps=STEPS,
            generator=torch.Generator("cpu").manual_seed(3),
            output_type="pt",
        ).images
    mine = ours(
        PROMPT,
        image=init,
        strength=strength,
        negative_prompt=NEGATIVE,
        seed=3,
        guidance_scale=GUIDANCE,
        steps=STEPS,
        scheduler=name,
    ).pixels
    assert_images_match(mine, theirs)
