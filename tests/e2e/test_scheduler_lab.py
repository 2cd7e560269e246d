"""The scheduler lab (`diffstack eval schedulers`, `core/scheduler_lab.py`): the command writes its report, the
error falls with NFE, and on a model whose ODE is smooth the fitted orders are the rules' theoretical ones."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

import core
from core.cli import main
from core.scheduler_lab import Captions, Cell, LabResult, run_lab


def test_the_lab_command_writes_every_file_and_the_error_falls_with_nfe(tmp_path: Path, capsys) -> None:
    out = tmp_path / "lab"
    command = ["eval", "schedulers", "--schedulers", "ddim,euler", "--nfe", "4,16", "--n", "4", "--out", str(out)]
    code = main([*command, "--cache", str(tmp_path / "cache")])
    printed = capsys.readouterr().out
    assert code == 0 and "empirical order" in printed and "reference: dpmpp-2m, 500 steps" in printed
    names = {"results.csv", "results.json", "contact_sheet.png", "error_vs_nfe.png", "quality_vs_nfe.png"}
    assert {p.name for p in out.iterdir()} == names
    cells = json.loads((out / "results.json").read_text())["cells"]
    assert [(c["scheduler"], c["nfe"], c["calls"]) for c in cells] == [
        ("ddim", 4, 4), ("ddim", 16, 16), ("euler", 4, 4), ("euler", 16, 16)
    ]  # fmt: skip
    for rule in ("ddim", "euler"):
        low, high = (c for c in cells if c["scheduler"] == rule)
        assert high["latent_rms"] < low["latent_rms"] / 3 and high["image_rms"] < low["image_rms"]
        assert {"seen all three", "held-out all three"} <= set(high)


def test_lab_only_options_without_schedulers_are_refused(capsys) -> None:
    assert main(["eval", "--schedulers", "ddim"]) == 2
    assert "belong to `diffstack eval schedulers`" in capsys.readouterr().err


def test_an_unknown_scheduler_is_named_before_anything_runs(capsys) -> None:
    assert main(["eval", "schedulers", "--schedulers", "ddim,dimm", "--nfe", "4"]) == 2
    error = capsys.readouterr().err
    assert "no scheduler plugin named 'dimm' (did you mean 'ddim'?)" in error and "installed: ddim, ddpm" in error


class GaussianDenoiser(torch.nn.Module):
    """The exact ε-prediction when every latent element is N(μ, s²) data: E[ε | x_t] = σ(x_t − aμ) / (a²s² + σ²),
    a = √ᾱ_t, σ = √(1 − ᾱ_t) at integer timestep t — an ODE smooth in t, where solvers show their true order."""

    mu, s = 0.3, 0.5

    def __init__(self, like: torch.nn.Module, alphas_cumprod: torch.Tensor) -> None:
        super().__init__()
        self.in_channels, self.context_dim, self.prediction_type = like.in_channels, like.context_dim, "epsilon"
        self.alphas_cumprod = alphas_cumprod.double()

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(timestep).reshape(-1)[0]
        assert float(t) == round(float(t)), "the test runs rules with integer timesteps only"
        alpha_bar = self.alphas_cumprod[int(t)]
        a, sigma = alpha_bar.sqrt(), (1 - alpha_bar).sqrt()
        eps = sigma * (sample.double() - a * self.mu) / (a**2 * self.s**2 + sigma**2)
        return eps.to(sample.dtype)


@pytest.mark.filterwarnings("ignore::core.errors.SwapWarning")
def test_on_a_smooth_ode_the_fitted_orders_are_the_theoretical_ones(tiny_pipeline: core.Pipeline) -> None:
    """DDIM is first order, DPM-Solver++(2M) second order (Lu et al. 2022): ±0.3 over 40–320 calls, where the
    steps in λ have become small enough (`linspace` timesteps make the last ones large at fewer calls)."""
    schedule = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012, "clip_sample": False}
    scheduler = core.create("scheduler", "ddim", **schedule)  # clipping x̂0 would make the ODE non-smooth
    denoiser = GaussianDenoiser(tiny_pipeline.denoiser, scheduler.alphas_cumprod)
    pipe = dataclasses.replace(tiny_pipeline, denoiser=denoiser, scheduler=scheduler)
    captions = Captions(["a red circle"] * 2, ["seen"] * 2, [{}] * 2)
    result = run_lab(pipe, ["ddim", "dpmpp-2m"], [40, 80, 160, 320], captions, guidance_scale=1.0)
    orders = {name: order.order for name, order in result.orders().items()}
    assert abs(orders["ddim"] - 1) <= 0.3 and abs(orders["dpmpp-2m"] - 2) <= 0.3, orders


def test_without_matplotlib_the_report_skips_the_plots_and_says_how_to_get_them(
    tiny_pipeline: core.Pipeline, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from core import scheduler_lab_report as report

    real = report.importlib.util.find_spec
    monkeypatch.setattr(report.importlib.util, "find_spec", lambda name: None if name == "matplotlib" else real(name))
    result = run_lab(tiny_pipeline, ["euler"], [4], Captions(["a red circle"], ["seen"], [{}]), reference_steps=20)
    written = report.write(result, tmp_path)
    assert [p.name for p in written] == ["results.csv", "results.json", "contact_sheet.png"]
    assert report.PLOT_HINT == 'plots need matplotlib: pip install "diffstack[plot]"'


def test_the_reference_runs_are_cached_per_weights_captions_and_seed(
    tiny_pipeline: core.Pipeline, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from core import scheduler_lab

    runs: list[str] = []
    real = scheduler_lab._run
    monkeypatch.setattr(
        scheduler_lab, "_run", lambda pipe, name, *a, **k: runs.append(name) or real(pipe, name, *a, **k)
    )
    captions = Captions(["a red circle"], ["seen"], [{}])
    first = run_lab(tiny_pipeline, ["euler"], [4], captions, cache=tmp_path, reference_steps=20)
    second = run_lab(tiny_pipeline, ["euler"], [4], captions, cache=tmp_path, reference_steps=20)
    assert runs == ["dpmpp-2m"] * 3 + ["euler", "euler"]  # two endpoints and the half-step run, once
    assert [c.latent_rms for c in first.cells] == [c.latent_rms for c in second.cells]
    assert first.reference_convergence == second.reference_convergence
    run_lab(tiny_pipeline, ["euler"], [4], captions, seed=1, cache=tmp_path, reference_steps=20)  # a new reference
    assert runs.count("dpmpp-2m") == 6 and len(list(tmp_path.iterdir())) == 2
    for file in tmp_path.iterdir():
        file.write_bytes(file.read_bytes()[:100])  # a run killed while writing the cache
    again = run_lab(tiny_pipeline, ["euler"], [4], captions, cache=tmp_path, reference_steps=20)
    assert runs.count("dpmpp-2m") == 9 and [c.latent_rms for c in again.cells] == [c.latent_rms for c in first.cells]


def test_generate_warns_below_the_steps_a_rule_needs_on_this_pipeline(tmp_path: Path, capsys) -> None:
    """The bundled shapes-tiny declares the lab's `fewest_steps`; fewer steps get one warning line, no refusal."""
    prompt = "a large red circle on a blue background"
    assert main(["generate", prompt, "--scheduler", "dpmpp-2m", "--steps", "8", "--out", str(tmp_path / "a.png")]) == 0
    assert (
        capsys.readouterr().err.count(
            "warning: dpmpp-2m at 8 steps: on pipeline 'shapes-tiny' it draws the prompt from 15 steps"
        )
        == 1
    )
    assert main(["generate", prompt, "--scheduler", "dpmpp-2m", "--steps", "15", "--out", str(tmp_path / "b.png")]) == 0
    assert "warning: dpmpp-2m" not in capsys.readouterr().err


def test_fewest_steps_naming_no_installed_scheduler_is_a_validate_problem(tmp_path: Path) -> None:
    registry = tmp_path / "registry.yaml"
    registry.write_text(
        "version: 1\nextends: bundled\npipelines:\n  mine:\n    encoder: shapes-vae\n    denoiser: shapes-unet\n"
        "    text: shapes-clip\n    scheduler: {plugin: ddim}\n    sampler: {plugin: cfg}\n"
        "    fewest_steps: {dimm: 8}\n"
    )
    problems = core.load_registry(registry).check_parts()
    assert problems == ["pipeline 'mine': fewest_steps names no installed scheduler: 'dimm' (did you mean 'ddim'?)"]


def test_the_suggested_fewest_steps_are_where_quality_holds_from_there_on() -> None:
    def cell(name: str, nfe: int, seen: float, held_out: float) -> Cell:
        accuracy = {"seen": {"all three": seen}, "held-out": {"all three": held_out}}
        return Cell(name, nfe, nfe, nfe, 0.1, False, "x0", 0.1, 1.0, accuracy)

    captions = Captions(["a"] * 4, ["seen"] * 3 + ["held-out"], [{}] * 4)
    cells = [cell("a", 8, 0.9, 0.9), cell("a", 15, 0.6, 1.0), cell("a", 20, 1.0, 0.5), cell("a", 30, 1.0, 1.0)]
    cells += [cell("b", 8, 1.0, 1.0), cell("b", 20, 1.0, 1.0), cell("c", 8, 1.0, 1.0), cell("c", 20, 0.5, 0.5)]
    result = LabResult("p", 5.0, 0, captions, "ref", 0.0, cells, {})
    assert result.fewest_steps() == {"a": 20, "b": 8}  # a: 0.875 at 20, 0.7 at 15; c fails at its largest
