"""The denoising loop with classifier-free guidance, shared by the built-in samplers.

Ho & Salimans (2022), "Classifier-Free Diffusion Guidance": pred = u + g·(c − u), with the conditional
and unconditional halves in one batched denoiser call. Optional guidance rescale from Lin et al. (2024),
"Common Diffusion Noise Schedules and Sample Steps are Flawed", §3.4.
"""
from __future__ import annotations

import torch
from pydantic import BaseModel

from core.errors import InputError
from core.interfaces import Denoiser, Generators, Scheduler, StepCallback, StepEvent


def guided_prediction(
    denoiser: Denoiser,
    model_input: torch.Tensor,
    timestep: torch.Tensor,
    context: torch.Tensor,
    uncond_context: torch.Tensor | None,
    guidance_scale: float,
    guidance_rescale: float = 0.0,
) -> torch.Tensor:
    """The guided prediction for `model_input` (B, C, h, w); the unconditional half is skipped at g = 1."""
    if uncond_context is None or guidance_scale == 1.0:
        return denoiser(model_input, timestep, context)
    both = denoiser(torch.cat([model_input, model_input]), timestep, torch.cat([uncond_context, context]))
    uncond, cond = both.chunk(2)  # each (B, C, h, w)
    guided = uncond + guidance_scale * (cond - uncond)
    if guidance_rescale > 0.0:
        dims = list(range(1, guided.ndim))
        rescaled = guided * (cond.std(dim=dims, keepdim=True) / guided.std(dim=dims, keepdim=True))
        guided = guidance_rescale * rescaled + (1.0 - guidance_rescale) * guided
    return guided


def denoise(
    denoiser: Denoiser,
    scheduler: Scheduler,
    noise: torch.Tensor,
    context: torch.Tensor,
    uncond_context: torch.Tensor | None = None,
    *,
    steps: int,
    guidance_scale: float = 1.0,
    guidance_rescale: float = 0.0,
    init_latents: torch.Tensor | None = None,
    strength: float = 1.0,
    generator: Generators = None,
    callback: StepCallback | None = None,
) -> torch.Tensor:
    """Run the scheduler's timesteps from `noise` (B, C, h, w), or from `init_latents` noised to the first
    timestep of a `strength` run (img2img). Returns the final latents (B, C, h, w)."""
    if init_latents is None and strength != 1.0:
        raise InputError(f"strength {strength} needs init latents (an init image)", hint="pass an image, or strength 1")
    if init_latents is not None and init_latents.shape != noise.shape:
        raise InputError(f"init latents {tuple(init_latents.shape)} and noise {tuple(noise.shape)} differ in shape")
    scheduler.set_timesteps(steps, device=noise.device, strength=strength)
    timesteps = scheduler.timesteps
    if init_latents is None:
        latents = noise * scheduler.init_noise_sigma
    else:
        latents = scheduler.add_noise(init_latents, noise, timesteps[:1].repeat(noise.shape[0]))
    for index, t in enumerate(timesteps):
        model_input = scheduler.scale_model_input(latents, t)
        prediction = guided_prediction(denoiser, model_input, t, context, uncond_context, guidance_scale, guidance_rescale)
        output = scheduler.step(prediction, t, latents, generator=generator)
        latents = output.prev_sample
        if callback is not None:
            event = StepEvent(index, len(timesteps), t, latents, output.pred_original_sample)
            callback(event)
            if event.stop_requested:
                break
    return latents


class GuidedSampler:
    """A `core.Sampler` running `denoise`; its config has a `guidance_rescale` field.

    Subclasses set `default_strength`, the img2img strength used when init latents come without one.
    """

    default_strength: float = 1.0

    def __init__(self, config: BaseModel) -> None:
        self.config = config

    def __call__(
        self,
        denoiser: Denoiser,
        scheduler: Scheduler,
        noise: torch.Tensor,
        context: torch.Tensor,
        uncond_context: torch.Tensor | None = None,
        *,
        steps: int,
        guidance_scale: float = 1.0,
        init_latents: torch.Tensor | None = None,
        strength: float | None = None,
        generator: Generators = None,
        callback: StepCallback | None = None,
    ) -> torch.Tensor:
        if strength is None:
            strength = self.default_strength if init_latents is not None else 1.0
        return denoise(
            denoiser, scheduler, noise, context, uncond_context,
            steps=steps, guidance_scale=guidance_scale, guidance_rescale=self.config.guidance_rescale,
            init_latents=init_latents, strength=strength, generator=generator, callback=callback,
        )
