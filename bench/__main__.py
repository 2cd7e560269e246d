"""`python -m bench`: diffstack against diffusers, in one process, on the same tensors.

    python -m bench [--device cpu|cuda] [--only SECTION ...] [--repeats N] [--eager] [--json]

Sections: schedulers (step overhead per update rule), unet (forward pass), txt2img (full generation), load
(checkpoint loading, fresh processes); only when named in `--only`: kernels (3×3 convolutions against
torch's, CPU) and load-sdxl (loading an SDXL base-sized checkpoint: writes 6.9 GB of files to the temporary
folder, needs ~8 GB of memory per load; ~2–3 minutes on two CPU cores) and batch (`diffstack batch`
throughput: batched calls against one image per call, and Ray with 2 actors against 1 when Ray is installed;
bench/batch.py). Every figure is a median over
interleaved repeats (a load: one run each); `ratio` is ours / reference (below 1: faster).
The unet and txt2img sections time diffstack as built ("ours") and on its fast path ("ours fast",
`core.performance.fast`; packing or compiling happens in an untimed first call).
SD 1.5-architecture cases are long: its U-Net forward is timed `repeats // 2` times, its generation
`repeats // 3` times (each at least once; `--repeats 6` doubles both), the latter on the fast path only
unless `--eager` (the eager U-Net row tells the same story for ~90 s less on the CPU); shapes-tiny cases are
timed 10× and 2× `repeats` times. The CPU run takes ~5 minutes on two cores (bench/RESULTS.md). Needs the
test extras (diffusers, transformers, scipy).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

from bench import batch, kernels, models, pipelines, schedulers
from bench.row import Row
from core.devices import resolve_device
from core.performance import fast as fast_path

SECTIONS = ("schedulers", "unet", "txt2img", "load", "kernels", "load-sdxl", "batch")
DEFAULT_SECTIONS = SECTIONS[:4]  # kernels, load-sdxl and batch: on request


def machine(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    cpu = platform.processor() or platform.machine()
    model = (
        next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")
            ),
            cpu,
        )
        if Path("/proc/cpuinfo").exists()
        else cpu
    )
    return f"{model}, {torch.get_num_threads()} threads, torch {torch.__version__}"


def txt2img_rows(device: torch.device, dtype: torch.dtype, repeats: int, eager: bool) -> list[Row]:
    size, steps = (512, 20) if device.type == "cuda" else (256, 10)
    cases = [
        (
            f"SD 1.5 arch, {size}², {steps} DDIM steps, CFG 7.5",
            pipelines.sd15_pipeline,
            size,
            steps,
            max(1, repeats // 3),
            eager,
        ),
        ("shapes-tiny, 64², 20 DDIM steps, CFG 5", pipelines.shapes_tiny_pipeline, 64, 20, 2 * repeats, True),
    ]
    out = []
    for name, build, size, steps, runs, with_eager in cases:
        ours = build(device, dtype)
        result = pipelines.compare(ours, size, steps, runs, fast_path(device), eager=with_eager)
        theirs = result["results"]["diffusers"]
        for label, measured in result["results"].items():
            if label != "diffusers":
                out.append(
                    Row(
                        "txt2img",
                        f"{name} [{label}]",
                        measured.median,
                        theirs.median,
                        measured.peak_bytes,
                        theirs.peak_bytes,
                        f"max |Δ| {result['difference'][label]}/255",
                    )
                )
        del ours, result
    return out


def seconds(value: float) -> str:
    for unit, scale in (("s", 1.0), ("ms", 1e-3)):
        if value >= scale:
            return f"{value / scale:.3f} {unit}"
    return f"{value / 1e-6:.1f} µs"


def table(rows: list[Row]) -> str:
    def size(n: int | None) -> str:
        return "" if n is None else f"{n / 2**30:.2f} GiB"

    lines = [
        f"{'section':<16}{'case':<52}{'ours':>12}{'diffusers':>12}{'ratio':>7}{'ours peak':>11}{'diff. peak':>11}  note"
    ]
    for r in rows:
        lines.append(
            f"{r.section:<16}{r.case:<52}{seconds(r.ours):>12}{seconds(r.reference):>12}{r.ratio:>7.3f}"
            f"{size(r.ours_peak):>11}{size(r.reference_peak):>11}  {r.note}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, help="run only these sections")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats per measurement (default 3)")
    parser.add_argument(
        "--eager",
        action="store_true",
        help="also time the eager SD 1.5-architecture txt2img (about 90 s more on two CPU cores)",
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # diffusers' and transformers' deprecation notices
    device = resolve_device(args.device)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    started = time.perf_counter()
    rows: list[Row] = []
    for section in args.only or DEFAULT_SECTIONS:
        print(f"[bench] {section} … ({time.perf_counter() - started:.0f} s so far)", file=sys.stderr, flush=True)
        if section == "schedulers":
            rows += schedulers.rows(device, args.repeats)
        elif section == "unet":
            rows += models.unet_rows(device, dtype, args.repeats)
        elif section == "txt2img":
            rows += txt2img_rows(device, dtype, args.repeats, args.eager)
        elif section == "kernels":
            rows += kernels.rows(device, args.repeats)
        elif section == "batch":
            rows += batch.rows(device, args.repeats)
        else:
            load = models.load_rows if section == "load" else models.load_sdxl_rows
            with tempfile.TemporaryDirectory() as folder:
                rows += load(device, Path(folder))
    header = {
        "machine": machine(device),
        "device": device.type,
        "dtype": str(dtype).removeprefix("torch."),
        "seconds": round(time.perf_counter() - started, 1),
    }
    if args.json:
        print(json.dumps({**header, "rows": [r.as_dict() for r in rows]}, indent=1))
    else:
        print(f"{header['machine']}, {header['dtype']}, {header['seconds']} s in all")
        print(table(rows))


if __name__ == "__main__":
    main()
