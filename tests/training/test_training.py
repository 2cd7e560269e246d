"""The training loop and the four stages, on tiny models and a handful of steps."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

import core
from core.cli import eval as eval_command
from core.cli import train as train_command
from core.training import evaluate, stages
from core.training.autoencoder import KLAutoencoderObjective
from core.training.diffusion import DiffusionObjective
from core.training.export import component_info, load_component
from core.training.loop import CHECKPOINT, LOG, TrainConfig, train
from core.training.recipe_file import RECIPE_FILE, STAGES, load_recipe

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "models" / "shapes-tiny"

TINY_VAE = {
    "block_out_channels": [8, 16],
    "down_block_types": ["DownEncoderBlock2D"] * 2,
    "up_block_types": ["UpDecoderBlock2D"] * 2,
    "layers_per_block": 1,
    "norm_num_groups": 4,
    "sample_size": 16,
}
TINY_TEXT = {
    "hidden_size": 16,
    "intermediate_size": 32,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "max_position_embeddings": 16,
    "max_length": 16,
}
TINY_UNET = {
    "sample_size": 8,
    "block_out_channels": [16, 32],
    "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
    "layers_per_block": 1,
    "attention_head_dim": 2,
    "cross_attention_dim": 16,
    "norm_num_groups": 8,
}


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models train fastest on one thread, and do not fight a busy machine for cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def vae_objective(seed: int = 0) -> KLAutoencoderObjective:
    torch.manual_seed(seed)
    data = core.create("dataset", "shapes", length=4, image_size=16)
    return KLAutoencoderObjective(core.create("encoder", "vae-kl", **TINY_VAE), data)


def unet_objective() -> DiffusionObjective:
    torch.manual_seed(0)
    unet = core.create("denoiser", "unet2d-condition", **TINY_UNET)
    schedule = torch.linspace(0.999, 0.01, 100)
    return DiffusionObjective(
        unet, schedule, torch.randn(8, 4, 8, 8), torch.arange(8) % 2, torch.randn(2, 5, 16), torch.randn(5, 16)
    )


def losses(out) -> list[float]:
    return [json.loads(line)["loss"] for line in (out / LOG).read_text().splitlines()]


def test_loss_decreases_on_a_tiny_batch(tmp_path) -> None:
    config = TrainConfig(steps=45, batch_size=8, lr=3e-3, warmup=0, log_every=15, seed=1)
    train(unet_objective(), config, tmp_path, progress=False)
    logged = losses(tmp_path)
    assert len(logged) == 3 and logged[-1] < 0.8 * logged[0]


def test_resume_gives_the_uninterrupted_result(tmp_path) -> None:
    config = TrainConfig(steps=6, batch_size=3, lr=1e-3, warmup=2, ema_decay=0.9, log_every=1, checkpoint_every=3)
    straight = unet_objective()
    train(straight, config, tmp_path / "straight", progress=False)
    crashing = unet_objective()
    real_loss, calls = crashing.loss, []

    def crash_when_step_3_begins(*args):  # right after the step-3 checkpoint, as a Ctrl-C would
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real_loss(*args)

    crashing.loss = crash_when_step_3_begins
    with pytest.raises(KeyboardInterrupt):
        train(crashing, config, tmp_path / "split", progress=False)
    resumed = unet_objective()
    result = train(resumed, config, tmp_path / "split", resume=True, progress=False)
    assert result.step == 6
    a, b = load_file(tmp_path / "straight" / CHECKPOINT), load_file(tmp_path / "split" / CHECKPOINT)
    assert a.keys() == b.keys() and any(k.startswith("ema.") for k in a) and any(k.startswith("optim.") for k in a)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert losses(tmp_path / "straight") == losses(tmp_path / "split")


def test_same_seed_same_weights_other_seed_other_weights(tmp_path) -> None:
    runs = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        objective = vae_objective()
        train(objective, TrainConfig(steps=2, batch_size=2, seed=seed), tmp_path / name, progress=False)
        runs[name] = objective.module.state_dict()
    assert all(torch.equal(runs["a"][k], runs["b"][k]) for k in runs["a"])
    assert not all(torch.equal(runs["a"][k], runs["c"][k]) for k in runs["a"])


def test_resume_without_a_checkpoint_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(core.InputError, match="cannot resume"):
        train(vae_objective(), TrainConfig(steps=1, batch_size=1), tmp_path, resume=True, progress=False)


def shipped_recipe() -> dict:
    """The shipped recipe as plain data: only what the file sets."""
    return load_recipe(SHIPPED / RECIPE_FILE).model_dump(exclude_unset=True)


def write_recipe(path: Path, recipe: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(recipe, sort_keys=False), encoding="utf-8")
    return path


def tiny_recipe() -> dict:
    """The shipped recipe with tiny parts: the stages' code paths at a fraction of the cost."""
    recipe = shipped_recipe()
    recipe["vae"]["config"] = TINY_VAE
    recipe["clip"] |= {"config": TINY_TEXT, "embed_dim": 8}
    recipe["unet"] |= {"config": TINY_UNET, "cached_images": 8}
    return recipe


def test_the_four_stages_run_from_the_command_line(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(stages, "FRESH_IMAGES", 8)
    parser = argparse.ArgumentParser()
    commands = parser.add_subparsers()
    train_command.add_parser(commands)
    eval_command.add_parser(commands)
    models = tmp_path / "models"
    write_recipe(models / RECIPE_FILE, tiny_recipe())  # the default recipe: the one in --model-dir
    for stage in ("vae", "decoder", "clip", "unet"):
        args = parser.parse_args(
            [
                "train",
                stage,
                "--steps",
                "2",
                "--batch-size",
                "2",
                "--out",
                str(tmp_path / stage),
                "--model-dir",
                str(models),
                "--device",
                "cpu",
            ]
        )
        assert args.run(args) == 0
        info = component_info(models / stages.WEIGHT_FILES[stage])
        assert info["kind"] == stages.KINDS[stage]
    encoder = load_component(models / "encoder.safetensors")
    assert isinstance(encoder, core.Encoder) and encoder.scaling_factor > 0
    denoiser = load_component(models / "denoiser.safetensors")
    text = load_component(models / "text.safetensors")
    assert denoiser(torch.zeros(1, 4, 8, 8), 10, text(["a small red circle on a blue background"])).shape == (
        1,
        4,
        8,
        8,
    )
    recipe = (models / RECIPE_FILE).rename(tmp_path / "elsewhere.yaml")  # --recipe: the recipe in any file
    args = parser.parse_args(
        [
            "train",
            "unet",
            "--recipe",
            str(recipe),
            "--steps",
            "3",
            "--batch-size",
            "2",
            "--out",
            str(tmp_path / "unet"),
            "--model-dir",
            str(models),
            "--device",
            "cpu",
            "--resume",
        ]
    )
    assert args.run(args) == 0 and json.loads((tmp_path / "unet" / "state.json").read_text())["step"] == 3


def test_every_stage_has_its_runner() -> None:
    assert tuple(stages.RUNNERS) == STAGES == tuple(stages.WEIGHT_FILES) == tuple(stages.KINDS)
    assert all(run is getattr(stages, f"run_{stage}") for stage, run in stages.RUNNERS.items())


def test_attribute_accuracy_of_a_perfect_and_a_blind_generator() -> None:
    data = core.create("dataset", "shapes", split="heldout", length=10)
    truth = {data[i][1]: data[i][0] for i in range(10)}

    def perfect(prompts: list[str], seed: int) -> torch.Tensor:
        return torch.stack([truth[p] for p in prompts])

    def blind(prompts: list[str], seed: int) -> torch.Tensor:
        return torch.full((len(prompts), 3, 64, 64), -1.0)

    assert evaluate.attribute_accuracy(perfect, data, 10, batch_size=3) == {
        "background": 1.0,
        "color": 1.0,
        "shape": 1.0,
        "size": 1.0,
        "all three": 1.0,
    }
    assert evaluate.attribute_accuracy(blind, data, 10)["all three"] == 0.0


def test_labelled_grid_layout() -> None:
    sheet = evaluate.labelled_grid(torch.zeros(6, 3, 64, 64), ["a", "b"], 3, label_width=100, gap=2)
    assert sheet.size == (100 + 3 * 66, 2 * 66)


def test_checkpoints_get_the_permissions_a_plain_write_would(tmp_path) -> None:
    """safetensors writes 0600; the loop's files are readable as `open(path, "w")` would make them (a shared
    filesystem's other readers need that)."""
    previous = os.umask(0o022)
    try:
        train(vae_objective(), TrainConfig(steps=1, batch_size=2), tmp_path, progress=False)
    finally:
        os.umask(previous)
    assert (tmp_path / CHECKPOINT).stat().st_mode & 0o777 == 0o644
