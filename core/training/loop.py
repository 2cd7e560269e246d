"""The training loop: AdamW, linear warm-up then cosine decay, gradient clipping, optional EMA weights,
resumable safetensors checkpoints, tqdm progress and a JSON-lines loss log.

Determinism: step k draws all its randomness (batch indices, noise, timesteps) from a generator seeded
with (seed, k), so a run resumed from a checkpoint at step k continues exactly as the uninterrupted run
(same device and thread count).

Data-parallel (under torchrun, `core.training.distributed`): every process draws the whole global batch of
`batch_size` rows from that generator and computes its own rows (`Shard.rows`); DistributedDataParallel
averages the gradients, so each step's gradient, its clipped norm and the logged loss (averaged over the
processes) are the single-process ones up to float rounding. Rank 0 alone writes the files and shows the
progress bar; the files are the same in both modes, so either resumes the other's checkpoint. Files in `out`:

    checkpoint.safetensors   model.* (weights), ema.* (EMA weights, if any), optim.<i>.<name> (AdamW state)
    state.json               {"step": k, "config": {...}, "param_groups": [...]}
    log.jsonl                one line {"step", "loss", "lr", ...metrics} per `log_every` steps
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Protocol

import torch
from pydantic import BaseModel, ConfigDict, Field
from safetensors.torch import load_file
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from core.errors import InputError
from core.training.distributed import SINGLE, Shard, current
from core.weights import save_state_dict

log = logging.getLogger(__name__)

CHECKPOINT, STATE, LOG = "checkpoint.safetensors", "state.json", "log.jsonl"


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    steps: int = Field(1000, ge=1, description="optimiser steps in total (a resumed run stops at the same step)")
    batch_size: int = Field(16, ge=1, description="rows per step; data-parallel, the global batch over all processes")
    lr: float = Field(1e-3, gt=0, description="peak learning rate")
    warmup: int = Field(100, ge=0, description="steps of linear warm-up from 0 to lr")
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="the cosine decay ends at lr · min_lr_ratio")
    weight_decay: float = Field(0.0, ge=0)
    grad_clip: float = Field(1.0, gt=0, description="max global gradient norm")
    ema_decay: float | None = Field(None, gt=0, lt=1, description="keep EMA weights with this decay (None: off)")
    seed: int = Field(0, ge=0)
    log_every: int = Field(50, ge=1)
    checkpoint_every: int = Field(500, ge=1)


class Objective(Protocol):
    """What the loop trains. `module` holds every trainable parameter (and is what gets checkpointed).

    `loss(batch_size, generator, shard)` draws a batch of `batch_size` rows with `generator` (CPU), every row's
    randomness whatever `shard` is, computes on rows `shard.rows(batch_size)` and returns (scalar loss, metrics):
    the loss is the mean over those rows, or (a loss that is not a mean over rows) the whole batch's, computed
    from the rows' outputs of every process (`shard.gather`) identically in each. The loop averages the loss and
    the metrics over the processes; alone, shard is SINGLE and the rows are all of them."""

    module: nn.Module

    def loss(
        self, batch_size: int, generator: torch.Generator, shard: Shard = SINGLE
    ) -> tuple[torch.Tensor, dict[str, float]]: ...


@dataclass
class TrainResult:
    """step: the last finished step; loss: mean loss of the last logging window; seconds: wall time of this run."""

    step: int
    loss: float
    seconds: float
    ema: dict[str, torch.Tensor] | None


def step_generator(seed: int, step: int) -> torch.Generator:
    """The CPU generator all of step `step`'s randomness comes from."""
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


def learning_rate(config: TrainConfig, step: int) -> float:
    """lr at 0-based `step`: linear warm-up over `warmup` steps, then cosine down to lr · min_lr_ratio."""
    if step < config.warmup:
        return config.lr * (step + 1) / config.warmup
    progress = (step - config.warmup) / max(1, config.steps - config.warmup)
    return config.lr * (config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def train(
    objective: Objective, config: TrainConfig, out: str | Path, *, resume: bool = False, progress: bool = True
) -> TrainResult:
    """Run `config.steps` steps (from the checkpoint in `out` when `resume`), checkpointing into `out`.

    The objective's module must already sit on the training device. Returns the final state; the EMA
    weights (if any) are also in `TrainResult.ema`. In a process group (`distributed.current()`) every
    process calls this alike; each returns once rank 0 has written the last checkpoint.
    """
    shard = current()
    shard.rows(config.batch_size)  # a batch the processes cannot share evenly fails here, before any work
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    module = objective.module
    params = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    ema = {k: v.detach().clone() for k, v in module.state_dict().items()} if config.ema_decay else None
    start = _load(out, module, optimizer, ema, config) if resume else 0
    if start >= config.steps and shard.is_main:
        log.info("%s: already trained for %d steps", out, start)

    forward = _data_parallel(module, shard)
    module.train()
    window: list[float] = []
    last_loss = math.nan
    began = time.perf_counter()
    bar = tqdm(
        range(start, config.steps),
        initial=start,
        total=config.steps,
        disable=not (progress and shard.is_main),
        desc=out.name,
    )
    for step in bar:
        lr = learning_rate(config, step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss, metrics = forward(partial(objective.loss, config.batch_size, step_generator(config.seed, step), shard))
        global_loss, *values = shard.mean([loss.item(), *metrics.values()])
        metrics = dict(zip(metrics, values, strict=True))
        if not math.isfinite(global_loss):
            raise InputError(f"training diverged at step {step}: loss is {global_loss}", hint="lower --lr")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
        optimizer.step()
        if ema is not None:
            _update_ema(ema, module, min(config.ema_decay, (1 + step) / (10 + step)))
        window.append(global_loss)
        done = step + 1
        if done % config.log_every == 0 or done == config.steps:
            last_loss = sum(window) / len(window)
            if shard.is_main:
                record = {"step": done, "loss": last_loss, "lr": lr, **metrics}
                with open(out / LOG, "a") as f:
                    f.write(json.dumps(record) + "\n")
                log.info("step %d loss %.5f %s", done, last_loss, metrics)
                bar.set_postfix(loss=f"{last_loss:.4f}")
            window.clear()
        if shard.is_main and (done % config.checkpoint_every == 0 or done == config.steps):
            _save(out, module, optimizer, ema, config, done)
    bar.close()
    module.eval()
    shard.barrier()
    return TrainResult(max(start, config.steps), last_loss, time.perf_counter() - began, ema)


class _Call(nn.Module):
    """Holds the trained module so that DistributedDataParallel sees its parameters; `forward(compute)` returns
    `compute()`, the objective's loss, which calls the module (its forward or any of its methods) itself."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, compute: Callable[[], tuple[torch.Tensor, dict[str, float]]]) -> tuple[torch.Tensor, dict]:
        return compute()


def _data_parallel(module: nn.Module, shard: Shard) -> Callable[[Callable], tuple[torch.Tensor, dict[str, float]]]:
    """What runs a step's loss: alone, a plain call; in a process group, DistributedDataParallel, whose hooks
    average every gradient over the processes in the backward pass (so it must live until then, and every
    trainable parameter must take part in every step's loss)."""
    if shard.world_size == 1:
        return lambda compute: compute()
    device = next(module.parameters()).device
    return DistributedDataParallel(_Call(module), device_ids=[device] if device.type == "cuda" else None)


@torch.no_grad()
def _update_ema(ema: dict[str, torch.Tensor], module: nn.Module, decay: float) -> None:
    for key, value in module.state_dict().items():
        if value.is_floating_point():
            ema[key].lerp_(value, 1 - decay)
        else:
            ema[key].copy_(value)


def _save(
    out: Path, module: nn.Module, optimizer: torch.optim.Optimizer, ema: dict | None, config: TrainConfig, step: int
) -> None:
    tensors = {f"model.{k}": v for k, v in module.state_dict().items()}
    if ema is not None:
        tensors |= {f"ema.{k}": v for k, v in ema.items()}
    state = optimizer.state_dict()
    for index, slots in state["state"].items():
        tensors |= {f"optim.{index}.{name}": torch.as_tensor(value) for name, value in slots.items()}
    save_state_dict(tensors, out / f"{CHECKPOINT}.tmp")
    (out / f"{CHECKPOINT}.tmp").replace(out / CHECKPOINT)
    meta = {"step": step, "config": config.model_dump(), "param_groups": state["param_groups"]}
    (out / STATE).write_text(json.dumps(meta, indent=1))


def _load(out: Path, module: nn.Module, optimizer: torch.optim.Optimizer, ema: dict | None, config: TrainConfig) -> int:
    if not (out / CHECKPOINT).exists() or not (out / STATE).exists():
        raise InputError(f"cannot resume: no {CHECKPOINT} and {STATE} in {out}", hint="train without --resume first")
    meta = json.loads((out / STATE).read_text())
    tensors = load_file(str(out / CHECKPOINT))
    device = next(module.parameters()).device
    module.load_state_dict({k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")})
    if ema is not None:
        for key in ema:
            ema[key].copy_(tensors[f"ema.{key}"])
    slots: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, name = key.split(".", 2)
            slots.setdefault(int(index), {})[name] = value if name == "step" else value.to(device)
    optimizer.load_state_dict({"state": slots, "param_groups": meta["param_groups"]})
    log.info("resumed %s at step %d", out, meta["step"])
    return int(meta["step"])
