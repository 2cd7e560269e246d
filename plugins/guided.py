"""`cfg`: the denoising loop with classifier-free guidance — Ho & Salimans (2022), "Classifier-Free Diffusion
Guidance" — and img2img — Meng et al. (2022), "SDEdit".

pred = u + g·(c − u), both halves in one batched denoiser call; optional guidance rescale (Lin et al. 2024,
"Common Diffusion Noise Schedules and Sample Steps are Flawed", §3.4). Given init latents, the run starts
`strength` of the way into the schedule from x_t = a_t·x0 + s_t·ε. `img2img` is the same sampler under its
old name, for registries that use it.
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field

from core import ComponentSpec, Denoiser, InputError, StepEvent, hookimpl
from core.conditioning import guidance_batch
from core.interfaces import SamplerInputs, should_stop
from core.schedules import img2img_timesteps


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    strength: float = Field(0.8, gt=0.0, le=1.0, description="img2img strength when a run gives none")
    guidance_rescale: float = Field(
        0.0, ge=0.0, le=1.0, description="φ of Lin et al.: blend towards the rescaled guided prediction (0: off)"
    )


def guided_prediction(
    denoiser: Denoiser, x: torch.Tensor, t: torch.Tensor, run: SamplerInputs, rescale: float
) -> torch.Tensor:
    """The guided prediction for the denoiser input `x` (B, C, h, w); one unguided call when there is no
    unconditional context or g = 1. Both halves of a guided call carry their own added inputs."""
    if run.uncond_context is None or run.guidance_scale == 1.0:
        return denoiser(x, t, run.context, **run.added)
    context = torch.cat([run.uncond_context, run.context])
    added = guidance_batch(run.added, run.uncond_added)
    uncond, cond = denoiser(torch.cat([x, x]), t, context, **added).chunk(2)
    guided = uncond + run.guidance_scale * (cond - uncond)
    if rescale > 0.0:
        dims = list(range(1, guided.ndim))
        rescaled = guided * (cond.std(dim=dims, keepdim=True) / guided.std(dim=dims, keepdim=True))
        guided = rescale * rescaled + (1.0 - rescale) * guided
    return guided


class GuidedSampler:
    """txt2img from pure noise, or img2img from init latents (`strength`, default `config.strength`)."""

    def __init__(self, config: Config) -> None:
        self.config = config

    def __call__(self, run: SamplerInputs) -> torch.Tensor:
        scheduler, noise = run.scheduler, run.noise
        if run.init_latents is None and run.strength not in (None, 1.0):
            raise InputError(f"strength {run.strength} needs init latents (an init image)", hint="pass an image")
        strength = self.config.strength if run.strength is None else run.strength
        timesteps = img2img_timesteps(scheduler, run.steps, 1.0 if run.init_latents is None else strength, noise.device)
        if run.init_latents is None:
            latents = noise * scheduler.init_noise_sigma
        else:
            latents = scheduler.add_noise(run.init_latents, noise, timesteps[:1].repeat(noise.shape[0]))
        for index, t in enumerate(timesteps):
            x = scheduler.scale_model_input(latents, t)
            prediction = guided_prediction(run.denoiser, x, t, run, self.config.guidance_rescale)
            output = scheduler.step(prediction, t, latents, generator=run.generator)
            latents = output.prev_sample
            if should_stop(run.callback, StepEvent(index, len(timesteps), t, latents, output.pred_original_sample)):
                break
        return latents


@hookimpl
def diffstack_components() -> list[ComponentSpec]:
    about = "classifier-free guidance (one batched call), img2img from an init image"
    return [
        ComponentSpec("sampler", "cfg", GuidedSampler, Config, description=about),
        ComponentSpec("sampler", "img2img", GuidedSampler, Config, description=f"the cfg sampler: {about}"),
    ]
