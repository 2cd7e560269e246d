"""The registry file's envelope: pydantic models for the first validation pass (docs/architecture.md).

Plugin configs are kept as plain dicts here; the second pass validates each against its plugin's Config.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator

from core.interfaces import Kind
from core.performance import Performance

WeightsFormat = Literal["auto", "native", "diffusers", "single-file"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WeightsRef(Strict):
    """A checkpoint: a `.safetensors` file or a diffusers folder. `${VAR}` expands when the part is built.
    `format: sd1-single-file`, the name `single-file` had while SD 1.x files were the only ones read, still
    reads as `single-file`."""

    path: str = Field(min_length=1)
    format: WeightsFormat = "auto"

    @field_validator("format", mode="before")
    @classmethod
    def _former_name(cls, value: Any) -> Any:
        return "single-file" if value == "sd1-single-file" else value


def _weights_shorthand(value: Any) -> Any:
    return {"path": value} if isinstance(value, str) else value


class InlineComponent(Strict):
    """A component block: which plugin, its config, and optional weights (path string or {path, format})."""

    plugin: str = Field(min_length=1)
    config: dict[str, Any] = Field(default_factory=dict)
    weights: WeightsRef | None = None

    _weights = field_validator("weights", mode="before")(_weights_shorthand)


class ComponentDecl(InlineComponent):
    """An entry under `components:` — an inline block that also states its kind."""

    kind: Kind


class PipelineDefaults(Strict):
    """Per-pipeline defaults for generation calls."""

    height: int | None = Field(None, gt=0)
    width: int | None = Field(None, gt=0)
    steps: int | None = Field(None, gt=0)
    guidance_scale: float | None = Field(None, ge=0.0)
    negative_prompt: str | None = None
    strength: float | None = Field(None, gt=0.0, le=1.0, description="img2img strength when a call gives none")


class PipelineLimits(Strict):
    """Per-pipeline bounds on the work one call may ask for, checked with the other settings before anything
    is allocated (`core.generation.check_settings`)."""

    max_pixels: int = Field(2048 * 2048, gt=0, description="height × width of one image, at most")
    max_images: int = Field(64, gt=0, description="images per call (prompts × num_images), at most")


REF_TAGS = ("component-name", "inline-block")
ComponentRef = Annotated[
    Annotated[str, Tag(REF_TAGS[0])] | Annotated[InlineComponent, Tag(REF_TAGS[1])],
    Discriminator(lambda v: REF_TAGS[0] if isinstance(v, str) else REF_TAGS[1]),
]


class PipelineDecl(Strict):
    """An entry under `pipelines:`. Each slot is a component name or an inline block.

    `weights` (a diffusers folder or a single-file checkpoint) fills every model part that has none;
    `performance` opts into the fast path (`core.performance`); `fewest_steps` maps scheduler names to the
    fewest steps at which they draw the prompt on this model (`diffstack eval schedulers` suggests it): a call
    with fewer gets a one-line warning before it runs.
    """

    weights: WeightsRef | None = None
    encoder: ComponentRef
    denoiser: ComponentRef
    text: ComponentRef
    scheduler: ComponentRef
    sampler: ComponentRef
    defaults: PipelineDefaults = Field(default_factory=PipelineDefaults)
    limits: PipelineLimits = Field(default_factory=PipelineLimits)
    performance: Performance = Field(default_factory=Performance)
    fewest_steps: dict[str, Annotated[int, Field(gt=0)]] = Field(default_factory=dict)

    _weights = field_validator("weights", mode="before")(_weights_shorthand)


class RegistryEnvelope(Strict):
    """The top level. Components and pipelines are validated one by one, so every problem is reported."""

    version: Literal[1]
    extends: str | None = Field(
        None, description="`bundled`, or a registry file (relative to this one) whose entries this file inherits"
    )
    plugins: list[str] = Field(default_factory=list)
    components: dict[str, Any] = Field(default_factory=dict)
    pipelines: dict[str, Any] = Field(default_factory=dict)
    default_pipeline: str | None = None
