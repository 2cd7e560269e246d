"""`python -m bench` runs from a checkout and reports ours against diffusers (the scheduler section only:
the other sections build SD 1.5-sized models and belong to the benchmark run, not the test suite), and the
GPU script `bench.gpu` runs, small, on the CPU."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("diffusers")
ROOT = Path(__file__).resolve().parents[2]


def test_bench_prints_json_rows_with_ratios():
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--only", "schedulers", "--repeats", "1", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert report["device"] == "cpu" and report["machine"]
    rules = [row["case"].split()[0] for row in report["rows"]]
    assert rules == ["ddpm", "ddim", "lms", "euler", "euler-ancestral", "dpmpp-2m"]
    for row in report["rows"]:
        assert row["ours"] > 0 and row["reference"] > 0
        assert row["ratio"] == pytest.approx(row["ours"] / row["reference"])


def test_bench_rejects_an_unknown_section():
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--only", "everything"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2 and "invalid choice: 'everything'" in done.stderr


@pytest.mark.slow
def test_gpu_script_runs_small_on_the_cpu():
    """bench/gpu.py is the one script a lent GPU machine runs; its logic is proven here, small and in float32."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.gpu",
            "--device",
            "cpu",
            "--size",
            "64",
            "--steps",
            "1",
            "2",
            "--repeats",
            "1",
            "--variants",
            "diffusers",
            "diffstack",
            "diffstack-fast",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    assert [r["variant"] for r in results] == ["diffusers", "diffstack", "diffstack-fast"]
    for r in results:
        assert r["s_per_image"] > 0 and r["peak_gib"] > 0
        assert math.isfinite(r["it_s"]) and math.isfinite(r["of_bound"])  # a difference of two short, noisy runs
    assert all(r["max_diff_vs_diffusers"] < 0.02 for r in results[1:])  # same weights, same image (in [-1, 1])
