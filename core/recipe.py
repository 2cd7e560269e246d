"""`Recipe`: what a diffstack PNG records of the run that made it, read back by `diffstack generate --from-png`.

A PNG is untrusted input, so its recipe is validated here (types, ranges, known fields only) before anything
runs; the pipeline then checks it like any call (sizes, limits). A recipe names a pipeline of the registry in
use, never a file to load.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from core.errors import InputError
from core.generation import MAX_SEED, Settings
from core.validation import describe_errors
from core.version import __version__

MAX_PROMPT_CHARS = 10_000


class Recipe(BaseModel):
    """One image's recipe (or a contact sheet's, `grid`); `batch_*` say which image of which call it was."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    prompt: str = Field(max_length=MAX_PROMPT_CHARS)
    negative_prompt: str = Field(max_length=MAX_PROMPT_CHARS)
    seed: int = Field(ge=0, le=MAX_SEED)
    steps: int = Field(gt=0)
    guidance_scale: float = Field(ge=0.0, allow_inf_nan=False)
    height: int = Field(gt=0)
    width: int = Field(gt=0)
    scheduler: str = Field(min_length=1, max_length=200)
    scheduler_config: dict[str, Any] = Field(default_factory=dict)
    pipeline: str = Field(min_length=1, max_length=200)
    num_images: int = Field(gt=0)
    strength: float | None = Field(None, gt=0.0, le=1.0)
    diffstack_version: str = Field("", max_length=100)
    registry: str = Field("", max_length=4096, description="the registry file of the run: shown in hints, never loaded")
    batch_seed: int | None = Field(None, ge=0, le=MAX_SEED)
    batch_size: int | None = Field(None, gt=0)
    batch_index: int | None = Field(None, ge=0)
    grid: bool = False

    @model_validator(mode="after")
    def _batch_is_consistent(self) -> Recipe:
        if (self.batch_index is None) != (self.batch_size is None):
            raise ValueError("batch_index and batch_size come together")
        if self.batch_index is not None and self.batch_size is not None and self.batch_index >= self.batch_size:
            raise ValueError(f"batch_index {self.batch_index} is not below batch_size {self.batch_size}")
        first = self.seed if self.batch_seed is None else self.batch_seed
        if first + max(self.num_images, self.batch_size or 1) - 1 > MAX_SEED:
            raise ValueError("the batch's seeds run past 2⁶⁴ - 1")
        return self


def parse_recipe(data: dict[str, Any], where: str) -> Recipe:
    """`data` as a Recipe, or an InputError listing every bad field of the recipe in `where`."""
    try:
        return Recipe.model_validate(data)
    except ValidationError as exc:
        problems = describe_errors(exc)
        raise InputError(
            f"{where}: the recipe is not valid:\n" + "\n".join(f"  - {p}" for p in problems[:10]),
            hint="use a PNG written by `diffstack generate`, unchanged",
        ) from None


def recipe_of(settings: Settings) -> dict[str, Any]:
    """The PNG recipe of a one-prompt run: what ran (`settings`), under the recipe's field names."""
    return {
        "prompt": settings.prompts[0],
        "negative_prompt": settings.negative_prompts[0],
        "seed": settings.seed,
        "steps": settings.steps,
        "guidance_scale": settings.guidance_scale,
        "height": settings.height,
        "width": settings.width,
        "scheduler": settings.scheduler,
        "scheduler_config": settings.scheduler_config,
        "pipeline": settings.pipeline,
        "num_images": settings.num_images,
        "strength": settings.strength,
        "diffstack_version": __version__,
    }
