"""Data-parallel training (core.training.distributed): two gloo processes on the CPU follow the single-process
loss curve of the same global batch and seed, resume it and hand their checkpoint to a single process, their
gradient being the single-process one; `diffstack train` runs under torchrun."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from functools import partial
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from test_training import TINY_TEXT, tiny_recipe, unet_objective, write_recipe

import core
from core.training import distributed
from core.training.contrastive import ContrastiveObjective
from core.training.diffusion import DiffusionObjective
from core.training.loop import LOG, STATE, TrainConfig, _data_parallel, step_generator, train
from core.training.recipe_file import RECIPE_FILE

STEPS = 20
CONFIG = TrainConfig(steps=STEPS, batch_size=4, lr=3e-3, warmup=2, ema_decay=0.9, log_every=1, checkpoint_every=5)
CLIP_CONFIG = TrainConfig(steps=4, batch_size=4, lr=1e-3, warmup=0, log_every=1)
TOLERANCE = 1e-4


def clip_objective() -> ContrastiveObjective:
    torch.manual_seed(0)
    data = core.create("dataset", "shapes", length=8, image_size=16)
    return ContrastiveObjective(core.create("text", "clip-text", **TINY_TEXT), data, embed_dim=8)


class Stopped(Exception):
    """The run was stopped, as by Ctrl-C."""


class StoppedAt:
    """`objective`, stopping the run when step `step` begins (after the checkpoint of the steps before it)."""

    def __init__(self, objective: DiffusionObjective, step: int):
        self.objective, self.module, self.calls_left = objective, objective.module, step

    def loss(self, *args) -> tuple[torch.Tensor, dict[str, float]]:
        if self.calls_left == 0:
            raise Stopped
        self.calls_left -= 1
        return self.objective.loss(*args)


def gradients(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.grad for name, p in module.named_parameters() if p.grad is not None}


def logged(out: Path, key: str = "loss") -> list[float]:
    return [json.loads(line)[key] for line in (out / LOG).read_text().splitlines()]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker(rank: int, world_size: int, port: int, out: Path) -> None:
    """One of `world_size` processes, with the environment torchrun would give it: the runs the tests compare."""
    os.environ |= {
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
        "RANK": str(rank),
        "LOCAL_RANK": str(rank),
        "WORLD_SIZE": str(world_size),
        "LOCAL_WORLD_SIZE": str(world_size),
    }
    torch.set_num_threads(1)
    with distributed.session(torch.device("cpu")) as (shard, _):
        assert shard == distributed.current() == distributed.Shard(rank, world_size)
        train(unet_objective(), CONFIG, out / "straight", progress=False)
        with pytest.raises(Stopped):
            train(StoppedAt(unet_objective(), STEPS // 2), CONFIG, out / "split", progress=False)
        shard.barrier()  # rank 0 has written the checkpoint of step 10
        if shard.is_main:
            shutil.copytree(out / "split", out / "handed")  # for a single process to resume
        train(unet_objective(), CONFIG, out / "split", resume=True, progress=False)
        train(clip_objective(), CLIP_CONFIG, out / "clip", progress=False)
        for name, objective in (("unet", unet_objective()), ("clip", clip_objective())):
            forward = _data_parallel(objective.module, shard)  # alive until backward: its hooks average
            loss, _ = forward(partial(objective.loss, 4, step_generator(0, 0), shard))
            loss.backward()
            if shard.is_main:
                torch.save(gradients(objective.module), out / f"{name}.gradients")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """The same runs by one process (in this one, on one thread) and by two spawned gloo processes."""
    root = tmp_path_factory.mktemp("distributed")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(unet_objective(), CONFIG, root / "single", progress=False)
        train(clip_objective(), CLIP_CONFIG, root / "single-clip", progress=False)
        mp.spawn(worker, args=(2, free_port(), root / "two"), nprocs=2)
        # the checkpoint the 2 processes wrote at step 10, resumed to step 20 by a single process
        train(unet_objective(), CONFIG, root / "two" / "handed", resume=True, progress=False)
    finally:
        torch.set_num_threads(threads)
    return {"single": root / "single", "single-clip": root / "single-clip", "two": root / "two"}


def assert_same_curve(a: list[float], b: list[float]) -> None:
    assert len(a) == len(b) and max(abs(x - y) for x, y in zip(a, b, strict=True)) < TOLERANCE, (a, b)


def test_two_processes_follow_the_single_process_loss_curve(runs) -> None:
    single = logged(runs["single"])
    assert len(single) == STEPS and single[-1] < single[0]
    assert_same_curve(logged(runs["two"] / "straight"), single)


def test_a_resumed_two_process_run_continues_the_curve(runs) -> None:
    assert_same_curve(logged(runs["two"] / "split"), logged(runs["single"]))


def test_a_two_process_checkpoint_resumes_in_one_process(runs) -> None:
    assert_same_curve(logged(runs["two"] / "handed"), logged(runs["single"]))


def test_the_contrastive_loss_is_exact_over_two_processes(runs) -> None:
    for key in ("loss", "accuracy", "temperature"):
        assert_same_curve(logged(runs["two"] / "clip", key), logged(runs["single-clip"], key))


@pytest.mark.parametrize("name, objective", [("unet", unet_objective), ("clip", clip_objective)])
def test_the_gradient_is_the_single_process_one(runs, name, objective) -> None:
    """Each of 2 processes computes half of a batch of 4 (the contrastive loss: gathers the other half's
    embeddings); their averaged gradient is that of the whole batch in one process."""
    alone = objective()
    loss, _ = alone.loss(4, step_generator(0, 0))
    loss.backward()
    expected, got = gradients(alone.module), torch.load(runs["two"] / f"{name}.gradients")
    assert got.keys() == expected.keys() == {name for name, _ in alone.module.named_parameters()}
    scale = max(value.abs().max().item() for value in expected.values())
    for key, value in expected.items():
        torch.testing.assert_close(got[key], value, rtol=1e-4, atol=1e-6 * scale, msg=key)


def test_a_batch_the_processes_cannot_share_is_a_clear_error() -> None:
    assert distributed.Shard(1, 2).rows(4) == slice(2, 4)
    with pytest.raises(core.InputError, match=r"--batch-size 5 does not split evenly over 2 processes"):
        distributed.Shard(0, 2).rows(5)


def test_diffstack_train_under_torchrun(tmp_path) -> None:
    """The documented command: rank 0 alone prints the summary and writes the component; the checkpoint and the
    log are those of the global batch."""
    models = tmp_path / "models"
    write_recipe(models / RECIPE_FILE, tiny_recipe())
    scripts = Path(sys.executable).parent  # the environment's torchrun and diffstack
    command = [scripts / "torchrun", "--standalone", "--nproc-per-node", "2", "--no-python", scripts / "diffstack"]
    arguments = ["train", "clip", "--steps", "2", "--batch-size", "4", "--out", tmp_path / "clip"]
    done = subprocess.run(
        [*command, *arguments, "--model-dir", models, "--device", "cpu"],
        capture_output=True,
        text=True,
        env=os.environ | {"OMP_NUM_THREADS": "1"},
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("clip: 2 steps on cpu × 2 processes") == 1
    assert done.stdout.count(f"clip: wrote {models / 'text.safetensors'}") == 1
    state = json.loads((tmp_path / "clip" / STATE).read_text())
    assert state["step"] == 2 and state["config"]["batch_size"] == 4
