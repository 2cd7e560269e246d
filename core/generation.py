"""One generation call: the settings it resolved (`Settings`, validated once, here) and what it made
(`Generation`). The CLI writes a PNG's recipe from `Generation.settings`, never by asking the pipeline again."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import torch
from PIL import Image

from core.errors import InputError
from core.images import to_pil
from core.registry_schema import PipelineLimits
from core.schedules import check_num_steps, check_strength

MAX_SEED = 2**64 - 1
FALLBACK_STRENGTH = 0.8
"""img2img strength when neither the call, the pipeline's defaults nor its sampler's config give one."""


@dataclass(frozen=True)
class Settings:
    """Every setting of one call, resolved (call → the pipeline's registry defaults → diffstack's fallbacks)
    and validated.

    Image j (counting across prompts, prompt-major) is drawn from seed + j, or from `image_seeds[j]` when the
    call gave one seed per image (then `seed` is the first of them). `strength` is the img2img
    strength, None for a txt2img run. `scheduler` is the plugin name of the update rule that ran,
    `scheduler_config` its config.
    """

    pipeline: str
    prompts: list[str]
    negative_prompts: list[str]
    seed: int
    num_images: int
    steps: int
    guidance_scale: float
    height: int
    width: int
    strength: float | None
    scheduler: str
    scheduler_config: dict[str, Any] = field(default_factory=dict)
    image_seeds: tuple[int, ...] | None = None

    @property
    def seeds(self) -> list[int]:
        """The seed of each image, prompt-major: `image_seeds`, else seed, seed + 1, …"""
        if self.image_seeds is not None:
            return list(self.image_seeds)
        return list(range(self.seed, self.seed + len(self.prompts) * self.num_images))


@dataclass(frozen=True)
class Generation:
    """What a pipeline call made: `pixels` (N, 3, H, W) float in [-1, 1], N = prompts × num_images,
    prompt-major; `settings`, what ran; `seconds`, wall time per phase (text, sample, decode)."""

    pixels: torch.Tensor
    settings: Settings
    seconds: dict[str, float]

    @cached_property
    def images(self) -> list[Image.Image]:
        """The pixels as N RGB images (8 bits, rounded)."""
        return to_pil(self.pixels)


def prompt_list(value: str | list[str], name: str) -> list[str]:
    """One prompt or a non-empty list of prompts as a list, else an InputError naming `name`."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not items or not all(isinstance(p, str) for p in items):
        raise InputError(f"{name} must be a string or a non-empty list of strings, got {value!r}"[:300])
    return list(items)


def check_settings(
    settings: Settings, downsample_factor: int, num_train_timesteps: int, limits: PipelineLimits | None = None
) -> Settings:
    """`settings` unchanged, or an InputError naming the first bad field and its fix. Each field has one check:
    sizes against the encoder's `downsample_factor`, steps against the scheduler's `num_train_timesteps`, the
    image count and size against the pipeline's `limits` (default `PipelineLimits()`)."""
    s = settings
    if len(s.negative_prompts) != len(s.prompts):
        raise InputError(
            f"{len(s.prompts)} prompts but {len(s.negative_prompts)} negative prompts",
            hint="give one negative prompt, or one per prompt",
        )
    if isinstance(s.num_images, bool) or not isinstance(s.num_images, int) or s.num_images < 1:
        raise InputError(f"num_images must be a positive integer, got {s.num_images!r}")
    check_num_steps(s.steps, num_train_timesteps)
    guidance = s.guidance_scale
    if isinstance(guidance, bool) or not isinstance(guidance, (int, float)) or not 0 <= guidance < math.inf:
        raise InputError(f"guidance_scale must be ≥ 0, got {guidance}", hint="1 disables guidance; 5–8 is usual")
    count = len(s.prompts) * s.num_images
    if s.image_seeds is not None:
        if len(s.image_seeds) != count or not all(_is_seed(seed) for seed in s.image_seeds):
            raise InputError(
                f"a list of seeds needs one integer in [0, 2⁶⁴ - 1] per image ({count}), got {list(s.image_seeds)!r}"[
                    :300
                ],
                hint="give one seed (image i then uses seed + i), or exactly one per image",
            )
    elif not _is_seed(s.seed) or s.seed + count - 1 > MAX_SEED:
        raise InputError(f"seed must be an integer in [0, 2⁶⁴ - 1] for every image (seed + i), got {s.seed!r}")
    for name in ("height", "width"):
        check_size(name, getattr(s, name), downsample_factor)
    check_limits(s, limits or PipelineLimits())
    if s.strength is not None:
        check_strength(s.strength)
    return settings


def _is_seed(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_SEED


def check_limits(settings: Settings, limits: PipelineLimits) -> None:
    """An InputError when the call asks for more images, or larger ones, than the pipeline's `limits` allow."""
    count, pixels = len(settings.prompts) * settings.num_images, settings.height * settings.width
    if count > limits.max_images:
        raise InputError(
            f"{count} images in one call is over this pipeline's limit of {limits.max_images}",
            hint="generate in several calls, or raise `limits: {max_images: …}` in the registry (--max-images)",
        )
    if pixels > limits.max_pixels:
        raise InputError(
            f"{settings.width}×{settings.height} = {pixels} pixels per image is over this pipeline's limit of "
            f"{limits.max_pixels}",
            hint="ask for a smaller image, or raise `limits: {max_pixels: …}` in the registry (--max-pixels)",
        )


def check_size(name: str, value: Any, factor: int) -> None:
    """An InputError unless `value` is a positive multiple of the encoder's downsample factor."""
    if isinstance(value, bool) or not isinstance(value, int) or value < factor or value % factor:
        lower = max(factor, (int(value) // factor) * factor) if isinstance(value, (int, float)) else factor
        raise InputError(
            f"{name} {value!r} is not a positive multiple of {factor} (the encoder's downsample factor)",
            hint=f"use {lower} or {lower + factor}",
        )
