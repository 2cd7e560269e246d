"""The scheduler lab's report: a table on stdout, `results.csv` and `results.json`, and — with matplotlib (the
`diffstack[plot]` extra) — `error_vs_nfe.png`, `quality_vs_nfe.png` and `contact_sheet.png` (schedulers × NFE,
the first caption). Without matplotlib the plots are skipped with one line saying how to get them; the
contact sheet needs only PIL.
"""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path
from typing import Any

import torch

from core.scheduler_lab import LabResult
from core.training.evaluate import labelled_grid

PLOT_HINT = 'plots need matplotlib: pip install "diffstack[plot]"'
COLUMNS = (
    "scheduler",
    "nfe",
    "steps",
    "calls",
    "seconds_per_image",
    "stochastic",
    "endpoint",
    "latent_rms",
    "image_rms",
)


def rows(result: LabResult) -> list[dict[str, Any]]:
    """One flat row per scheduler × NFE: the cell's measurements and `<group> <attribute>` accuracies."""
    out = []
    for cell in result.cells:
        row: dict[str, Any] = {name: getattr(cell, name) for name in COLUMNS}
        for group, accuracy in cell.accuracy.items():
            row |= {f"{group} {name}": value for name, value in accuracy.items()}
        out.append(row)
    return out


def table(result: LabResult) -> str:
    """The text table: cost, solver error (latents; images in 1/255) and "all three" accuracy per group, then
    the empirical orders and the reference's convergence."""
    groups = list(dict.fromkeys(g for c in result.cells for g in c.accuracy))
    head = f"{'scheduler':<22}{'nfe':>5}{'calls':>6}{'s/img':>8}{'latent rms':>12}{'image rms':>11}"
    lines = [head + "".join(f"{'all3 ' + g:>15}" for g in groups)]
    for c in result.cells:
        error = "   stochastic" + " " * 10 if c.stochastic else f"{c.latent_rms:>12.4f}{c.image_rms:>11.2f}"
        quality = "".join(f"{c.accuracy[g]['all three']:>15.1%}" for g in groups)
        lines.append(f"{c.scheduler:<22}{c.nfe:>5}{c.calls:>6}{c.seconds_per_image:>8.3f}{error}{quality}")
    orders = result.orders()
    lines.append("empirical order (fit of log latent error on log calls): " + ", ".join(
        f"{name} {o.order:.2f} (calls {o.calls[0]}–{o.calls[-1]})" for name, o in orders.items()
    ))  # fmt: skip
    if result.exact_orders:
        lines.append("on the exact ODE of Gaussian data (core.gaussian_ode): " + ", ".join(
            f"{name} {o.order:.2f} (calls {o.calls[0]}–{o.calls[-1]})" for name, o in result.exact_orders.items()
        ))  # fmt: skip
    lines += [f"not fitted on the exact ODE: {name}: {error}" for name, error in result.exact_unfitted.items()]
    lines.append(
        f"reference: {result.reference}; its distance to half as many steps: {result.reference_convergence:.4f} "
        "(latent rms)"
    )
    if groups:
        fewest = ", ".join(f"{name}: {steps}" for name, steps in result.fewest_steps().items())
        lines.append(f"for the registry (all three right ≥ 80 % from there on): fewest_steps: {{{fewest}}}")
    return "\n".join(lines)


def write(result: LabResult, out: Path) -> list[Path]:
    """Write every file of the report into `out` (created if needed) → the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    flat = rows(result)
    fields = list(dict.fromkeys(k for row in flat for k in row))
    with (out / "results.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fields)
        writer.writeheader()
        writer.writerows(flat)
    summary = {
        "pipeline": result.pipeline,
        "guidance_scale": result.guidance_scale,
        "seed": result.seed,
        "captions": [
            {"text": t, "group": g} for t, g in zip(result.captions.texts, result.captions.groups, strict=True)
        ],
        "reference": result.reference,
        "reference_convergence": result.reference_convergence,
        "orders": {name: {"order": o.order, "calls": list(o.calls)} for name, o in result.orders().items()},
        "exact_orders": {name: {"order": o.order, "calls": list(o.calls)} for name, o in result.exact_orders.items()},
        "exact_unfitted": result.exact_unfitted,
        "fewest_steps": result.fewest_steps(),
        "cells": flat,
    }
    (out / "results.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    written = [out / "results.csv", out / "results.json", contact_sheet(result, out / "contact_sheet.png")]
    if importlib.util.find_spec("matplotlib") is not None:
        written += [error_plot(result, out / "error_vs_nfe.png"), quality_plot(result, out / "quality_vs_nfe.png")]
    return written


def contact_sheet(result: LabResult, path: Path) -> Path:
    """Schedulers (rows) × NFE (columns): the first caption's image, labelled."""
    names = list(dict.fromkeys(c.scheduler for c in result.cells))
    nfes = list(dict.fromkeys(c.nfe for c in result.cells))
    images = torch.stack([result.images[(name, nfe)] for name in names for nfe in nfes])
    labels = [f"{name} (NFE {', '.join(map(str, nfes))})" for name in names]
    labelled_grid(images, labels, len(nfes), label_width=320).save(path)
    return path


def style(result: LabResult, name: str) -> dict[str, Any]:
    """One colour and marker per scheduler, the same in both plots (20 colours, then the markers tell apart)."""
    from matplotlib import colormaps

    index = list(dict.fromkeys(c.scheduler for c in result.cells)).index(name)
    return {"color": colormaps["tab20"](index % 20), "marker": "osD^v<>"[index // 20 % 7]}


def error_plot(result: LabResult, path: Path) -> Path:
    """Log-log latent error against denoiser calls, one line per deterministic rule, its order (and its order on
    the exact ODE) in the legend."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    orders, exact = result.orders(), result.exact_orders
    figure, axes = plt.subplots(figsize=(7, 5))
    for name in dict.fromkeys(c.scheduler for c in result.cells if not c.stochastic):
        points = [(c.calls, c.latent_rms) for c in result.cells if c.scheduler == name and c.latent_rms]
        fits = [f"{what} {fitted[name].order:.2f}" for what, fitted in (("order", orders), ("exact ODE", exact))
                if name in fitted]  # fmt: skip
        label = f"{name} ({'; '.join(fits)})" if fits else name
        axes.plot([calls for calls, _ in points], [error for _, error in points], label=label, **style(result, name))
    axes.set(xscale="log", yscale="log", xlabel="denoiser calls (NFE)", ylabel="RMS latent error vs reference")
    axes.set_title(f"{result.pipeline}: solver error (reference {result.reference})", fontsize=9)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def quality_plot(result: LabResult, path: Path) -> Path:
    """ "All three" accuracy against denoiser calls (log x), one line per rule and group."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 5))
    groups = list(dict.fromkeys(g for c in result.cells for g in c.accuracy))
    for name in dict.fromkeys(c.scheduler for c in result.cells):
        cells = [c for c in result.cells if c.scheduler == name]
        for group, line in zip(groups, ("-", "--", ":"), strict=False):
            axes.plot([c.calls for c in cells], [100 * c.accuracy[group]["all three"] for c in cells],
                      linestyle=line, label=f"{name}, {group}", **style(result, name))  # fmt: skip
    axes.set(xscale="log", xlabel="denoiser calls (NFE)", ylabel="images right on all three (%)", ylim=(0, 102))
    axes.set_title(f"{result.pipeline}: quality read back by the analyser", fontsize=9)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=7, ncol=2)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
