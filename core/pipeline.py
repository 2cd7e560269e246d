"""`Pipeline`: the five parts of a text-to-image pipeline on one device, and the generation call.

A call resolves and validates its settings once (`Pipeline.settings` → `core.generation.Settings`), then runs
them (`Pipeline.run`): embed prompt and negative prompt, draw seeded latents, let the sampler run the
scheduler's timesteps with classifier-free guidance, decode with the encoder. It returns a `Generation`:
the pixels, the settings that ran and how long each phase took.
"""

from __future__ import annotations

import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image
from pydantic import BaseModel
from tqdm.auto import tqdm

from core.conditioning import added_for, as_conditioning, missing_inputs
from core.containment import CallbackFailed, attributed, contained, is_plugin_failure
from core.errors import DiffstackError, FewStepsWarning, InputError, RegistryError, SwapWarning
from core.generation import FALLBACK_STRENGTH, Generation, Settings, check_settings, prompt_list
from core.images import from_pil
from core.interfaces import (
    Conditioning,
    Denoiser,
    Encoder,
    Sampler,
    SamplerInputs,
    Scheduler,
    StepCallback,
    StepEvent,
    TextConditioner,
)
from core.plugin_manager import PluginManager
from core.registry_schema import PipelineDefaults, PipelineLimits
from core.scheduler_swap import carried_config
from core.validation import validate_config

FALLBACK_DEFAULTS = PipelineDefaults(steps=50, guidance_scale=7.5, negative_prompt="")
"""diffstack's own fallbacks when neither the call nor the registry's `defaults` set a value; the image size
instead comes from the model (`Pipeline._native_size`)."""

InitImage = Image.Image | list[Image.Image]


@dataclass
class Pipeline:
    """A built pipeline. `device`/`dtype` are where its model parts live; `defaults`, `limits` and
    `fewest_steps` (scheduler → the fewest steps it draws the prompt at here) come from the registry;
    `plugins` names the plugin of each part by kind (`{"scheduler": "ddim", …}`).

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
    plugins: dict[str, str]
    limits: PipelineLimits = field(default_factory=PipelineLimits)
    fewest_steps: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_parts_fit(self.name, self.encoder, self.denoiser, self.text, self.scheduler)

    def __call__(
        self,
        prompt: str | list[str],
        *,
        seed: int | Sequence[int] = 0,
        steps: int | None = None,
        guidance_scale: float | None = None,
        negative_prompt: str | list[str] | None = None,
        num_images: int = 1,
        height: int | None = None,
        width: int | None = None,
        scheduler: str | None = None,
        image: InitImage | None = None,
        strength: float | None = None,
        callback: StepCallback | None = None,
        progress: bool | None = None,
    ) -> Generation:
        """Generate `num_images` images per prompt → a `Generation` (`.images`, `.pixels`, `.settings`).

        Image j (counting across prompts) starts from the noise of seed + j, or of seed[j] when `seed` is a list
        of one seed per image. Unset settings come from the
        pipeline's defaults. `scheduler` swaps the update rule by plugin name, carrying the settings the
        pipeline declares for its scheduler (`core.scheduler_swap`).
        `image` (one, or one per prompt) runs img2img with `strength` (default: the pipeline's, else its
        sampler's, else 0.8). `callback` and the `diffstack_step_end` hook get a StepEvent per step; either
        may stop the run early. `progress`: a tqdm bar (default: on a TTY).
        """
        settings = self.settings(
            prompt, seed=seed, steps=steps, guidance_scale=guidance_scale, negative_prompt=negative_prompt,
            num_images=num_images, height=height, width=width, scheduler=scheduler, image=image, strength=strength,
        )  # fmt: skip
        return self.run(settings, image=image, callback=callback, progress=progress)

    def settings(
        self, prompt: str | list[str], *, image: InitImage | None = None, scheduler: str | None = None, **given: Any
    ) -> Settings:
        """The validated `Settings` of a call with these arguments (the keyword arguments of `__call__`)."""
        images = [] if image is None else image if isinstance(image, list) else [image]
        if not all(isinstance(i, Image.Image) for i in images) or image == []:
            raise InputError(f"image must be a PIL image or a non-empty list of them, got {type(image).__name__}",
                             hint="open the file with PIL.Image.open(path).convert('RGB')")  # fmt: skip
        if images:
            size = {"height": images[0].height, "width": images[0].width}  # unless the call sets them
            given = size | {key: value for key, value in given.items() if value is not None}
        elif given.get("strength") not in (None, 1.0):
            raise InputError(f"strength {given['strength']} applies to an init image, and none was given",
                             hint="pass image= (--image on the command line), or leave strength unset")  # fmt: skip
        resolved = {
            field: self._default(field, given.get(field)) for field in ("steps", "guidance_scale", "height", "width")
        }
        prompts = prompt_list(prompt, "prompt")
        negatives = prompt_list(self._default("negative_prompt", given.get("negative_prompt")), "negative_prompt")
        negatives = negatives * len(prompts) if len(negatives) == 1 else negatives
        scheduler_config = self._scheduler_config(scheduler)
        seed = given.get("seed", 0)
        image_seeds = tuple(seed) if isinstance(seed, (list, tuple)) else None
        settings = Settings(
            pipeline=self.name, prompts=prompts, negative_prompts=negatives,
            seed=image_seeds[0] if image_seeds else seed, num_images=given.get("num_images", 1), **resolved,
            strength=self._strength(given.get("strength")) if images else None,
            scheduler=scheduler or self.plugins["scheduler"], scheduler_config=scheduler_config.model_dump(mode="json"),
            image_seeds=image_seeds,
        )  # fmt: skip
        train_timesteps = scheduler_config.num_train_timesteps  # type: ignore[attr-defined]  # every Scheduler config has it
        checked = check_settings(settings, self.encoder.downsample_factor, train_timesteps, self.limits)
        fewest = self.fewest_steps.get(checked.scheduler, 0)
        if checked.steps < fewest:
            warnings.warn(
                f"{checked.scheduler} at {checked.steps} step{'s' * (checked.steps != 1)}: on pipeline {self.name!r} "
                f"it draws the prompt from {fewest} steps (the registry's fewest_steps); use {fewest} or more steps, "
                "or another scheduler",
                FewStepsWarning,
                stacklevel=3,
            )
        return checked

    def run(
        self,
        settings: Settings,
        *,
        image: InitImage | None = None,
        callback: StepCallback | None = None,
        progress: bool | None = None,
    ) -> Generation:
        """Generate with `settings` as `settings()` resolved and validated them; `image` for img2img.

        An exception from a part that is not a DiffstackError becomes a `PluginError` naming that part's plugin
        (`core.containment.attributed`); one from `callback` propagates as it is.
        """
        with contained(f"scheduler plugin {settings.scheduler!r} of pipeline {self.name!r}, building it,"):
            scheduler = self._scheduler_for(settings)
        try:
            return self._generate(settings, scheduler, image, callback, progress)
        except CallbackFailed as failed:
            raise failed.error from None
        except BaseException as exc:
            if not is_plugin_failure(exc):
                raise
            parts = {kind: (self.plugins[kind], getattr(self, kind)) for kind in ("encoder", "denoiser", "text")}
            parts |= {"scheduler": (settings.scheduler, scheduler), "sampler": (self.plugins["sampler"], self.sampler)}
            raise attributed(exc, self.name, parts) from exc

    def _generate(
        self,
        settings: Settings,
        scheduler: Scheduler,
        image: InitImage | None,
        callback: StepCallback | None,
        progress: bool | None,
    ) -> Generation:
        generators = [torch.Generator("cpu").manual_seed(seed) for seed in settings.seeds]
        seconds, began = {}, time.perf_counter()
        with torch.inference_mode():
            embeddings, uncond = self._embed(settings)
            seconds["text"] = time.perf_counter() - began
            init_latents = None if image is None else self._encode(image, settings, generators)
            factor = self.encoder.downsample_factor
            shape = (1, self.encoder.latent_channels, settings.height // factor, settings.width // factor)
            noise = torch.cat([torch.randn(shape, generator=g) for g in generators])  # (N, C, h, w)
            show = sys.stderr.isatty() if progress is None else progress
            size = (settings.height, settings.width)
            added = added_for(self.denoiser, embeddings, *size)
            uncond_added = {} if uncond is None else added_for(self.denoiser, uncond, *size)
            with tqdm(total=None, desc=self.name, disable=not show) as bar:
                latents = self.sampler(SamplerInputs(
                    self.denoiser, scheduler, noise.to(self.device, self.dtype),
                    embeddings.context, None if uncond is None else uncond.context,
                    steps=settings.steps, guidance_scale=settings.guidance_scale,
                    init_latents=init_latents, strength=settings.strength, generator=generators,
                    callback=self._step_callback(callback, bar), added=added, uncond_added=uncond_added,
                ))  # fmt: skip
            seconds["sample"] = time.perf_counter() - began - seconds["text"]
            pixels = self.encoder.decode(latents)  # (N, 3, H, W) in [-1, 1]
            seconds["decode"] = time.perf_counter() - began - seconds["text"] - seconds["sample"]
        if not bool(torch.isfinite(pixels).all()):
            raise DiffstackError(
                f"pipeline {self.name!r}: the decoded images contain NaN or infinity",
                hint="fp16 VAE decodes overflow on some checkpoints: keep the encoder in fp32 "
                "(vae-kl's `force_upcast`) "
                "or run with --dtype float32",
            )
        return Generation(pixels, settings, seconds)

    def _default(self, field: str, value: Any = None) -> Any:
        """`value` if given, else the registry's default for `field`, else the model's own size (height, width)
        or diffstack's fallback (`FALLBACK_DEFAULTS`)."""
        if value is not None:
            return value
        configured = getattr(self.defaults, field)
        if configured is not None:
            return configured
        return self._native_size(field) if field in ("height", "width") else getattr(FALLBACK_DEFAULTS, field)

    def _native_size(self, field: str) -> int:
        """The image side the model was trained at: its denoiser's optional `sample_size` (latent side) times the
        encoder's downsample factor; an InputError when the denoiser states none."""
        sample_size = getattr(self.denoiser, "sample_size", None)
        if isinstance(sample_size, bool) or not isinstance(sample_size, int) or sample_size < 1:
            raise InputError(
                f"pipeline {self.name!r} sets no default {field} and its denoiser states no sample_size",
                hint=f"pass {field}= (--{field}), or set `defaults: {{{field}: …}}` in the registry",
            )
        return sample_size * self.encoder.downsample_factor

    def _strength(self, strength: float | None) -> float:
        """img2img strength: the call's, else the pipeline's default, else its sampler's config, else 0.8."""
        for value in (
            strength,
            self.defaults.strength,
            getattr(getattr(self.sampler, "config", None), "strength", None),
        ):
            if value is not None:
                return value
        return FALLBACK_STRENGTH

    def _embed(self, settings: Settings) -> tuple[Conditioning, Conditioning | None]:
        """The prompts' and negative prompts' embeddings (None at guidance 1), each context (N, L, D) and added
        tensors (N, …), N = prompts × num_images."""

        def embed(prompts: list[str]) -> Conditioning:
            found = as_conditioning(self.text(prompts))
            added = {name: v.repeat_interleave(settings.num_images, dim=0) for name, v in found.added.items()}
            return Conditioning(found.context.repeat_interleave(settings.num_images, dim=0), added)

        if settings.guidance_scale == 1.0:
            return embed(settings.prompts), None
        return embed(settings.prompts), embed(settings.negative_prompts)

    def _scheduler_config(self, name: str | None) -> BaseModel:
        """The config a call's scheduler runs with: ours (also when `name` is our own rule), or plugin `name`'s
        Config carrying the settings our config declares (`core.scheduler_swap`; a dropped one is warned about)."""
        spec = None if name is None else self.plugin_manager.get("scheduler", name).spec
        if spec is None or (isinstance(spec.factory, type) and isinstance(self.scheduler, spec.factory)):
            return self.scheduler.config
        declared = self.scheduler.config.model_dump(mode="json", exclude_unset=True)
        config, note = carried_config(spec.config, declared, rule=spec.name)
        if note is not None:
            warnings.warn(note, SwapWarning, stacklevel=4)
        return config

    def _scheduler_for(self, settings: Settings) -> Scheduler:
        """A private scheduler for a run of `settings`: plugin `settings.scheduler` with `scheduler_config`; a
        fresh copy of ours when that is what they name."""
        ours = self.scheduler.config.model_dump(mode="json")
        if settings.scheduler == self.plugins["scheduler"] and ours == settings.scheduler_config:
            return type(self.scheduler)(self.scheduler.config)  # type: ignore[call-arg]
        spec = self.plugin_manager.get("scheduler", settings.scheduler).spec
        config = validate_config(spec.config, settings.scheduler_config, where=f"scheduler {settings.scheduler!r}")
        return spec.build(config)

    def _encode(self, image: InitImage, settings: Settings, generators: list[torch.Generator]) -> torch.Tensor:
        """The init image(s) as latents (N, C, h, w), each sampled from the posterior with its image's generator."""
        prompts = len(settings.prompts)
        images = image if isinstance(image, list) else [image] * prompts
        if len(images) != prompts:
            raise InputError(
                f"{len(images)} init images for {prompts} prompts", hint="give one image, or one per prompt"
            )
        pixels = from_pil(images).repeat_interleave(settings.num_images, dim=0).to(self.device, self.dtype)
        if pixels.shape[-2:] != (settings.height, settings.width):
            raise InputError(
                f"init image is {pixels.shape[-1]}×{pixels.shape[-2]} "
                f"but the run is {settings.width}×{settings.height}",
                hint="resize the image, or leave height and width unset to use its size",
            )
        return torch.cat([self.encoder.encode(pixels[j : j + 1], generator=g) for j, g in enumerate(generators)])

    def _step_callback(self, callback: StepCallback | None, bar: tqdm) -> StepCallback:
        def on_step(event: StepEvent) -> None:
            if bar.total is None:
                bar.total = event.num_steps
            bar.update(1)
            for _ in self.plugin_manager.call_each("diffstack_step_end", event=event):
                pass  # a hook that raises stops the run with a PluginError naming it
            if callback is not None:
                try:
                    callback(event)
                except Exception as exc:
                    raise CallbackFailed(exc) from exc

        return on_step


def check_parts_fit(
    name: str, encoder: Encoder, denoiser: Denoiser, text: TextConditioner, scheduler: Scheduler
) -> None:
    """Raise RegistryError when the denoiser does not fit the encoder's latents, the text embeddings and added
    inputs (`core.conditioning`), or the scheduler reads its predictions as another `prediction_type`."""
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
    problems += missing_inputs(denoiser, text)
    predicts = getattr(denoiser, "prediction_type", None)
    read_as = getattr(scheduler.config, "prediction_type", predicts)
    if predicts is not None and read_as != predicts:
        problems.append(f"the denoiser predicts {predicts!r} but the scheduler's prediction_type is {read_as!r}")
    if problems:
        raise RegistryError(
            f"pipeline {name!r}: its parts do not fit together",
            problems,
            hint="use parts of one model family, or change their configs so that the sizes, added inputs and "
            "prediction types named above agree",
        )
