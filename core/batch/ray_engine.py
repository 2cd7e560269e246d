"""The `ray` engine of `diffstack batch`: the calls run in a pool of Ray actors (Ray Data `map_batches`), each
actor building the pipeline once and writing its PNGs into the output folder itself; the driver gets each
call's manifest lines as the call finishes, and writes the manifest.

Every host must see the output folder and the registry at the same paths (a shared filesystem) and have
diffstack and the registry's plugins installed; the driver's `DIFFSTACK_*` environment variables (the weights
paths a registry names) are passed to the actors. A failure in an actor reaches the driver as the exception
the pipeline raised (a `DiffstackError`), or as one naming the actor and the error; an actor that dies is not
restarted: the batch stops, and running it again resumes it.
"""

from __future__ import annotations

import logging
import os
import pickle
import signal
import socket
import threading
import traceback
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from core.batch.calls import run_call
from core.batch.run import Engine, Pending
from core.errors import DiffstackError, InputError
from core.pipeline import Pipeline

PROBE_SECONDS = 10.0
"""How long the driver waits for `--ray-address` to accept a connection (Ray itself would wait for minutes)."""


def ray_engine(
    registry_path: str, pipeline_name: str, device: str, out: Path, workers: int, address: str | None
) -> Engine:
    """An engine running the calls on `workers` actors (fewer when there are fewer calls) of the Ray cluster
    at `address` (HOST:PORT, `ray://HOST:PORT`, or `auto`: the one `ray start` started on this host; None: a
    new local Ray instance with the CPUs Ray finds on this machine), each with pipeline `pipeline_name` of
    `registry_path` built on `device` (`auto`: CUDA when the cluster has GPUs). On CUDA each actor holds one
    GPU and one CPU; on CPU the cluster's CPUs are shared out among the actors, each running as many torch
    threads as it holds CPUs. Ray is joined or started when there is a call to run, and left after the last
    one when this engine joined or started it (a Ray the caller initialised is used as it is, left running)."""
    try:
        import ray
        import ray.data
    except ImportError:
        raise InputError('--engine ray needs Ray: pip install "diffstack[ray]"') from None
    folder = out.resolve()

    def run(pending: list[Pending]) -> Iterator[list[dict[str, Any]]]:
        if not pending:
            return
        actors = min(workers, len(pending))
        joined = connect(ray, address)
        try:
            shares = share_out(ray, device, actors)
            yield from stream(ray, pending, registry_path, pipeline_name, folder, actors, shares)
        finally:
            if joined:
                ray.shutdown()

    return run


def connect(ray: ModuleType, address: str | None) -> bool:
    """Join the cluster at `address`, or start a local instance when None → whether this call did either.
    Ray counts the local instance's CPUs itself, heeding a container's CPU limit."""
    if ray.is_initialized():
        return False
    quiet: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.ERROR}
    if address not in (None, "auto"):
        probe(address)
    with keeping_sigterm():
        try:
            ray.init(address=address or "local", **quiet)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            raise InputError(f"cannot join the Ray cluster at --ray-address {address}: {first_line(exc)}") from None
    return True


@contextmanager
def keeping_sigterm() -> Iterator[None]:
    """Put back the SIGTERM handler the block replaces (`ray.init` installs one that exits at once, which
    would skip the CLI's own)."""
    handler = signal.getsignal(signal.SIGTERM)
    try:
        yield
    finally:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, handler)


def probe(address: str) -> None:
    """An InputError when `address` (HOST:PORT, or ray://HOST:PORT) does not accept a TCP connection."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise InputError(f"--ray-address {address}: expected HOST:PORT", hint="the head's address, e.g. HEAD:6379")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=PROBE_SECONDS).close()
    except OSError as exc:
        raise InputError(
            f"cannot reach the Ray cluster at --ray-address {address}: {exc.strerror or exc}",
            hint="start its head with `ray start --head` and give that host's HOST:6379",
        ) from None


@dataclass(frozen=True)
class Shares:
    """What each actor gets: the device it builds the pipeline on, and the GPUs and CPUs Ray reserves for it."""

    device: str
    gpus: int
    cpus: int


def share_out(ray: ModuleType, device: str, workers: int) -> Shares:
    """Each of `workers` actors' device and reservation on the cluster Ray is connected to; an InputError when
    the cluster cannot hold them all at once (Ray would wait for the missing ones for ever)."""
    nodes = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
    gpus = sum(int(node.get("GPU", 0)) for node in nodes)
    if device == "auto":
        device = "cuda" if gpus else "cpu"
    if device.startswith("cuda"):
        if device != "cuda":
            raise InputError(f"--device {device} with --engine ray: Ray gives each actor its own GPU",
                             hint="use --device cuda")  # fmt: skip
        if gpus < workers:
            raise InputError(
                f"--workers {workers} on CUDA needs {workers} GPUs; the Ray cluster has {gpus}",
                hint=f"use --workers {gpus}" if gpus else "use --device cpu, or a Ray cluster with GPUs",
            )
        return Shares(device, 1, 1)
    per_node = [int(node.get("CPU", 0)) for node in nodes]
    if sum(per_node) < workers:
        raise InputError(f"--workers {workers} needs {workers} CPUs; the Ray cluster has {sum(per_node)}",
                         hint=f"use --workers {sum(per_node)} or fewer")  # fmt: skip
    cpus = max(c for c in range(1, max(per_node) + 1) if sum(n // c for n in per_node) >= workers)
    return Shares(device, 0, cpus)


class Worker:
    """A Ray Data actor: the pipeline, built once; a batch of rows, each a pickled (call, todo) → per row, the
    pickled outcome of the call: its manifest lines, the warnings it raised (text, category), and the
    exception that stopped it (None when none). Failures travel as data, not as Ray errors, so that the driver
    gets the exception itself."""

    def __init__(self, registry_path: str, pipeline_name: str, device: str, threads: int, out: str) -> None:
        import ray
        import torch

        from core.registry import load_registry

        self.out = Path(out)
        self.label = f"ray:{ray.util.get_node_ip_address()}:{os.getpid()}"
        self.pipe: Pipeline | None = None
        self.failure: Exception | None = None
        try:
            torch.set_num_threads(threads)
            self.pipe = load_registry(registry_path).build(pipeline_name, device=device)
        except Exception as exc:
            self.failure = exc

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"outcome": np.array([self.run(row) for row in batch["call"]], dtype=object)}

    def run(self, row: bytes) -> bytes:
        entries: list[dict[str, Any]] = []
        failure = None
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                if self.failure is not None:
                    raise self.failure
                assert self.pipe is not None
                call, todo = pickle.loads(row)
                entries = run_call(self.pipe, call, todo, self.out, self.label)
            except Exception as exc:
                failure = self.portable(exc)
        return pickle.dumps((entries, [(str(w.message), w.category) for w in caught], failure))

    def portable(self, exc: Exception) -> DiffstackError:
        """`exc` itself when it is a DiffstackError that survives pickling; else a DiffstackError with its
        message, or for any other error one naming this actor and the error (its traceback goes to the
        actor's log)."""
        if isinstance(exc, DiffstackError):
            try:
                pickle.loads(pickle.dumps(exc))
                return exc
            except Exception:
                return DiffstackError(str(exc))
        traceback.print_exception(exc)
        return DiffstackError(
            f"Ray actor {self.label} failed: {type(exc).__name__}: {exc}",
            hint="its traceback is in the Ray worker logs of that host (/tmp/ray/session_latest/logs)",
        )


def stream(
    ray: ModuleType,
    pending: list[Pending],
    registry_path: str,
    pipeline_name: str,
    out: Path,
    workers: int,
    shares: Shares,
) -> Iterator[list[dict[str, Any]]]:
    """Run `pending` on the actor pool → each call's manifest lines, as the calls finish; the warnings of
    each call re-issued here, the first failure raised here as a DiffstackError."""
    env = {name: value for name, value in os.environ.items() if name.startswith("DIFFSTACK_")}
    rows = [{"call": pickle.dumps(one)} for one in pending]
    with warnings.catch_warnings():
        # Ray 2.60 deprecates passing actor options such as max_restarts to map_batches, and names no other way
        warnings.simplefilter("ignore", ray.util.annotations.RayDeprecationWarning)
        results = ray.data.from_items(rows, override_num_blocks=len(rows)).map_batches(
            Worker,
            batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=workers),
            num_gpus=shares.gpus,
            num_cpus=shares.cpus,
            fn_constructor_kwargs={
                "registry_path": registry_path,
                "pipeline_name": pipeline_name,
                "device": shares.device,
                "threads": shares.cpus,
                "out": str(out),
            },
            runtime_env={"env_vars": env} if env else None,
            max_restarts=0,  # an actor that dies stops the batch (a re-run resumes it), not retried for ever
        )
    results.context.enable_progress_bars = False  # the batch's own progress bar is the one to show
    results.context.print_on_execution_start = False
    with quiet_ray_data():
        try:
            for row in results.iter_rows():
                entries, caught, failure = pickle.loads(row["outcome"])
                for message, category in caught:
                    warnings.warn(message, category, stacklevel=1)
                if failure is not None:
                    raise failure
                yield entries
        except ray.exceptions.RayError as exc:
            raise DiffstackError(
                f"the Ray batch failed: {first_line(exc)}",
                hint="run the same command again to resume; Ray's logs are under /tmp/ray/session_latest/logs",
            ) from None


@contextmanager
def quiet_ray_data() -> Iterator[None]:
    """Ray Data's console messages (start and end of execution, a failure's traceback: the engine reports
    failures itself) held back; its log files in the Ray session folder still get them."""
    consoles = [h for h in logging.getLogger("ray.data").handlers if isinstance(h, logging.StreamHandler)]
    levels = [handler.level for handler in consoles]
    for handler in consoles:
        handler.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        for handler, level in zip(consoles, levels, strict=True):
            handler.setLevel(level)


def first_line(exc: BaseException) -> str:
    """The first non-blank line of `exc`'s message, or its type's name when it has none."""
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return lines[0].strip() if lines else type(exc).__name__
