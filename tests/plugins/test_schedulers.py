"""Behaviour and error handling of the built-in schedulers, `core.schedules` and `core.scheduler_from_diffusers`.

Numerical parity with diffusers is in tests/parity/test_scheduler_parity.py.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from core import ConfigError, InputError, schedules
from core.contracts.scheduler import SchedulerContract
from core.plugin_manager import PluginManager
from core.scheduler_from_diffusers import scheduler_from_diffusers
from plugins import lms as lms_plugin

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:diffusers")  # numpy 2 notice in diffusers

NAMES = ["ddpm", "ddim", "lms", "euler", "euler-ancestral", "dpmpp-2m"]
PLUGINS = PluginManager.discover(entry_points=False)


def build(name: str, **config: Any) -> Any:
    spec = PLUGINS.get("scheduler", name).spec
    return spec.build(spec.config(**{**spec.example_config, **config}))


def noise(seed: int = 0, shape: tuple[int, ...] = (2, 4, 8, 8)) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def run(scheduler: Any, steps: int = 10, *, seed: int = 1, sample: torch.Tensor | None = None) -> torch.Tensor:
    scheduler.set_timesteps(steps)
    sample = noise() * scheduler.init_noise_sigma if sample is None else sample
    generator = torch.Generator().manual_seed(seed)
    for t in scheduler.timesteps:
        model_output = 0.5 * scheduler.scale_model_input(sample, t)
        sample = scheduler.step(model_output, t, sample, generator=generator).prev_sample
    return sample


# --------------------------------------------------------------------------------------------- plugins


def test_all_rules_are_registered_builtins() -> None:
    assert set(NAMES) <= set(PLUGINS.names("scheduler"))
    for name in NAMES:
        record = PLUGINS.get("scheduler", name)
        assert record.plugin.source == "builtin" and record.spec.description


class TestBuiltinSchedulersPassTheContract(SchedulerContract):
    @pytest.fixture(params=NAMES)
    def component(self, request: pytest.FixtureRequest) -> Any:
        return build(request.param)


@pytest.mark.parametrize("name", NAMES)
def test_fresh_copy_has_no_state(name: str) -> None:
    scheduler = build(name)
    first = run(scheduler)
    run(scheduler, steps=7)
    assert torch.equal(run(type(scheduler)(scheduler.config)), first)


@pytest.mark.parametrize("name", NAMES)
def test_scale_model_input_is_pure(name: str) -> None:
    plain, probed = build(name), build(name)
    plain.set_timesteps(10)
    probed.set_timesteps(10)
    sample = noise() * plain.init_noise_sigma
    for t in reversed(probed.timesteps):  # out of order, repeatedly
        assert torch.equal(probed.scale_model_input(sample, t), probed.scale_model_input(sample, float(t)))
    generator_a, generator_b = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    a = b = sample
    for t in plain.timesteps:
        a = plain.step(0.5 * plain.scale_model_input(a, t), t, a, generator=generator_a).prev_sample
        probed.scale_model_input(b, probed.timesteps[-1])
        b = probed.step(0.5 * probed.scale_model_input(b, t), t, b, generator=generator_b).prev_sample
    assert torch.equal(a, b)


@pytest.mark.parametrize("name", NAMES)
def test_python_number_timesteps_work_like_tensor_ones(name: str) -> None:
    by_tensor, by_number = build(name), build(name)
    for scheduler in (by_tensor, by_number):
        scheduler.set_timesteps(8)
    a = b = noise() * by_tensor.init_noise_sigma
    g_a, g_b = torch.Generator().manual_seed(2), torch.Generator().manual_seed(2)
    for t in by_tensor.timesteps:
        a = by_tensor.step(0.5 * a, t, a, generator=g_a).prev_sample
        b = by_number.step(0.5 * b, t.item(), b, generator=g_b).prev_sample
    assert torch.equal(a, b)


@pytest.mark.parametrize("name", ["ddpm", "euler-ancestral"])
def test_a_generator_per_sample_makes_a_batch_equal_its_singles(name: str) -> None:
    x = noise(shape=(3, 4, 8, 8))
    scheduler = build(name)
    scheduler.set_timesteps(6)
    batch, singles = x * scheduler.init_noise_sigma, [x[i : i + 1] * scheduler.init_noise_sigma for i in range(3)]
    batch_generators = [torch.Generator().manual_seed(10 + i) for i in range(3)]
    single_generators = [torch.Generator().manual_seed(10 + i) for i in range(3)]
    for t in scheduler.timesteps:
        batch = scheduler.step(0.5 * batch, t, batch, generator=batch_generators).prev_sample
        singles = [
            scheduler.step(0.5 * s, t, s, generator=[g]).prev_sample
            for s, g in zip(singles, single_generators, strict=True)
        ]
    torch.testing.assert_close(batch, torch.cat(singles), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("spacing", ["linspace", "leading", "trailing"])
def test_ddim_steps_to_the_next_scheduled_timestep_for_every_spacing(spacing: str) -> None:
    """diffusers' DDIM steps to t - ⌊T/n⌋, which misses the next timestep of `linspace` and of `trailing` when n
    does not divide T; ours does not, so a perfect ε prediction lands on x0 for every spacing."""
    ddim = build("ddim", timestep_spacing=spacing, clip_sample=False)
    ddim.set_timesteps(7)
    x0, eps = noise(1), noise(2)
    sample = ddim.add_noise(x0, eps, ddim.timesteps[0])
    for t in ddim.timesteps:
        sample = ddim.step(eps, t, sample).prev_sample
    torch.testing.assert_close(sample, x0, rtol=1e-4, atol=1e-4)


def test_repeated_timesteps_are_stepped_in_order() -> None:
    """Cosine + Karras σ rounds many DPM-Solver timesteps to the same value; each is a step of its own, also when
    the loop passes plain numbers (elements of `timesteps` are located exactly, by storage offset)."""
    by_element, by_number = (
        build("dpmpp-2m", beta_schedule="squaredcos_cap_v2", use_karras_sigmas=True, timestep_spacing="trailing")
        for _ in range(2)
    )
    for scheduler in (by_element, by_number):
        scheduler.set_timesteps(10)
    values = by_number.timesteps.tolist()
    assert len(set(values)) < len(values)
    a = b = noise()
    for t, value in zip(by_element.timesteps, values, strict=True):
        a = by_element.step(0.5 * a, t, a).prev_sample
        b = by_number.step(0.5 * b, value, b).prev_sample
    assert torch.equal(a, b) and torch.isfinite(a).all()


# ----------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("steps", [0, -3, 1001, 2.5, True])
def test_bad_step_counts_are_input_errors(name: str, steps: Any) -> None:
    with pytest.raises(InputError, match="num_inference_steps"):
        build(name).set_timesteps(steps)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("strength", [0.0, -0.5, 1.5, "half"])
def test_bad_strength_is_an_input_error(name: str, strength: Any) -> None:
    with pytest.raises(InputError, match="strength"):
        build(name).set_timesteps(10, strength=strength)


def test_strength_that_keeps_no_step_is_an_input_error() -> None:
    with pytest.raises(InputError, match="keeps no step"):
        build("euler").set_timesteps(10, strength=0.05)


def test_steps_offset_past_the_training_range_is_an_input_error() -> None:
    with pytest.raises(InputError, match="steps_offset"):
        build("ddim", steps_offset=5).set_timesteps(1000)


@pytest.mark.parametrize("name", NAMES)
def test_step_before_set_timesteps_is_an_input_error(name: str) -> None:
    x = noise()
    with pytest.raises(InputError, match="set_timesteps"):
        build(name).step(x, 500, x)


@pytest.mark.parametrize("name", NAMES)
def test_timestep_outside_the_schedule_is_an_input_error(name: str) -> None:
    scheduler = build(name)
    scheduler.set_timesteps(10)
    x = noise()
    with pytest.raises(InputError, match="not in the current schedule"):
        scheduler.step(x, 123.25, x)
    if isinstance(scheduler, schedules.SigmaScheduler):  # VP rules feed x_t unscaled
        with pytest.raises(InputError, match="not in the current schedule"):
            scheduler.scale_model_input(x, torch.tensor(123.25))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_model_output_names_the_step(name: str, bad: float) -> None:
    scheduler = build(name)
    scheduler.set_timesteps(10)
    sample = noise() * scheduler.init_noise_sigma
    for i, t in enumerate(scheduler.timesteps):
        model_output = 0.5 * scheduler.scale_model_input(sample, t)
        if i == 2:
            model_output[1, 2, 3, 4] = bad
            with pytest.raises(InputError, match=r"NaN or inf at step 3 of 10"):
                scheduler.step(model_output, t, sample)
            return
        sample = scheduler.step(model_output, t, sample).prev_sample


def test_learned_variance_needs_the_variance_channels() -> None:
    ddpm = build("ddpm", variance_type="learned_range")
    ddpm.set_timesteps(5)
    x = noise()
    with pytest.raises(InputError, match="2·C = 8 channels"):
        ddpm.step(x, ddpm.timesteps[0], x)


@pytest.mark.parametrize(
    "config, field, text",
    [
        ({"beta_schedule": "sigmoid"}, "beta_schedule", "valid values: linear, scaled_linear, squaredcos_cap_v2, cos"),
        ({"timestep_spacing": "even"}, "timestep_spacing", "valid values: linspace, leading, trailing"),
        ({"prediction_type": "noise"}, "prediction_type", "valid values: epsilon, v_prediction, sample"),
        ({"beta_start": 0.02, "beta_end": 0.01}, "beta_end", "must be greater than beta_start"),
        ({"beta_start": 0.01, "beta_end": 0.01}, "beta_end", "must be greater than beta_start"),
        ({"trained_betas": [0.01] * 10}, "trained_betas", "10 values but num_train_timesteps is 1000"),
        ({"num_train_timesteps": 3, "trained_betas": [0.1, 1.0, 0.2]}, "trained_betas", r"in \(0, 1\)"),
        ({"num_train_timesteps": 3, "trained_betas": [0.1, -0.1, 0.2]}, "trained_betas", r"in \(0, 1\)"),
        ({"num_train_timesteps": 0}, "num_train_timesteps", "greater than or equal to 1"),
        ({"betas": [0.1]}, "betas", "Extra inputs are not permitted"),
    ],
)
@pytest.mark.parametrize("name", NAMES)
def test_bad_config_names_the_field(name: str, config: dict[str, Any], field: str, text: str) -> None:
    with pytest.raises(ValidationError, match=text) as caught:
        PLUGINS.get("scheduler", name).spec.config(**config)
    assert caught.value.errors()[0]["loc"] == (field,)


def test_rule_specific_choices_are_listed_too() -> None:
    with pytest.raises(ValidationError, match="unknown variance_type 'tiny'; valid values: fixed_small, fixed_small_"):
        build("ddpm", variance_type="tiny")
    with pytest.raises(ValidationError, match="valid values: midpoint, heun"):
        build("dpmpp-2m", solver_type="bh2")


def test_config_is_frozen() -> None:
    with pytest.raises(ValidationError):
        build("ddim").config.eta = 1.0


# ------------------------------------------------------------------------------------------ schedules


def test_cosine_is_an_alias_of_squaredcos_cap_v2() -> None:
    cosine, squared = (
        schedules.betas(schedules.ScheduleConfig(beta_schedule=name)) for name in ("cosine", "squaredcos_cap_v2")
    )
    assert torch.equal(cosine, squared) and float(cosine.max()) == pytest.approx(0.999)


def test_trained_betas_override_the_schedule() -> None:
    betas = [0.001 * (i + 1) for i in range(10)]
    config = schedules.ScheduleConfig(num_train_timesteps=10, trained_betas=betas, beta_schedule="scaled_linear")
    assert torch.equal(schedules.betas(config), torch.tensor(betas, dtype=torch.float32))


@pytest.mark.parametrize("spacing", ["linspace", "leading", "trailing"])
@pytest.mark.parametrize("steps", [1, 7, 61, 103, 999, 1000])
def test_spaced_timesteps_are_n_descending_values_in_range(spacing: str, steps: int) -> None:
    """`trailing` included: numpy's arange makes diffusers produce n+1 timesteps, the last -1, for n = 61, 103, …"""
    t = schedules.spaced_timesteps(spacing, steps, 1000)
    assert len(t) == steps and t.min() >= 0 and t.max() <= 999 and np.all(np.diff(t) <= 0)


def test_sigma_timestep_round_trip() -> None:
    train = schedules.sigmas_from_alphas_cumprod(schedules.alphas_cumprod(schedules.ScheduleConfig())).numpy()
    t = np.array([0.0, 3.0, 250.0, 998.0, 999.0])  # between them σ is linear one way, log σ the other
    np.testing.assert_allclose(
        schedules.timesteps_from_sigmas(schedules.interpolate_sigmas(t, train), train), t, atol=1e-3
    )
    assert schedules.timesteps_from_sigmas(np.array([1e-6, 1e6]), train).tolist() == [0.0, 999.0]


def test_karras_sigmas_span_the_range_with_rho_spacing() -> None:
    sigmas = schedules.karras_sigmas(0.03, 14.6, 5, rho=7.0)
    assert sigmas[0] == pytest.approx(14.6) and sigmas[-1] == pytest.approx(0.03)
    roots = sigmas ** (1 / 7)
    np.testing.assert_allclose(np.diff(roots), np.diff(roots)[0])


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_prediction_conversions_invert_the_forward_process(prediction_type: str) -> None:
    x0, eps = noise(1), noise(2)
    alpha_prod = 0.3
    alpha, sigma = alpha_prod**0.5, (1 - alpha_prod) ** 0.5
    x_t = alpha * x0 + sigma * eps
    output = {"epsilon": eps, "v_prediction": alpha * eps - sigma * x0, "sample": x0}[prediction_type]
    torch.testing.assert_close(schedules.predicted_x0(prediction_type, output, x_t, alpha, sigma), x0)
    torch.testing.assert_close(schedules.predicted_eps(prediction_type, output, x_t, alpha, sigma), eps)
    s = sigma / alpha  # the same point in σ-space
    torch.testing.assert_close(schedules.predicted_x0_sigma(prediction_type, output, x_t / alpha, s), x0)


@pytest.mark.parametrize(
    "steps, strength, start", [(10, 1.0, 0), (10, 0.5, 5), (10, 0.75, 3), (10, 0.99, 1), (7, 0.3, 5)]
)
def test_img2img_start(steps: int, strength: float, start: int) -> None:
    assert schedules.img2img_start(steps, strength) == start


def test_lms_coefficients_are_exact_integrals_of_the_lagrange_basis() -> None:
    sigmas = np.array([14.6, 9.1, 5.2, 3.3, 1.9, 0.8, 0.0])
    table = lms_plugin.lms_coefficients(sigmas, 4)
    nodes, weights = np.polynomial.legendre.leggauss(4)  # exact for degree ≤ 7
    for i in range(len(sigmas) - 1):
        a, b = sigmas[i], sigmas[i + 1]
        tau = (b - a) / 2 * nodes + (a + b) / 2
        for k in range(1, min(i + 1, 4) + 1):
            points = sigmas[i - np.arange(k)]
            for j in range(k):
                basis = np.ones_like(tau)
                for m in range(k):
                    if m != j:
                        basis *= (tau - points[m]) / (points[j] - points[m])
                assert table[i][k - 1][j] == pytest.approx((b - a) / 2 * np.dot(weights, basis), rel=1e-12, abs=1e-12)
            assert sum(table[i][k - 1][:k]) == pytest.approx(b - a)  # Σ ℓ_j = 1


def test_lms_stable_orders_follow_the_adams_bashforth_intervals() -> None:
    """Relative steps (σ_i − σ_{i+1})/σ_i of 0.1, 0.3, 0.5, 0.7 and 1 (the step to σ = 0) allow orders 4, 3, 2, 2, 1
    at margin ¾ of the intervals 3/10, 6/11, 1, 2."""
    sigmas = np.array([10.0, 9.0, 6.3, 3.15, 0.945, 0.0])
    assert lms_plugin.stable_orders(sigmas, 4) == [4, 3, 2, 2, 1]
    assert lms_plugin.stable_orders(sigmas, 2) == [2, 2, 2, 2, 1]


def test_lms_integrates_once_in_set_timesteps(monkeypatch: pytest.MonkeyPatch) -> None:
    lms = build("lms")
    lms.set_timesteps(1000)  # the whole table, fast
    lms.set_timesteps(20)
    monkeypatch.setattr(lms_plugin, "lms_coefficients", lambda *a: pytest.fail("integrated inside step"))
    sample = noise() * lms.init_noise_sigma
    for t in lms.timesteps:
        sample = lms.step(0.5 * lms.scale_model_input(sample, t), t, sample).prev_sample
    assert torch.isfinite(sample).all()


def test_timesteps_are_looked_up_without_reading_them_back() -> None:
    """Elements of `timesteps` (also of a slice of it) are found by storage offset: no `.item()` on the device."""
    euler = build("euler")
    euler.set_timesteps(10)
    tail = euler.timesteps[4:]
    assert [euler.index_of(t) for t in tail] == list(range(4, 10))
    assert euler.index_of(euler.timesteps[6].clone()) == 6  # a copy: looked up by value


def test_add_noise_accepts_any_training_timestep_and_batches() -> None:
    ddpm, euler = build("ddpm"), build("euler")
    x0, eps = noise(1), noise(2)
    alpha_prod = ddpm.alphas_cumprod[321]
    expected = alpha_prod**0.5 * x0 + (1 - alpha_prod) ** 0.5 * eps
    torch.testing.assert_close(ddpm.add_noise(x0, eps, 321), expected)  # no set_timesteps needed
    torch.testing.assert_close(ddpm.add_noise(x0, eps, torch.tensor([321, 321])), expected)
    euler.set_timesteps(10)
    t = euler.timesteps[3]
    torch.testing.assert_close(euler.add_noise(x0, eps, t), x0 + euler.sigma_list[3] * eps)
    with pytest.raises(InputError, match="outside the training range"):
        ddpm.add_noise(x0, eps, 1000)


# ------------------------------------------------------------------------------ scheduler_from_diffusers


SD15 = {
    "_class_name": "PNDMScheduler",
    "_diffusers_version": "0.6.0",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
    "clip_sample": False,
}


def test_stable_diffusion_15_config_becomes_lms_with_a_note(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="core.scheduler_from_diffusers"):
        scheduler = scheduler_from_diffusers(SD15, plugins=PLUGINS)
    assert type(scheduler).__name__ == "LMS"
    c = scheduler.config
    assert (c.beta_schedule, c.beta_start, c.beta_end, c.steps_offset, c.timestep_spacing) == (
        "scaled_linear",
        0.00085,
        0.012,
        1,
        "leading",
    )
    assert [r.getMessage() for r in caplog.records] == [
        "scheduler config: PNDMScheduler (PLMS) has no diffstack implementation; using 'lms', the linear multistep "
        "rule of the same order (4), with the same noise schedule and timesteps"
    ]


@pytest.mark.parametrize(
    "class_name, name",
    [
        ("DDPMScheduler", "ddpm"),
        ("DDIMScheduler", "ddim"),
        ("LMSDiscreteScheduler", "lms"),
        ("EulerDiscreteScheduler", "euler"),
        ("EulerAncestralDiscreteScheduler", "euler-ancestral"),
        ("DPMSolverMultistepScheduler", "dpmpp-2m"),
    ],
)
def test_diffusers_configs_map_one_to_one(tmp_path: Path, class_name: str, name: str) -> None:
    diffusers = pytest.importorskip("diffusers")
    reference = getattr(diffusers, class_name)(
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
        prediction_type="v_prediction",
        timestep_spacing="trailing",
    )
    reference.save_config(tmp_path / "scheduler")  # a diffusers model folder
    scheduler = scheduler_from_diffusers(tmp_path, plugins=PLUGINS)
    assert type(scheduler) is type(build(name))
    scheduler.set_timesteps(20)
    reference.set_timesteps(20)
    assert torch.equal(scheduler.timesteps, reference.timesteps)
    assert scheduler.config.prediction_type == "v_prediction"


def test_accepts_a_file_a_folder_or_a_dict(tmp_path: Path) -> None:
    config = {"_class_name": "EulerDiscreteScheduler", "beta_schedule": "scaled_linear", "use_karras_sigmas": True}
    (tmp_path / "scheduler_config.json").write_text(json.dumps(config))
    for source in (config, tmp_path, tmp_path / "scheduler_config.json", str(tmp_path)):
        assert scheduler_from_diffusers(source, plugins=PLUGINS).config.use_karras_sigmas


def test_unknown_keys_are_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    config = {"_class_name": "DDIMScheduler", "frobnicate": 1, "wobble": True, "rescale_betas_zero_snr": False}
    with caplog.at_level(logging.WARNING, logger="core.scheduler_from_diffusers"):
        scheduler_from_diffusers(config, plugins=PLUGINS)
    assert len(caplog.records) == 1 and "frobnicate, wobble" in caplog.records[0].getMessage()


@pytest.mark.parametrize(
    "config, text",
    [
        ({"_class_name": "DDIMScheduler", "rescale_betas_zero_snr": True}, "rescale_betas_zero_snr=True"),
        ({"_class_name": "DPMSolverMultistepScheduler", "algorithm_type": "sde-dpmsolver++"}, "algorithm_type"),
        ({"_class_name": "EulerDiscreteScheduler", "use_exponential_sigmas": True}, "use_exponential_sigmas"),
        ({"_class_name": "DDIMScheduler", "beta_schedule": "sigmoid"}, "beta_schedule: .*valid values"),
        ({"_class_name": "UniPCMultistepScheduler"}, "'UniPCMultistepScheduler' is not a scheduler"),
        ({"beta_schedule": "linear"}, "_class_name None"),
    ],
)
def test_unsupported_configs_are_config_errors(config: dict[str, Any], text: str) -> None:
    with pytest.raises(ConfigError, match=text):
        scheduler_from_diffusers(config, plugins=PLUGINS)


def test_missing_or_broken_files_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no scheduler_config.json"):
        scheduler_from_diffusers(tmp_path, plugins=PLUGINS)
    (tmp_path / "scheduler_config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not a readable JSON file"):
        scheduler_from_diffusers(tmp_path, plugins=PLUGINS)


def test_a_third_party_scheduler_declares_the_diffusers_class_it_stands_in_for() -> None:
    """`scheduler_from_diffusers` knows no scheduler by name: each plugin's `stands_in_for` says which classes it
    replaces, so a third-party one is found the same way."""
    import types

    from core import ComponentSpec, ConfigError, PluginManager, StandIn, hookimpl
    from core.plugin_manager import PluginInfo
    from plugins.ddim import DDIM
    from plugins.ddim import Config as DDIMConfig

    plugin = types.SimpleNamespace(
        diffstack_components=hookimpl(
            lambda: [ComponentSpec("scheduler", "mine", DDIM, DDIMConfig, stands_in_for=(StandIn("MyScheduler"),))]
        )
    )
    manager = PluginManager.discover(entry_points=False)
    manager.register(plugin, PluginInfo("mine", "tests", "manual"))
    scheduler = scheduler_from_diffusers({"_class_name": "MyScheduler", "eta": 0.5}, plugins=manager)
    assert isinstance(scheduler, DDIM) and scheduler.config.eta == 0.5
    with pytest.raises(ConfigError, match=r"supported \(the schedulers' `stands_in_for`\): .*MyScheduler"):
        scheduler_from_diffusers({"_class_name": "OtherScheduler"}, plugins=manager)
