"""A model's training recipe: `recipe.yaml` beside its weights, read and validated by `load_recipe`.

A recipe is data — which plugins, at which size, trained how, on which data set — so a different model is a
different file, not different code. Its top level names the `dataset` plugin and one block per stage; each
stage's `train` block holds the `TrainConfig` values `diffstack train STAGE` starts from:

    dataset: NAME                       the data set plugin the stages train on (and `diffstack eval` scores with)
    vae:     {plugin, config, beta, train}            the autoencoder (an encoder plugin), β of its KL term
    decoder: {beta, train}                            the decoder fine-tune of the trained autoencoder
    clip:    {plugin, config, embed_dim, train}       the text tower (a text plugin), width of the shared space
    unet:    {plugin, config, schedule, caption_dropout, cached_images, train}   the denoiser; train sets ema_decay

The file is read within `core.bounded_yaml`'s limits; every problem — a malformed field, an unknown plugin, a
plugin config its Config refuses — is reported at once, in one ConfigError naming the file and the field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from core.bounded_yaml import read_bounded
from core.errors import ConfigError, PluginError
from core.plugin_manager import PluginManager
from core.schedules import ScheduleConfig
from core.training.loop import TrainConfig
from core.validation import describe_errors

RECIPE_FILE = "recipe.yaml"
"""The recipe's name in a model's folder, beside the weights the stages write."""
MAX_RECIPE_BYTES = 1 << 20
"""A recipe is a few KB; anything over 1 MiB is another file named by mistake."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StageRecipe(Strict):
    """What every stage has: its training hyper-parameters. `kind`: the kind of component the stage exports."""

    kind: ClassVar[str]
    train: TrainConfig


class PluginStage(StageRecipe):
    """A stage that builds a new component: the plugin (of the stage's `kind`) and its config."""

    plugin: str = Field(min_length=1)
    config: dict[str, Any] = Field(default_factory=dict)


class AutoencoderStage(PluginStage):
    kind: ClassVar[str] = "encoder"
    beta: float = Field(ge=0, description="weight of the KL term")


class DecoderStage(StageRecipe):
    kind: ClassVar[str] = "encoder"
    beta: float = Field(ge=0, description="weight of the KL term")


class TextStage(PluginStage):
    kind: ClassVar[str] = "text"
    embed_dim: int = Field(gt=0, description="width of the shared image–text space")


class DenoiserStage(PluginStage):
    kind: ClassVar[str] = "denoiser"
    schedule: ScheduleConfig
    caption_dropout: float = Field(ge=0, le=1, description="share of captions replaced by the empty caption")
    cached_images: int = Field(gt=0, description="training images whose latents and caption contexts are cached")

    @field_validator("train")
    @classmethod
    def _exports_ema(cls, train: TrainConfig) -> TrainConfig:
        if train.ema_decay is None:
            raise ValueError("set `ema_decay`: the unet stage exports the EMA weights")
        return train


class TrainingRecipe(Strict):
    """One model's recipe; its stage fields, in training order, are `STAGES`."""

    dataset: str = Field(min_length=1, description="the data set plugin the stages train on")
    vae: AutoencoderStage
    decoder: DecoderStage
    clip: TextStage
    unet: DenoiserStage

    def stage(self, name: str) -> StageRecipe:
        """The block of stage `name` (one of `STAGES`)."""
        if name not in STAGE_MODELS:
            raise KeyError(name)
        return getattr(self, name)


STAGE_MODELS: dict[str, type[StageRecipe]] = {
    name: field.annotation
    for name, field in TrainingRecipe.model_fields.items()
    if isinstance(field.annotation, type) and issubclass(field.annotation, StageRecipe)
}
"""stage name → the model of its block, in training order."""
STAGES: tuple[str, ...] = tuple(STAGE_MODELS)


def load_recipe(path: str | Path, *, plugin_manager: PluginManager | None = None) -> TrainingRecipe:
    """The recipe in `path`, validated: its fields, then each plugin name and config against the installed
    plugins (`plugin_manager`, default: the discovered one). ConfigError naming the file and every bad field."""
    file = Path(path)
    recipe = _validated(file, _read_yaml(file))
    manager = plugin_manager if plugin_manager is not None else PluginManager.discover()
    problems: list[str] = []
    _known(manager, "dataset", recipe.dataset, ("dataset",), problems)
    for name in STAGES:
        stage = recipe.stage(name)
        if isinstance(stage, PluginStage) and _known(manager, stage.kind, stage.plugin, (name, "plugin"), problems):
            config = manager.get(stage.kind, stage.plugin).spec.config
            try:
                config.model_validate(stage.config)
            except ValidationError as exc:
                problems.extend(describe_errors(exc, (name, "config"), config.model_fields))
    if problems:
        raise _invalid(file, problems, hint="fix the fields above: each `config` takes its plugin's Config fields")
    return recipe


def _known(manager: PluginManager, kind: str, name: str, where: tuple[str, ...], problems: list[str]) -> bool:
    """Whether plugin `kind/name` is installed; if not, a problem naming `where` joins `problems`."""
    try:
        manager.get(kind, name)
    except PluginError as exc:
        problems.append(f"{' -> '.join(where)}: {exc.message}" + (f" ({exc.hint})" if exc.hint else ""))
        return False
    return True


def _invalid(file: Path, problems: list[str], *, hint: str) -> ConfigError:
    count = len(problems)
    listed = "\n".join(f"  - {problem}" for problem in problems)
    return ConfigError(
        f"{file}: invalid training recipe, {count} problem{'s' if count > 1 else ''}:\n{listed}", hint=hint
    )


def _validated(file: Path, raw: Any) -> TrainingRecipe:
    try:
        return TrainingRecipe.model_validate(raw)
    except ValidationError as exc:
        problems = describe_errors(exc, fields=TrainingRecipe.model_fields)
    stages = ", ".join(STAGES)
    raise _invalid(
        file,
        problems,
        hint=f"a recipe has `dataset` and the stages {stages}; each `train` block takes the fields of "
        f"core.training.loop.TrainConfig ({', '.join(TrainConfig.model_fields)})",
    )


def _read_yaml(file: Path) -> dict[str, Any]:
    """The top-level mapping of recipe `file`, parsed within `core.bounded_yaml`'s limits."""
    return read_bounded(
        file, what="a training recipe", keys=f"`dataset` and the stages {', '.join(STAGES)}", error=ConfigError,
        max_bytes=MAX_RECIPE_BYTES,
        hint=f"pass --recipe FILE, or put the model's {RECIPE_FILE} in its folder (--model-dir)",
    )  # fmt: skip
