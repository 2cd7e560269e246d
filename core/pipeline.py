"""`Pipeline`: the five parts of a text-to-image pipeline on one device, and the generation call.

The call is "Stable Diffusion in 15 lines": embed prompt and negative prompt, draw seeded latents, let the
sampler run the scheduler's timesteps with classifier-free guidance, decode with the encoder.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, Literal

import torch
from PIL import Image
from tqdm.auto import tqdm

from core.errors import DiffstackError, InputError, RegistryError
from core.images import from_pil, to_pil
from core.interfaces import Denoiser, Encoder, Sampler, Scheduler, StepCallback, StepEvent, TextConditioner
from core.plugin_manager import PluginManager
from core.registry_schema import PipelineDefaults
from core.schedules import ScheduleConfig
from core.validation import validate_config

FALLBACK_DEFAULTS = PipelineDefaults(height=512, width=512, steps=50, guidance_scale=7.5, negative_prompt="")


@dataclass
class Pipeline:
    """A built pipeline. `device`/`dtype` are where its model parts live; `defaults` come from the registry.

    Calling it is thread-safe: each call works on its own copy of the scheduler.
    """

    name: str
    encoder: Encoder
    denoiser: Denoiser
    text: TextConditioner
    scheduler: Scheduler
    sampler: Sampler
    device: torch.device
    dtype: torch.dtype
    defaults: PipelineDefaults
    plugin_manager: PluginManager

    def __post_init__(self) -> None:
        check_parts_fit(self.name, self.encoder, self.denoiser, self.text)

    def __call__(
        self,
        prompt: str | list[str],
        *,
        seed: int = 0,
        steps: int | None = None,
        guidance_scale: float | None = None,
        negative_prompt: str | list[str] | None = None,
        num_images: int = 1,
        height: int | None = None,
        width: int | None = None,
        scheduler: str | None = None,
        image: Image.Image | list[Image.Image] | None = None,
        strength: float | None = None,
        callback: StepCallback | None = None,
        progress: bool | None = None,
        output_type: Literal["pil", "tensor"] = "pil",
    ) -> list[Image.Image] | torch.Tensor:
        """Generate `num_images` images per prompt → a list of PIL images, prompt-major.

        Image j (counting across prompts) uses seed + j, so image i of a batch equals a single run with
        seed + i. `scheduler` swaps the update rule by plugin name, keeping the noise schedule. `image`
        (one, or one per prompt) with `strength` runs img2img. `callback` and the `diffstack_step_end` hook
        get a StepEvent per step; either may stop the run early. `progress`: a tqdm bar (default: on a TTY).
        `output_type="tensor"` returns the decoded images as (N, 3, H, W) float in [-1, 1] instead.
        """
        prompts = _as_prompts(prompt, "prompt")
        negatives = _as_prompts(
            self.default("negative_prompt", negative_prompt) if negative_prompt is None else negative_prompt,
            "negative_prompt",
        )
        if len(negatives) == 1:
            negatives = negatives * len(prompts)
        if len(negatives) != len(prompts):
            raise InputError(
                f"{len(prompts)} prompts but {len(negatives)} negative prompts",
                hint="give one negative prompt, or one per prompt",
            )
        steps = self.default("steps", steps)
        guidance = self.default("guidance_scale", guidance_scale)
        height, width = self._size(height, width, image)
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise InputError(f"steps must be a positive integer, got {steps!r}")
        if guidance < 0:
            raise InputError(f"guidance_scale must be ≥ 0, got {guidance}", hint="1 disables guidance; 5–8 is usual")
        if isinstance(num_images, bool) or not isinstance(num_images, int) or num_images < 1:
            raise InputError(f"num_images must be a positive integer, got {num_images!r}")
        if strength is not None and not 0.0 < strength <= 1.0:
            raise InputError(f"strength must be in (0, 1], got {strength}")

        count = len(prompts) * num_images
        generators = [torch.Generator("cpu").manual_seed(seed + j) for j in range(count)]
        run_scheduler = self._fresh_scheduler(scheduler)
        factor = self.encoder.downsample_factor
        with torch.inference_mode():
            context = self.text(prompts).repeat_interleave(num_images, dim=0)  # (N, L, D)
            uncond = None if guidance == 1.0 else self.text(negatives).repeat_interleave(num_images, dim=0)
            init_latents = None if image is None else self._encode(image, (height, width), len(prompts), num_images, generators)
            latent_shape = (1, self.encoder.latent_channels, height // factor, width // factor)
            noise = torch.cat([torch.randn(latent_shape, generator=g) for g in generators])  # (N, C, h, w)
            bar = tqdm(total=None, desc=self.name, disable=not (sys.stderr.isatty() if progress is None else progress))
            latents = self.sampler(
                self.denoiser, run_scheduler, noise.to(self.device, self.dtype), context, uncond,
                steps=steps, guidance_scale=guidance, init_latents=init_latents, strength=strength,
                generator=generators, callback=self._step_callback(callback, bar),
            )
            bar.close()
            images = self.encoder.decode(latents)  # (N, 3, H, W) in [-1, 1]
        if not bool(torch.isfinite(images).all()):
            raise DiffstackError(
                f"pipeline {self.name!r}: the decoded images contain NaN or infinity",
                hint="fp16 VAE decodes overflow on some checkpoints: keep the encoder in fp32 (`upcast_vae`) "
                "or run with --dtype float32",
            )
        return images if output_type == "tensor" else to_pil(images)

    def default(self, field: str, value: Any = None) -> Any:
        """`value` if given, else the registry's default for `field`, else diffstack's fallback."""
        if value is not None:
            return value
        configured = getattr(self.defaults, field)
        return configured if configured is not None else getattr(FALLBACK_DEFAULTS, field)

    def _size(self, height: int | None, width: int | None, image: Any) -> tuple[int, int]:
        first = (image[0] if isinstance(image, list) else image) if image is not None else None
        if first is not None:
            height = first.height if height is None else height
            width = first.width if width is None else width
        factor = self.encoder.downsample_factor
        sizes = []
        for name, value in (("height", self.default("height", height)), ("width", self.default("width", width))):
            if isinstance(value, bool) or not isinstance(value, int) or value < factor or value % factor:
                lower = max(factor, (int(value) // factor) * factor) if isinstance(value, (int, float)) else factor
                raise InputError(
                    f"{name} {value!r} is not a positive multiple of {factor} (the encoder's downsample factor)",
                    hint=f"use {lower} or {lower + factor}",
                )
            sizes.append(value)
        return sizes[0], sizes[1]

    def _fresh_scheduler(self, name: str | None) -> Scheduler:
        """A private scheduler for one call: a copy of ours (also when `name` is our own rule), or plugin
        `name` on our noise schedule (the `core.schedules.ScheduleConfig` fields set in our config)."""
        spec = None if name is None else self.plugin_manager.get("scheduler", name).spec
        if spec is None or (isinstance(spec.factory, type) and isinstance(self.scheduler, spec.factory)):
            return type(self.scheduler)(self.scheduler.config)
        ours = self.scheduler.config.model_dump(exclude_unset=True)
        schedule = set(ScheduleConfig.model_fields) & set(spec.config.model_fields)
        shared = {key: value for key, value in ours.items() if key in schedule}
        return spec.build(validate_config(spec.config, shared, where=f"scheduler {name!r}"))

    def _encode(
        self,
        image: Image.Image | list[Image.Image],
        size: tuple[int, int],
        prompts: int,
        num_images: int,
        generators: list[torch.Generator],
    ) -> torch.Tensor:
        height, width = size
        images = image if isinstance(image, list) else [image] * prompts
        if len(images) != prompts:
            raise InputError(f"{len(images)} init images for {prompts} prompts", hint="give one image, or one per prompt")
        pixels = from_pil(images).repeat_interleave(num_images, dim=0).to(self.device, self.dtype)  # (N, 3, H, W)
        if pixels.shape[-2:] != (height, width):
            raise InputError(
                f"init image is {pixels.shape[-1]}×{pixels.shape[-2]} but the run is {width}×{height}",
                hint="resize the image, or leave height and width unset to use its size",
            )
        return torch.cat([
            self.encoder.encode(pixels[j : j + 1], generator=generators[j]) for j in range(len(generators))
        ])  # (N, C, h, w)

    def _step_callback(self, callback: StepCallback | None, bar: tqdm) -> StepCallback:
        def on_step(event: StepEvent) -> None:
            if bar.total is None:
                bar.total = event.num_steps
            bar.update(1)
            self.plugin_manager.hook.diffstack_step_end(event=event)
            if callback is not None:
                callback(event)

        return on_step


def _as_prompts(value: str | list[str], name: str) -> list[str]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not items or not all(isinstance(p, str) for p in items):
        raise InputError(f"{name} must be a string or a non-empty list of strings, got {value!r}")
    return list(items)


def check_parts_fit(name: str, encoder: Encoder, denoiser: Denoiser, text: TextConditioner) -> None:
    """Raise RegistryError when the denoiser does not fit the encoder's latents or the text embeddings."""
    problems = []
    if denoiser.in_channels != encoder.latent_channels:
        problems.append(
            f"denoiser takes {denoiser.in_channels} latent channels but the encoder makes {encoder.latent_channels}"
        )
    if denoiser.context_dim != text.embedding_dim:
        problems.append(
            f"denoiser cross-attends to {denoiser.context_dim}-wide context but the text conditioner makes "
            f"{text.embedding_dim}-wide embeddings"
        )
    if problems:
        raise RegistryError(
            f"pipeline {name!r}: its parts do not fit together",
            problems,
            hint="use parts of one architecture, or change `in_channels` / `cross_attention_dim` in the configs",
        )
