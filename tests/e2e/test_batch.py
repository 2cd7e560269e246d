"""`diffstack batch` with the local engine: bad lines reported and skipped, images checked before they are
trusted, a killed run resumed without touching what it wrote, bytes independent of how the batch ran."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from batch_jobs import PROMPTS, images, manifest, mixed_jobs, write_jobs
from PIL import Image, PngImagePlugin

import core
from core.batch.jobs import Job, read_jobs
from core.batch.plan import plan
from core.cli import main
from core.errors import InputError

pytestmark = pytest.mark.filterwarnings("ignore::core.errors.FewStepsWarning", "ignore::core.errors.SwapWarning")


def recipe_chunk(image: Image.Image) -> PngImagePlugin.PngInfo:
    info = PngImagePlugin.PngInfo()
    info.add_text("diffstack", image.text["diffstack"])  # type: ignore[attr-defined]
    return info


def test_bad_lines_are_reported_with_their_numbers_and_the_others_run(tmp_path: Path, capsys) -> None:
    good = [json.dumps({"prompt": PROMPTS[i % 4], "id": f"g{i}", "steps": 2}) for i in range(15)]
    bad = {
        3: '{"prompt": "a red circle", "steps": 2',
        7: '{"prompt": "a red circle", "stepz": 2}',
        9: '{"prompt": "a red circle", "steps": 0}',
        12: '{"prompt": "a red circle", "steps": 2, "height": 100}',
        18: '{"prompt": "a red circle", "steps": 2, "scheduler": "dimm"}',
    }
    lines = iter(good)
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text("".join((bad[n] if n in bad else next(lines)) + "\n" for n in range(1, 21)))
    out = tmp_path / "out"
    assert main(["batch", str(jobs), "--out", str(out)]) == 3
    reports = [line for line in capsys.readouterr().err.splitlines() if line.startswith(f"{jobs}:")]
    assert [r.split(":")[1] for r in reports] == [f"line {n}" for n in sorted(bad)], reports
    assert "not valid JSON" in reports[0] and "stepz" in reports[1] and "did you mean 'steps'" in reports[1]
    assert "steps" in reports[2] and "height" in reports[3] and "multiple of 8" in reports[3]
    assert "no scheduler plugin named 'dimm'" in reports[4] and "did you mean 'ddim'" in reports[4]
    assert len(images(out)) == 15 and len(manifest(out)) == 15


def test_strict_runs_nothing_when_a_line_cannot_run(tmp_path: Path, capsys) -> None:
    jobs = write_jobs(tmp_path / "jobs.jsonl", [{"prompt": "a red circle", "steps": 2}, {"prompt": 3}])
    assert main(["batch", str(jobs), "--out", str(tmp_path / "out"), "--strict"]) == 2
    error = capsys.readouterr().err
    assert "line 2: prompt: Input should be a valid string" in error and "with --strict nothing runs" in error
    assert not (tmp_path / "out" / "images").exists() or not any((tmp_path / "out" / "images").iterdir())


def test_an_id_used_twice_is_a_bad_line_and_a_missing_id_is_a_hash_of_the_line(tmp_path: Path, capsys) -> None:
    same = {"prompt": "a red circle", "steps": 2, "seed": 4}
    jobs = write_jobs(tmp_path / "jobs.jsonl", [{**same, "id": "a"}, {**same, "id": "a", "seed": 5}, same])
    assert main(["batch", str(jobs), "--out", str(tmp_path / "out")]) == 3
    assert "line 2: id 'a' is already used by line 1" in capsys.readouterr().err
    hashed = Job.model_validate(same).default_id()
    assert sorted(images(tmp_path / "out")) == sorted(["a-0.png", f"{hashed}-0.png"])
    assert Job.model_validate({**same, "seed": 5}).default_id() != hashed


def test_bytes_do_not_depend_on_the_order_of_the_lines(tmp_path: Path) -> None:
    jobs = mixed_jobs(8)
    shuffled = jobs[:]
    random.Random(0).shuffle(shuffled)
    for name, content in (("a", jobs), ("b", shuffled)):
        assert main(["batch", str(write_jobs(tmp_path / f"{name}.jsonl", content)), "--out", str(tmp_path / name),
                     "--batch-size", "3"]) == 0  # fmt: skip
    assert images(tmp_path / "a") == images(tmp_path / "b") and len(images(tmp_path / "a")) == 16
    listed = [sorted((e["id"], e["k"], e["file"], e["sha256"], json.dumps(e["recipe"])) for e in manifest(tmp_path / n))
              for n in ("a", "b")]  # fmt: skip
    assert listed[0] == listed[1]


def test_at_batch_size_one_an_image_is_the_one_generate_makes(tmp_path: Path) -> None:
    job = {"prompt": PROMPTS[0], "id": "one", "seed": 7, "num_images": 2, "steps": 3, "negative_prompt": "a square"}
    assert main(["batch", str(write_jobs(tmp_path / "j.jsonl", [job])), "--out", str(tmp_path / "o"),
                 "--batch-size", "1"]) == 0  # fmt: skip
    pipe = core.load_registry().build()
    for k in range(2):
        made = pipe(job["prompt"], seed=7 + k, steps=3, negative_prompt="a square", progress=False).images[0]
        with Image.open(tmp_path / "o" / "images" / f"one-{k}.png") as written:
            assert np.array_equal(np.asarray(written), np.asarray(made))
            assert json.loads(written.text["diffstack"])["seed"] == 7 + k


def test_damaged_and_foreign_images_are_redone_and_the_rest_left_alone(tmp_path: Path) -> None:
    jobs, out = write_jobs(tmp_path / "jobs.jsonl", mixed_jobs(4)), tmp_path / "out"
    assert main(["batch", str(jobs), "--out", str(out)]) == 0
    original = images(out)
    folder = out / "images"
    (folder / "job00-0.png").write_bytes(original["job00-0.png"][:300])  # cut short
    (folder / "job01-1.png").write_bytes(original["job02-0.png"])  # another job's image
    (folder / ".job03-0.png.abc.tmp").write_bytes(b"partial")  # left by a killed write
    edited = Image.open(folder / "job03-1.png")
    edited.putpixel((0, 0), (1, 2, 3))
    edited.save(folder / "job03-1.png", pnginfo=recipe_chunk(edited))  # same recipe, other pixels
    with (out / "manifest.jsonl").open("a") as f:
        f.write('{"id": "job03", "k"')  # a line cut short
    redone = ("job00-0.png", "job01-1.png", "job03-1.png")
    untouched = {p.name: p.stat().st_mtime_ns for p in folder.iterdir() if p.name not in redone}
    untouched.pop(".job03-0.png.abc.tmp")
    time.sleep(0.01)
    assert main(["batch", str(jobs), "--out", str(out)]) == 0
    assert images(out) == original
    assert {name: (folder / name).stat().st_mtime_ns for name in untouched} == untouched
    lines = manifest(out)
    assert sorted((e["id"], e["k"]) for e in lines) == sorted((f"job{i:02d}", k) for i in range(4) for k in range(2))


def test_a_killed_batch_resumes_without_touching_what_it_wrote(tmp_path: Path) -> None:
    """SIGKILL part-way, then the same command: every image, one manifest line each, no partial file, the
    images written before the kill untouched, and the same bytes as an uninterrupted run."""
    jobs, out = write_jobs(tmp_path / "jobs.jsonl", mixed_jobs(24)), tmp_path / "out"
    command = [sys.executable, "-m", "core.cli", "batch", str(jobs), "--out", str(out), "--batch-size", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    listed = out / "manifest.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if listed.exists() and len(listed.read_text().splitlines()) >= 8:
            break
        time.sleep(0.05)
    assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
    process.send_signal(signal.SIGKILL)
    process.wait()
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in (out / "images").glob("*.png")}
    assert 8 <= len(before) < 48
    assert subprocess.run(command, env=env, capture_output=True).returncode == 0
    after = images(out)
    assert len(after) == 48 and not list((out / "images").glob(".*"))
    assert {name: ((out / "images" / name).stat().st_mtime_ns, after[name]) for name in before} == before
    lines = manifest(out)
    assert len(lines) == 48 and len({(e["id"], e["k"]) for e in lines}) == 48
    assert main(["batch", str(jobs), "--out", str(tmp_path / "again"), "--batch-size", "2"]) == 0
    assert images(tmp_path / "again") == after


def test_one_seed_per_image(tmp_path: Path) -> None:
    """`seed=[…]` gives image j the noise of seed[j]; a list of consecutive seeds is the one-seed call."""
    pipe = core.load_registry().build()
    listed = pipe(PROMPTS[:2], seed=[5, 6], steps=2, progress=False)
    assert torch.equal(listed.pixels, pipe(PROMPTS[:2], seed=5, steps=2, progress=False).pixels)
    assert listed.settings.seeds == [5, 6] and listed.settings.seed == 5
    with pytest.raises(InputError, match="one integer in .* per image \\(2\\)"):
        pipe(PROMPTS[:2], seed=[5], steps=2)


def test_the_outline_the_ray_driver_reads_jobs_with_resolves_them_as_the_built_pipeline(tmp_path: Path) -> None:
    """`Registry.outline` (no tensor data read) plans the same calls, recipes included, as the built pipeline."""
    registry = core.load_registry()
    outline = registry.outline()
    assert outline.device.type == "meta" and next(outline.denoiser.parameters()).is_meta
    jobs = write_jobs(tmp_path / "jobs.jsonl", mixed_jobs(6) + [{"prompt": "x", "height": 100}])
    read = [read_jobs(jobs, pipe) for pipe in (outline, registry.build())]
    assert read[0][1] == read[1][1] and [b.line for b in read[0][1]] == [7]
    assert plan(read[0][0], 3, "r") == plan(read[1][0], 3, "r")


def test_what_a_first_user_tripped_over(tmp_path: Path, capsys) -> None:
    """--out that is a file: one message, exit 2; --workers without ray: refused; a byte-order mark; ids that
    differ only in case; a job over the pipeline's per-call limit of 64; warnings grouped with their lines;
    a killed run's temporary manifest removed; files readable by others as a plain write would make them."""
    jobs = write_jobs(tmp_path / "jobs.jsonl", [{"prompt": "a red circle", "steps": 2}])
    assert main(["batch", str(jobs), "--out", str(jobs)]) == 2
    assert "cannot write to output folder --out" in capsys.readouterr().err
    assert main(["batch", str(jobs), "--out", str(tmp_path / "o"), "--workers", "2"]) == 2
    assert "--workers applies to --engine ray" in capsys.readouterr().err
    lines = [{"prompt": "a red circle", "id": "A", "steps": 1, "num_images": 65}, {"prompt": "x", "id": "a"},
             {"prompt": "a blue square", "id": "b", "steps": 1}]  # fmt: skip
    jobs.write_bytes(b"\xef\xbb\xbf" + "".join(json.dumps(line) + "\n" for line in lines).encode())
    out = tmp_path / "out"
    out.mkdir()
    (out / ".manifest.jsonl.x1y2.tmp").write_text("left by a killed run")
    previous = os.umask(0o022)
    try:
        assert main(["batch", str(jobs), "--out", str(out), "--batch-size", "33"]) == 3
    finally:
        os.umask(previous)
    err = capsys.readouterr().err
    assert "line 2: id 'a' is already used by line 1" in err and "line 1:" not in err.replace("by line 1", "")
    assert "warning: " + str(jobs) + ":lines 1, 3: ddim at 1 step: on pipeline 'shapes-tiny'" in err
    assert len(images(out)) == 66 and not list(out.glob(".*.tmp"))
    assert (out / "manifest.jsonl").stat().st_mode & 0o777 == 0o644
