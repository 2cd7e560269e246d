"""The contract suites accept correct components, by both routes: pytest subclasses and `run_contract`.

The components are the toy ones from tests/toy_plugin.py (the VP DDIM and the σ-space Euler scheduler,
every prediction type), plus a stochastic variant of the toy scheduler (DDIM with eta = 1) to exercise the
suite's stochastic path. The pytest plugin is checked in-process with pytester. `test_contracts_can_fail.py`
shows that every suite rejects broken components.
"""

from __future__ import annotations

import math
import unittest
from typing import Any

import pytest
import torch
import toy_plugin as toy

from core import InputError, PluginManager, StepOutput
from core.contracts import (
    CONTRACTS,
    CheckResult,
    DenoiserContract,
    EncoderContract,
    NotApplicable,
    SamplerContract,
    SchedulerContract,
    TextConditionerContract,
    run_contract,
)
from core.plugin_manager import PluginInfo

pytest_plugins = ["pytester"]

PREDICTION_TYPES = ["epsilon", "v_prediction", "sample"]


class AncestralToyScheduler(toy.ToyScheduler):
    """DDIM with eta = 1: x_prev = √ᾱ_prev·x̂0 + √(1-ᾱ_prev-σ²)·ε̂ + σ·z, σ² = (1-ᾱ_prev)/(1-ᾱ)·(1-ᾱ/ᾱ_prev)."""

    def step(
        self, model_output: torch.Tensor, timestep: Any, sample: torch.Tensor, *, generator: Any = None
    ) -> StepOutput:
        out = super().step(model_output, timestep, sample)
        alpha_bar = float(self._alpha_bar(timestep))
        prev_t = int(timestep) - self._step_ratio
        alpha_bar_prev = float(self.alphas_cumprod[prev_t]) if prev_t >= 0 else 1.0
        var = (1 - alpha_bar_prev) / (1 - alpha_bar) * (1 - alpha_bar / alpha_bar_prev)
        x0 = out.pred_original_sample
        eps = (sample - math.sqrt(alpha_bar) * x0) / math.sqrt(1 - alpha_bar)
        z = torch.randn(sample.shape, generator=generator, dtype=sample.dtype)
        prev = math.sqrt(alpha_bar_prev) * x0 + math.sqrt(1 - alpha_bar_prev - var) * eps + math.sqrt(var) * z
        return StepOutput(prev, x0)


def toy_scheduler() -> Any:
    return toy.ToyScheduler(toy.ToySchedulerConfig())


def toy_components() -> dict[str, Any]:
    """kind → a factory of the toy component with its default config."""
    return {spec.kind: (lambda spec=spec: spec.build(spec.config())) for spec in toy.diffstack_components()}


class ToySamplerContract(SamplerContract):
    """The sampler suite driven by the toy scheduler (the built-in ddim may not exist yet)."""

    def make_scheduler(self) -> Any:
        return toy_scheduler()


# ---------------------------------------------------------------------------------------- subclass route
class TestToyScheduler(SchedulerContract):
    @pytest.fixture(params=PREDICTION_TYPES)
    def component(self, request: pytest.FixtureRequest) -> Any:
        return toy.ToyScheduler(toy.ToySchedulerConfig(prediction_type=request.param, steps_offset=1))

    def test_marked_as_contract(self, request: pytest.FixtureRequest) -> None:
        assert request.node.get_closest_marker("contract") is not None


class TestToyEulerScheduler(SchedulerContract):
    @pytest.fixture(params=PREDICTION_TYPES)
    def component(self, request: pytest.FixtureRequest) -> Any:
        return toy.ToyEulerScheduler(toy.ToySchedulerConfig(prediction_type=request.param))


class TestAncestralToyScheduler(SchedulerContract):
    @pytest.fixture
    def component(self) -> Any:
        return AncestralToyScheduler(toy.ToySchedulerConfig())


class TestToyDenoiser(DenoiserContract):
    @pytest.fixture(params=PREDICTION_TYPES)
    def component(self, request: pytest.FixtureRequest) -> Any:
        return toy.ToyDenoiser(toy.ToyDenoiserConfig(prediction_type=request.param))


class TestToyEncoder(EncoderContract):
    @pytest.fixture
    def component(self) -> Any:
        return toy.ToyEncoder(toy.ToyEncoderConfig(latent_channels=3))


class TestToyText(TextConditionerContract):
    @pytest.fixture
    def component(self) -> Any:
        return toy.ToyText(toy.ToyTextConfig())


class TestToySampler(ToySamplerContract):
    @pytest.fixture(params=[True, False], ids=["batched", "two-calls"])
    def component(self, request: pytest.FixtureRequest) -> Any:
        return toy.ToySampler(toy.ToySamplerConfig(batched_guidance=request.param))


class TestToySamplerWithEuler(SamplerContract):
    """The sampler suite against a σ-space rule with v-prediction: the oracle must undo a real input scaling."""

    @pytest.fixture
    def component(self) -> Any:
        return toy.ToySampler(toy.ToySamplerConfig())

    def make_scheduler(self) -> Any:
        return toy.ToyEulerScheduler(toy.ToySchedulerConfig(prediction_type="v_prediction"))


# ------------------------------------------------------------------------------------------ runner route
@pytest.mark.parametrize("kind", sorted(CONTRACTS))
def test_run_contract_passes_every_toy_component(kind: str) -> None:
    results = run_contract(kind, toy_components()[kind], contract=ToySamplerContract if kind == "sampler" else None)
    assert [r.name for r in results] == [n.removeprefix("test_") for n in CONTRACTS[kind].check_names()]
    assert all(isinstance(r, CheckResult) for r in results)
    assert [r for r in results if not r.passed] == []


def test_contracts_cover_every_kind() -> None:
    from core.interfaces import KINDS

    assert set(CONTRACTS) == set(KINDS)
    assert all(CONTRACTS[kind].kind == kind for kind in CONTRACTS)


def test_run_contract_reports_a_stochastic_rule_as_not_applicable_where_needed() -> None:
    results = {r.name: r for r in run_contract("scheduler", lambda: AncestralToyScheduler(toy.ToySchedulerConfig()))}
    assert all(r.passed for r in results.values()), [r for r in results.values() if not r.passed]
    assert results["batch_of_n_equals_n_singles"].detail.startswith("not applicable: ")
    assert results["true_noise_ends_at_x0"].detail == ""


def test_run_contract_builds_a_fresh_component_per_check() -> None:
    built: list[Any] = []

    def make() -> Any:
        built.append(toy_scheduler())
        return built[-1]

    results = run_contract("scheduler", make)
    assert len(built) == len(results) + 1 and len({id(s) for s in built}) == len(built)  # + the trial build


def test_run_contract_reports_a_factory_failure_once() -> None:
    def make() -> Any:
        raise RuntimeError("no weights here")

    [result] = run_contract("text", make)
    assert (result.name, result.passed) == ("builds", False)
    assert result.detail == "building the component failed: RuntimeError: no weights here"
    assert "factory(config)" in result.rule


def test_run_contract_unknown_kind_is_an_input_error() -> None:
    with pytest.raises(InputError, match="scheduler"):
        run_contract("schedular", toy_scheduler)


def test_sampler_contract_runs_on_the_builtin_ddim_by_default() -> None:
    if ("scheduler", "ddim") not in PluginManager.discover().components():
        pytest.skip("the built-in ddim scheduler is not registered yet")
    assert type(SamplerContract().make_scheduler()).__module__.startswith("plugins.")
    results = run_contract("sampler", toy_components()["sampler"])
    assert [r for r in results if not r.passed] == []


def test_not_applicable_is_a_skip_for_pytest() -> None:
    assert issubclass(NotApplicable, unittest.SkipTest)


def test_diffstack_plugins_fixture_is_a_fresh_manager(diffstack_plugins: PluginManager) -> None:
    assert isinstance(diffstack_plugins, PluginManager)
    diffstack_plugins.register(toy, PluginInfo("toy", "toy_plugin", "manual"))
    assert diffstack_plugins.get("scheduler", "toy-scheduler").spec.factory is toy.ToyScheduler


def test_pytest_plugin_marks_and_skips(pytester: pytest.Pytester) -> None:
    """In a fresh pytest session: contract tests carry the marker; NotApplicable is a skip."""
    pytester.makepyfile(
        test_user=f"""
        import importlib.util, sys, pytest, torch
        from core.contracts import SchedulerContract
        spec = importlib.util.spec_from_file_location("user_toy", {toy.__file__!r})
        toy = importlib.util.module_from_spec(spec); sys.modules["user_toy"] = toy; spec.loader.exec_module(toy)

        class Noisy(toy.ToyScheduler):
            def step(self, model_output, timestep, sample, *, generator=None):
                out = super().step(model_output, timestep, sample)
                z = torch.randn(sample.shape, generator=generator, dtype=sample.dtype)
                return type(out)(out.prev_sample + 1e-6 * z, out.pred_original_sample)

        class TestMine(SchedulerContract):
            @pytest.fixture
            def component(self):
                return Noisy(toy.ToySchedulerConfig())

        def test_plain():
            pass
        """
    )
    checks = len(SchedulerContract.check_names())
    result = pytester.runpytest_inprocess("-m", "contract", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=checks - 1, skipped=1, deselected=1)


def test_every_check_states_its_rule():
    """`diffstack check` prints a check's docstring under a FAIL: every check of every suite has one."""
    import inspect

    from core.contracts import CONTRACTS

    bare = [
        f"{kind}/{name}"
        for kind, contract in CONTRACTS.items()
        for name in contract.check_names()
        if not inspect.getdoc(getattr(contract, name))
    ]
    assert bare == []
