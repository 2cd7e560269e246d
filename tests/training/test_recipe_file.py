"""Training recipes (issue 14, "recipes live next to the model they train"): the shipped shapes-tiny recipe
is the one its weights were trained by, and a broken recipe is one clear error naming the file and the field."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import pytest
import yaml

import core
from core.cli.eval import dataset_of, recipe_beside
from core.registry import load_registry
from core.training import stages
from core.training.export import component_info
from core.training.recipe_file import RECIPE_FILE, STAGES, PluginStage, load_recipe

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "models" / "shapes-tiny"

# The values of core/training/recipes.py, the Python module the recipe was before it moved to
# models/shapes-tiny/recipe.yaml, that the shipped weights cannot tell: the data set, the objectives' settings
# and each stage's training hyper-parameters.
BEFORE = {
    "dataset": "shapes",
    "vae": {"beta": 1e-4, "train": {"steps": 2500, "batch_size": 16, "lr": 5e-4, "warmup": 100}},
    "decoder": {"beta": 1e-4, "train": {"steps": 1000, "batch_size": 16, "lr": 2e-4, "warmup": 50}},
    "clip": {"embed_dim": 64, "train": {"steps": 300, "batch_size": 32, "lr": 2e-3, "warmup": 30}},
    "unet": {
        "caption_dropout": 0.1,
        "cached_images": 20_000,
        "train": {"steps": 2500, "batch_size": 64, "lr": 1e-3, "warmup": 100, "ema_decay": 0.998},
    },
}


def types(value: object) -> object:
    """`value` with every leaf replaced by its type's name: `1e-4` and `"1e-4"` differ, `1` and `1.0` too."""
    if isinstance(value, dict):
        return {key: types(item) for key, item in value.items()}
    if isinstance(value, list):
        return [types(item) for item in value]
    return type(value).__name__


def test_the_shipped_recipe_keeps_the_values_it_had_in_python() -> None:
    recipe = load_recipe(SHIPPED / RECIPE_FILE).model_dump(exclude_unset=True)
    kept = {"dataset": recipe["dataset"]} | {
        stage: {key: recipe[stage][key] for key in BEFORE[stage]} for stage in STAGES
    }
    assert kept == BEFORE and types(kept) == types(BEFORE)


def test_the_shipped_recipe_builds_the_shipped_weights() -> None:
    """Plugin and config of each stage are exactly what the shipped weights say they were trained with."""
    recipe = load_recipe(SHIPPED / RECIPE_FILE)
    for stage in ("vae", "clip", "unet"):
        block = recipe.stage(stage)
        assert isinstance(block, PluginStage)
        info = component_info(SHIPPED / stages.WEIGHT_FILES[stage])
        exported = {k: v for k, v in info["config"].items() if k != "scaling_factor"}  # the vae stage measures it
        assert info["kind"] == block.kind == stages.KINDS[stage] and info["plugin"] == block.plugin
        assert block.config == exported and types(block.config) == types(exported)


def test_the_training_schedule_is_the_shapes_pipeline_schedule() -> None:
    schedule = load_recipe(SHIPPED / RECIPE_FILE).unet.schedule.model_dump(exclude_unset=True)
    scheduler = load_registry(ROOT / "registry.yaml").block("shapes-tiny", "scheduler").config
    assert schedule == {key: scheduler[key] for key in schedule}


def test_the_recipe_gives_the_training_defaults_and_the_command_line_overrides_them() -> None:
    recipe = load_recipe(SHIPPED / RECIPE_FILE)
    config = stages.train_config(recipe, "unet", {"steps": None, "batch_size": 4, "lr": None, "seed": None})
    assert (config.steps, config.batch_size, config.lr, config.ema_decay, config.seed) == (2500, 4, 1e-3, 0.998, 0)
    assert stages.train_config(recipe, "clip", {"seed": 3}).seed == 3


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / RECIPE_FILE
    path.write_text(text, encoding="utf-8")
    return path


def shipped_with(**changes: object) -> str:
    """The shipped recipe's YAML with top-level blocks replaced (`None`: removed)."""
    recipe = load_recipe(SHIPPED / RECIPE_FILE).model_dump(exclude_unset=True)
    for key, value in changes.items():
        if value is None:
            del recipe[key]
        else:
            recipe[key] = value
    return yaml.safe_dump(recipe, sort_keys=False)


@pytest.mark.parametrize(
    ("change", "messages"),
    [
        ({"datset": "shapes", "dataset": None}, ["datset: Extra inputs are not permitted", "did you mean 'dataset'"]),
        ({"decoder": {"beta": 1e-4, "train": {"lr": -1}}}, ["decoder -> train -> lr: Input should be greater than 0"]),
        ({"decoder": {"beta": "much", "train": {}}}, ["decoder -> beta: Input should be a valid number"]),
        ({"unet": None}, ["unet: Field required"]),
        ({"dataset": "shapez"}, ["dataset: no dataset plugin named 'shapez'", "did you mean 'shapes'"]),
    ],
)
def test_a_broken_recipe_names_the_file_and_the_field(tmp_path, change, messages) -> None:
    path = write(tmp_path, shipped_with(**change))
    with pytest.raises(core.ConfigError) as error:
        load_recipe(path)
    assert str(error.value).startswith(f"{path}: invalid training recipe")
    assert all(message in str(error.value) for message in messages), str(error.value)


def test_every_plugin_problem_is_listed_at_once(tmp_path) -> None:
    recipe = load_recipe(SHIPPED / RECIPE_FILE).model_dump(exclude_unset=True)
    recipe["vae"]["plugin"] = "vae-kll"
    recipe["clip"]["config"]["hidden_sise"] = 8
    recipe["unet"]["train"].pop("ema_decay")
    path = write(tmp_path, yaml.safe_dump(recipe))
    with pytest.raises(core.ConfigError, match="ema_decay") as error:
        load_recipe(path)
    assert "unet -> train: Value error, set `ema_decay`" in str(error.value)  # the fields come first
    recipe["unet"]["train"]["ema_decay"] = 0.99
    with pytest.raises(core.ConfigError) as error:
        load_recipe(write(tmp_path, yaml.safe_dump(recipe)))
    text = str(error.value)
    assert "2 problems" in text and "vae -> plugin: no encoder plugin named 'vae-kll'" in text
    assert "clip -> config -> hidden_sise: Extra inputs are not permitted" in text


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("dataset: [shapes\n", "invalid YAML at line 2"),
        ("- shapes\n", "the top level must be a mapping"),
        ("".join(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}' if i else 'lol'] * 10)}]\n" for i in range(6)), "refused"),
    ],
)
def test_a_file_that_is_no_recipe_is_refused(tmp_path, text, message) -> None:
    with pytest.raises(core.ConfigError, match=message):
        load_recipe(write(tmp_path, text))


def test_a_missing_recipe_says_where_it_looked(tmp_path) -> None:
    with pytest.raises(core.ConfigError, match="no training recipe here") as error:
        load_recipe(tmp_path / RECIPE_FILE)
    assert "--recipe" in str(error.value)


def test_eval_takes_the_data_set_from_the_recipe_beside_the_weights(tmp_path) -> None:
    no_flag, flag = argparse.Namespace(dataset=None), argparse.Namespace(dataset="other")
    shipped = load_registry(ROOT / "registry.yaml")
    assert recipe_beside(shipped, "shapes-tiny") == SHIPPED / RECIPE_FILE
    assert dataset_of(shipped, "shapes-tiny", no_flag) == "shapes"
    assert dataset_of(shipped, "shapes-tiny", flag) == "other"

    registry = tmp_path / "registry.yaml"
    registry.write_text(
        "version: 1\n"
        "pipelines:\n"
        "  mine:\n"
        "    encoder: {plugin: vae-kl, weights: weights/encoder.safetensors}\n"
        "    denoiser: {plugin: unet2d-condition, weights: weights/denoiser.safetensors}\n"
        "    text: {plugin: clip-text, weights: weights/text.safetensors}\n"
        "    scheduler: {plugin: ddim}\n"
        "    sampler: {plugin: cfg}\n",
        encoding="utf-8",
    )
    mine = load_registry(registry)
    with pytest.raises(core.InputError, match="pass --dataset NAME"):
        dataset_of(mine, "mine", no_flag)
    assert dataset_of(mine, "mine", flag) == "other"
    (tmp_path / "weights").mkdir()
    shutil.copy(SHIPPED / RECIPE_FILE, tmp_path / "weights" / RECIPE_FILE)  # relative to the registry's folder
    assert dataset_of(mine, "mine", no_flag) == "shapes"
