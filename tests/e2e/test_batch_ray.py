"""`diffstack batch --engine ray` on a local Ray instance: the PNG bytes and manifest the local engine makes, a
SIGKILLed run resumed without touching what it wrote (and no Ray process left behind), an actor's failure as
one clear message."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from batch_jobs import images, made, manifest, mixed_jobs

import core.batch.ray_engine
from core.batch.run import Engine, Pending
from core.cli import main

ray = pytest.importorskip("ray")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::core.errors.FewStepsWarning", "ignore::core.errors.SwapWarning"),
]
JOBS = 40
IMAGES = 2 * JOBS


def batch(jobs: Path, out: Path, *options: str) -> list[str]:
    return ["batch", str(jobs), "--out", str(out), "--batch-size", "4", *options]


@pytest.fixture(scope="module")
def ray_tmp() -> Iterator[Path]:
    """A folder for Ray's sessions (sockets, logs), short as Unix socket paths need, removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="ray-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def jobs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("jobs") / "jobs.jsonl"
    path.write_text("".join(json.dumps(job) + "\n" for job in mixed_jobs(JOBS)))
    return path


@pytest.fixture(scope="module")
def local_out(jobs: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The jobs run by the local engine."""
    out = tmp_path_factory.mktemp("local")
    assert main(batch(jobs, out)) == 0
    return out


@pytest.fixture(scope="module")
def local_ray(ray_tmp: Path) -> Iterator[None]:
    """A local Ray instance in this process (2 CPUs, no GPU), which the engine uses as it is and leaves running."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RAY_TMPDIR", str(ray_tmp))
        ray.init(address="local", num_cpus=2, num_gpus=0, include_dashboard=False, log_to_driver=False,
                 logging_level=logging.ERROR)  # fmt: skip
        try:
            yield
        finally:
            ray.shutdown()


def test_ray_engine_makes_the_bytes_and_manifest_of_the_local_engine(
    jobs: Path, local_out: Path, local_ray: None, tmp_path: Path
) -> None:
    out = tmp_path / "ray"
    assert main(batch(jobs, out, "--engine", "ray", "--workers", "2")) == 0
    assert len(images(local_out)) == IMAGES
    assert images(out) == images(local_out)
    assert len(manifest(out)) == IMAGES and made(out) == made(local_out)
    assert all(e["worker"].startswith("ray:") and e["seconds"] > 0 for e in manifest(out))
    assert ray.is_initialized()


def in_session(sid: int) -> list[int]:
    """The live (not zombie) processes of session `sid`: a command started with start_new_session=True and
    every process it started, Ray's included (Ray's workers get process groups of their own)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and os.getsid(int(entry.name)) == sid:
                if (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                    found.append(int(entry.name))
        except OSError:
            continue
    return found


def wait_until_gone(sid: int, seconds: float = 30) -> None:
    """Wait for every process of session `sid` to exit; SIGKILL (by id) and fail on any still there after
    `seconds`."""
    deadline = time.monotonic() + seconds
    while (left := in_session(sid)) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert not left, f"processes of the batch still running {seconds} s after it ended: {left}"


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc to find the processes Ray left")
def test_a_killed_ray_batch_resumes_without_touching_what_it_wrote(
    jobs: Path, local_out: Path, local_ray: None, ray_tmp: Path, tmp_path: Path
) -> None:
    """SIGKILL to the process group of a batch that started its own Ray part-way (no process of it left after),
    then the same command joining a running Ray cluster: every image, one manifest line each, no partial
    file, the images written before the kill untouched, the local engine's bytes."""
    out = tmp_path / "out"
    command = [sys.executable, "-m", "core.cli", *batch(jobs, out, "--engine", "ray", "--workers", "2")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RAY_TMPDIR": str(ray_tmp)}
    errors = tmp_path / "stderr.txt"
    with errors.open("w") as stderr:
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True)
    try:
        listed = out / "manifest.jsonl"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None:
            if listed.exists() and len(listed.read_text().splitlines()) >= 4:
                break
            time.sleep(0.02)
        assert process.poll() is None, errors.read_text()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        wait_until_gone(process.pid)
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in (out / "images").glob("*.png")}
    assert 4 <= len(before) < IMAGES
    address = ray.get_runtime_context().gcs_address  # the re-run joins a running cluster, as on several hosts
    again = subprocess.run([*command, "--ray-address", address], env=env, capture_output=True, text=True, timeout=240)
    assert again.returncode == 0, again.stderr
    assert f"{len(before)} already done, {IMAGES - len(before)} made now" in again.stdout
    after = images(out)
    assert len(after) == IMAGES and not list((out / "images").glob(".*"))
    assert {name: ((out / "images" / name).stat().st_mtime_ns, after[name]) for name in before} == before
    lines = manifest(out)
    assert len(lines) == IMAGES and len({(e["id"], e["k"]) for e in lines}) == IMAGES
    assert after == images(local_out) and made(out) == made(local_out)


def test_an_actor_that_cannot_build_the_pipeline_is_one_clear_message(
    jobs: Path, local_ray: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """The registry the driver read is not there for the actors (as on a host without the shared folder):
    the actors' RegistryError is the batch's error, as the local engine would show it."""
    registry = tmp_path / "registry.yaml"
    registry.write_text("version: 1\nextends: bundled\n")
    real = core.batch.ray_engine.ray_engine

    def elsewhere(registry_path: str, *args: Any) -> Engine:
        Path(registry_path).unlink()
        return real(registry_path, *args)

    monkeypatch.setattr(core.batch.ray_engine, "ray_engine", elsewhere)
    out = tmp_path / "out"
    assert main(batch(jobs, out, "--engine", "ray", "--workers", "2", "--registry", str(registry))) == 2
    assert [line for line in capsys.readouterr().err.splitlines() if not line.startswith("warning: ")] == [
        f"error: registry file not found: {registry} (given path)",
        "  fix: check the path or create the file",
    ]
    assert manifest(out) == []


def test_an_actor_failing_on_a_call_is_one_line_naming_the_actor(
    jobs: Path, local_ray: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """An error that is not a DiffstackError (the output folder replaced by a file) stops the batch with one
    message naming the actor and the error; the traceback stays in the actor's log."""
    real = core.batch.ray_engine.ray_engine

    def unwritable(*args: Any) -> Engine:
        engine = real(*args)

        def run(pending: list[Pending]) -> Iterable[list[dict[str, Any]]]:
            shutil.rmtree(out / "images")
            (out / "images").write_text("not a folder")
            return engine(pending)

        return run

    monkeypatch.setattr(core.batch.ray_engine, "ray_engine", unwritable)
    out = tmp_path / "out"
    assert main(batch(jobs, out, "--engine", "ray", "--workers", "2")) == 1
    [line, hint] = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("warning:")]
    assert line.startswith("error: Ray actor ray:") and "NotADirectoryError" in line, line
    assert hint.startswith("  fix: its traceback is in the Ray worker logs")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--device", "cuda"], "error: --workers 2 on CUDA needs 2 GPUs; the Ray cluster has 0"),
        (["--device", "cuda:1"], "error: --device cuda:1 with --engine ray: Ray gives each actor its own GPU"),
        (["--workers", "3"], "error: --workers 3 needs 3 CPUs; the Ray cluster has 2"),
    ],
)
def test_workers_the_cluster_cannot_hold_are_refused_before_anything_runs(
    jobs: Path, local_ray: None, tmp_path: Path, capsys: pytest.CaptureFixture, options: list[str], message: str
) -> None:
    out = tmp_path / "out"
    assert main(batch(jobs, out, "--engine", "ray", "--workers", "2", *options)) == 2
    assert message in capsys.readouterr().err
    assert not list((out / "images").iterdir())


def test_a_ray_address_nobody_answers_is_refused_at_once(jobs: Path, tmp_path: Path) -> None:
    """Ray itself would wait for minutes; the engine tries the address first."""
    command = [sys.executable, "-m", "core.cli", *batch(jobs, tmp_path / "out", "--engine", "ray")]
    began = time.monotonic()
    result = subprocess.run([*command, "--ray-address", "127.0.0.1:1"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert "error: cannot reach the Ray cluster at --ray-address 127.0.0.1:1" in result.stderr
    assert time.monotonic() - began < 60


def test_without_ray_the_engine_says_how_to_get_it(
    jobs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails as when Ray is not installed
    assert main(batch(jobs, tmp_path / "out", "--engine", "ray")) == 2
    assert 'error: --engine ray needs Ray: pip install "diffstack[ray]"' in capsys.readouterr().err
