"""Data-parallel training across the processes torchrun starts: torch.distributed, `gloo` on CPU, `nccl` on CUDA.

    torchrun --nproc-per-node N --no-python diffstack train STAGE …

torchrun gives every process WORLD_SIZE, RANK, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR and MASTER_PORT in its
environment; `session` joins the process group they describe and leaves it at the end. A process alone (no
WORLD_SIZE) joins nothing and trains exactly as before. `Shard` is one process's place in the run, which the
training loop and the objectives read through `current()`:

    global batch B = the config's batch_size, drawn in full by every process from the same step generator
    process r of N computes rows [r·B/N, (r+1)·B/N) of it (`Shard.rows`), its loss the mean over them
    DDP averages the gradients: the mean over all B rows, the single-process gradient
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist

from core.errors import DiffstackError, InputError


@dataclass(frozen=True)
class Shard:
    """Process `rank` of the `world_size` processes of a data-parallel run (0 of 1 when alone)."""

    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes checkpoints, logs and the finished component."""
        return self.rank == 0

    def rows(self, batch_size: int) -> slice:
        """This process's rows [r·B/N, (r+1)·B/N) of a global batch of B = `batch_size` rows."""
        if batch_size % self.world_size:
            raise InputError(
                f"--batch-size {batch_size} does not split evenly over {self.world_size} processes: every process "
                "trains on an equal part of the global batch",
                hint=f"use a --batch-size divisible by {self.world_size}, or another --nproc-per-node",
            )
        size = batch_size // self.world_size
        return slice(self.rank * size, (self.rank + 1) * size)

    def gather(self, rows: torch.Tensor) -> torch.Tensor:
        """This process's rows (b, …) → every process's, (N·b, …) in rank order: the global batch's. Gradients flow
        back to each process's own rows (summed over the processes that use them); alone, `rows` itself."""
        if self.world_size == 1:
            return rows
        return _Gather.apply(rows)

    def gather_list(self, items: list[str]) -> list[str]:
        """This process's list → every process's lists joined in rank order; alone, `items` itself."""
        if self.world_size == 1:
            return items
        lists: list[list[str]] = [[] for _ in range(self.world_size)]
        dist.all_gather_object(lists, items)
        return [item for part in lists for item in part]

    def mean(self, values: list[float]) -> list[float]:
        """Each value averaged over the processes (every process passes as many); alone, `values` itself."""
        if self.world_size == 1:
            return values
        device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
        total = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(total)
        return (total / self.world_size).tolist()

    def barrier(self) -> None:
        """Wait until every process gets here; alone, return at once."""
        if self.world_size > 1:
            dist.barrier()


class _Gather(torch.autograd.Function):
    """All-gather along rows with a gradient: forward (b, …) → (N·b, …), every process's rows in rank order;
    backward sums the (N·b, …) gradients of all processes and returns this process's rows of the sum."""

    @staticmethod
    def forward(ctx, rows: torch.Tensor) -> torch.Tensor:
        parts = [torch.empty_like(rows) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, rows.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        total = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(total)
        return total.chunk(dist.get_world_size())[dist.get_rank()]


SINGLE = Shard()
"""A process training alone."""


def current() -> Shard:
    """The Shard of the process group this process has joined; SINGLE when it has joined none."""
    if dist.is_available() and dist.is_initialized():
        return Shard(dist.get_rank(), dist.get_world_size())
    return SINGLE


@contextmanager
def main_first() -> Iterator[None]:
    """Rank 0 runs the block before the other processes run it (rank 0 writes a file, they read it); alone,
    just the block."""
    shard = current()
    if not shard.is_main:
        shard.barrier()
    yield
    if shard.is_main:
        shard.barrier()


def launched() -> bool:
    """Whether torchrun (or anything setting WORLD_SIZE the same way) started this process."""
    return "WORLD_SIZE" in os.environ


def cpu_threads() -> int:
    """Torch threads for one of the processes torchrun started on this machine: the CPUs shared out evenly."""
    return max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", os.environ["WORLD_SIZE"])))


@contextmanager
def session(device: torch.device) -> Iterator[tuple[Shard, torch.device]]:
    """Under torchrun: join the process group of the environment (gloo for a CPU `device`, nccl for a CUDA one,
    each process on cuda:LOCAL_RANK), yield (its Shard, the device this process trains on) and leave the group on
    exit. Alone: yield (SINGLE, `device`). Failing to join is a DiffstackError naming the rank and backend."""
    if not launched():
        yield SINGLE, device
        return
    try:
        rank, world_size, local_rank = (int(os.environ[k]) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    except (KeyError, ValueError):
        raise InputError(
            "WORLD_SIZE is set but RANK and LOCAL_RANK are not both whole numbers: not a torchrun environment",
            hint="start data-parallel training with torchrun, or unset WORLD_SIZE",
        ) from None
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise InputError(
                f"process {rank} would train on cuda:{local_rank}, but {torch.cuda.device_count()} CUDA devices "
                "are visible",
                hint="start at most as many processes per node as there are GPUs (--nproc-per-node)",
            )
        device, backend = torch.device("cuda", local_rank), "nccl"
        torch.cuda.set_device(device)
    elif device.type == "cpu":
        backend = "gloo"
    else:
        raise InputError(f"data-parallel training runs on cpu or cuda, not {device}", hint="use --device cpu or cuda")
    try:
        dist.init_process_group(backend, rank=rank, world_size=world_size)
    except (RuntimeError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DiffstackError(
            f"process {rank} of {world_size} could not join the {backend} process group: {reason}",
            hint="start every process with the same torchrun command (a free --master-port)",
        ) from None
    try:
        yield Shard(rank, world_size), device
    finally:
        dist.destroy_process_group()
