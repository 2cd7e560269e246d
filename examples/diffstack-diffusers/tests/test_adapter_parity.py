"""End to end against diffusers (the oracle): the tiny SD model through diffstack with `scheduler: {plugin:
diffusers-X}` and through diffusers' own StableDiffusionPipeline / StableDiffusionImg2ImgPipeline with class X,
same prompt, negative prompt, seed, guidance and steps → decoded images within 1e-4 (fp32).

Stochastic classes (DDPM, Euler ancestral, LCM) are compared exactly too: diffstack draws image j's starting noise
from a CPU generator seeded seed + j and hands the step the same generators, in a list of one per image;
diffusers given one generator draws the latents from it, then each step's noise, and `randn_tensor` draws a list
of one generator's noise as the single generator does, so the streams line up for one image.
"""

from __future__ import annotations

import diffusers
import numpy as np
import pytest
import torch
from diffstack_diffusers import ADAPTERS
from PIL import Image
from tiny_sd import reference_scheduler

PROMPT, NEGATIVE, GUIDANCE, STEPS, SIZE, SEED = "a large red circle on a blue background", "blurry", 6.0, 6, 64, 7


def assert_images_match(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    """ours: (B, 3, H, W) in [-1, 1] (diffstack's pixels); theirs: diffusers' "pt" output, in [0, 1]."""
    error = ((ours / 2 + 0.5).clamp(0, 1) - theirs).abs().max().item()
    assert error <= 1e-4, f"max |ours − diffusers| = {error:.3g}"


def init_image() -> Image.Image:
    ramp = np.linspace(0, 255, SIZE, dtype=np.uint8)
    channels = [np.tile(ramp, (SIZE, 1)), np.tile(ramp[:, None], (1, SIZE)), np.full((SIZE, SIZE), 90, np.uint8)]
    return Image.fromarray(np.stack(channels, -1))


@pytest.mark.parametrize("plugin", sorted(ADAPTERS))
def test_txt2img_matches_diffusers(tiny_sd, plugin: str) -> None:
    pipe, registry = tiny_sd
    pipe.scheduler = reference_scheduler(plugin)
    with torch.no_grad():
        theirs = pipe(
            PROMPT,
            negative_prompt=NEGATIVE,
            generator=torch.Generator("cpu").manual_seed(SEED),
            guidance_scale=GUIDANCE,
            num_inference_steps=STEPS,
            height=SIZE,
            width=SIZE,
            output_type="pt",
        ).images
    ours = registry.build(f"tiny-{plugin}", device="cpu")
    mine = ours(
        PROMPT, negative_prompt=NEGATIVE, seed=SEED, guidance_scale=GUIDANCE, steps=STEPS, height=SIZE, width=SIZE
    )
    assert_images_match(mine.pixels, theirs)


@pytest.mark.parametrize("strength", [0.3, 0.75])
@pytest.mark.parametrize("plugin", ["diffusers-ddim", "diffusers-pndm", "diffusers-euler", "diffusers-unipc"])
def test_img2img_matches_diffusers(tiny_sd, plugin: str, strength: float) -> None:
    pipe, registry = tiny_sd
    img2img = diffusers.StableDiffusionImg2ImgPipeline(**pipe.components)
    img2img.scheduler = reference_scheduler(plugin)
    with torch.no_grad():
        theirs = img2img(
            PROMPT,
            image=init_image(),
            strength=strength,
            negative_prompt=NEGATIVE,
            generator=torch.Generator("cpu").manual_seed(SEED),
            guidance_scale=GUIDANCE,
            num_inference_steps=STEPS,
            output_type="pt",
        ).images
    ours = registry.build(f"tiny-{plugin}", device="cpu")
    mine = ours(
        PROMPT,
        image=init_image(),
        strength=strength,
        negative_prompt=NEGATIVE,
        seed=SEED,
        guidance_scale=GUIDANCE,
        steps=STEPS,
    )
    assert_images_match(mine.pixels, theirs)


@pytest.mark.parametrize("strength", [0.3, 0.5, 0.75, 1.0])
def test_img2img_starts_where_diffusers_img2img_starts(tiny_sd, strength: float) -> None:
    """StableDiffusionImg2ImgPipeline.get_timesteps: t_start = n − min(int(n·strength), n), then
    timesteps[t_start·order:]. diffstack's sampler cuts the adapter's schedule the same way."""
    _, registry = tiny_sd
    visited: list[float] = []
    ours = registry.build("tiny-diffusers-ddim", device="cpu")
    ours(
        PROMPT,
        image=init_image(),
        strength=strength,
        guidance_scale=1.0,
        steps=STEPS,
        callback=lambda event: visited.append(event.timestep.item()),
    )
    reference = reference_scheduler("diffusers-ddim")
    reference.set_timesteps(STEPS)
    t_start = STEPS - min(int(STEPS * strength), STEPS)
    assert visited == reference.timesteps[t_start * reference.order :].tolist()
