"""The scheduler lab (`diffstack eval schedulers`, `core/scheduler_lab.py`): the command writes its report, the
error falls with NFE, and on the exact ODE of Gaussian data the fitted orders are the rules' theoretical ones."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

import core
from core.cli import main
from core.gaussian_ode import GaussianDataDenoiser
from core.scheduler_lab import KARRAS, Captions, Cell, LabResult, exact_order, rms, run_lab


def test_the_lab_command_writes_every_file_and_the_error_falls_with_nfe(tmp_path: Path, capsys) -> None:
    out = tmp_path / "lab"
    command = ["eval", "schedulers", "--schedulers", "ddim,euler", "--nfe", "4,16", "--n", "4", "--out", str(out)]
    code = main([*command, "--cache", str(tmp_path / "cache")])
    printed = capsys.readouterr().out
    assert code == 0 and "empirical order" in printed and "reference: dpmpp-2m, 500 steps" in printed
    assert "on the exact ODE of Gaussian data (core.gaussian_ode): ddim 0.9" in printed and "euler+karras " in printed
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


@pytest.mark.filterwarnings("ignore::core.errors.SwapWarning")
def test_on_the_exact_ode_the_fitted_orders_are_the_theoretical_ones(tiny_pipeline: core.Pipeline) -> None:
    """DDIM and Euler are first order, Heun second (±0.3 over 40–320 calls, against the exact solution).
    DPM-Solver++(2M) is second order where its steps in λ are small, but `linspace` timesteps on a 1000-step
    schedule keep its last steps large (the very last is ≥ ½·log 2 in λ at any count), which costs it about
    0.4 here: it must still beat its own first-order variant by as much as a second-order rule should. With
    Karras σ spacing, whose steps in λ all shrink, it is second order within ±0.3."""
    orders = {name: exact_order(tiny_pipeline, name).order for name in ("ddim", "euler", "heun", "dpmpp-2m")}
    assert abs(orders["ddim"] - 1) <= 0.3 and abs(orders["euler"] - 1) <= 0.3 and abs(orders["heun"] - 2) <= 0.3
    schedule = {k: v for k, v in tiny_pipeline.scheduler.config.model_dump().items() if k.startswith("beta_")}
    first_order_rule = core.create("scheduler", "dpmpp-2m", **schedule, solver_order=1)
    first_order = exact_order(dataclasses.replace(tiny_pipeline, scheduler=first_order_rule), "dpmpp-2m").order
    assert abs(first_order - 1) <= 0.3 and orders["dpmpp-2m"] >= first_order + 0.5, (orders, first_order)
    karras = exact_order(tiny_pipeline, "dpmpp-2m", settings=KARRAS).order  # every step in λ shrinks with n
    assert abs(karras - 2) <= 0.3, karras


@pytest.mark.filterwarnings("ignore::core.errors.SwapWarning")
def test_diffusers_ddim_and_pndm_do_not_converge_with_linspace_spacing(tiny_pipeline: core.Pipeline) -> None:
    """As the README says: their step goes to t − T/n, which is not the next `linspace` timestep."""
    for name in ("diffusers-ddim", "diffusers-pndm"):
        assert exact_order(tiny_pipeline, name).order < 0.5, name


def test_the_exact_solution_passes_through_the_start_and_ends_on_its_denoised_state() -> None:
    """The Gaussian-data oracle's exact state at the start timestep is the start itself, and its prediction
    there is consistent: x̂0 from the predicted ε is the state's posterior mean."""
    alphas_cumprod = torch.linspace(0.999, 0.01, 1000)
    like = type("Like", (), {"prediction_type": "epsilon"})()
    oracle = GaussianDataDenoiser(like, alphas_cumprod)
    start = torch.randn(2, 4, 3, 3, dtype=torch.float64)
    eps = oracle(start, torch.tensor(700.0), torch.zeros(2, 1, 1))
    assert torch.allclose(oracle.exact_state(700), start)
    a, sigma = oracle.scales(700)
    assert a == pytest.approx(alphas_cumprod[700].sqrt().item()) and sigma**2 == pytest.approx(1 - a**2)
    assert torch.allclose((start - sigma * eps) / a, start * a * 0.25 / (a**2 * 0.25 + sigma**2) + 0.3 * sigma**2 /
                          (a**2 * 0.25 + sigma**2))  # x̂0 = E[x0 | x_t] for N(0.3, 0.5²) data  # fmt: skip
    assert torch.allclose(oracle.exact_state(699.5), (oracle.exact_state(699) + oracle.exact_state(700)) / 2, atol=1e-3)
    ends = oracle.exact_ends()
    assert torch.equal(ends["state at t = 0"], oracle.exact_state(0))
    assert 0 < rms(ends["x̂0 at t = 0"], ends["σ = 0"]) < 0.01 * rms(ends["σ = 0"], torch.zeros_like(start))
    with pytest.raises(core.DiffstackError, match="timesteps 0..999"):
        oracle(start, torch.tensor(1000.0), torch.zeros(2, 1, 1))


@pytest.mark.filterwarnings("ignore::core.errors.SwapWarning")
def test_a_rule_that_cannot_run_the_exact_fit_is_reported_and_the_lab_goes_on(tiny_pipeline: core.Pipeline) -> None:
    """A rule limited to fewer steps than the exact fit's budgets (diffusers' LCM: 50) is named with its error."""
    from core import scheduler_lab_report

    captions = Captions(["a red circle"], ["seen"], [{}])
    result = run_lab(tiny_pipeline, ["euler"], [4], captions, reference_steps=20, exact_nfe=(4, 2000))
    assert not result.exact_orders and "euler" in result.exact_unfitted
    assert "not fitted on the exact ODE: euler: " in scheduler_lab_report.table(result)


def test_without_matplotlib_the_report_skips_the_plots_and_says_how_to_get_them(
    tiny_pipeline: core.Pipeline, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from core import scheduler_lab_report as report

    real = report.importlib.util.find_spec
    monkeypatch.setattr(report.importlib.util, "find_spec", lambda name: None if name == "matplotlib" else real(name))
    result = run_lab(
        tiny_pipeline, ["euler"], [4], Captions(["a red circle"], ["seen"], [{}]), reference_steps=20, exact_nfe=()
    )
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
    first = run_lab(tiny_pipeline, ["euler"], [4], captions, cache=tmp_path, reference_steps=20, exact_nfe=())
    second = run_lab(tiny_pipeline, ["euler"], [4], captions, cache=tmp_path, reference_steps=20, exact_nfe=())
    assert runs == ["dpmpp-2m"] * 3 + ["euler", "euler"]  # two endpoints and the half-step run, once
    assert [c.latent_rms for c in first.cells] == [c.latent_rms for c in second.cells]
    assert first.reference_convergence == second.reference_convergence
    run_lab(
        tiny_pipeline, ["euler"], [4], captions, seed=1, cache=tmp_path, reference_steps=20, exact_nfe=()
    )  # a new reference
    assert runs.count("dpmpp-2m") == 6 and len(list(tmp_path.iterdir())) == 2
    for file in tmp_path.iterdir():
        file.write_bytes(file.read_bytes()[:100])  # a run killed while writing the cache
    again = run_lab(tiny_pipeline, ["euler"], [4], captions, cache=tmp_path, reference_steps=20, exact_nfe=())
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
