"""The adapter itself: names, generated configs, delegation, PNDM's declared warm-up, registration, and the
reasons `EXCLUDED` gives for each class left out (each one checked here, as the README states it)."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import inspect
import json
import re
from pathlib import Path

import diffstack_diffusers
import diffusers
import pytest
import torch
from diffstack_diffusers import ADAPTED, ADAPTERS, EXAMPLE_CONFIGS, EXCLUDED, adapter, plugin_name

from core import ConfigError, InputError
from core.contracts.scheduler import SchedulerContract
from core.plugin_manager import PluginInfo, PluginManager

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.mark.parametrize(
    "class_name, name",
    [
        ("DDIMScheduler", "diffusers-ddim"),
        ("PNDMScheduler", "diffusers-pndm"),
        ("UniPCMultistepScheduler", "diffusers-unipc"),
        ("DEISMultistepScheduler", "diffusers-deis"),
        ("HeunDiscreteScheduler", "diffusers-heun"),
        ("DPMSolverMultistepScheduler", "diffusers-dpmsolver-multistep"),
        ("DPMSolverSinglestepScheduler", "diffusers-dpmsolver-singlestep"),
        ("KDPM2DiscreteScheduler", "diffusers-kdpm2"),
        ("KDPM2AncestralDiscreteScheduler", "diffusers-kdpm2-ancestral"),
        ("EulerAncestralDiscreteScheduler", "diffusers-euler-ancestral"),
        ("DDPMParallelScheduler", "diffusers-ddpm-parallel"),
    ],
)
def test_plugin_names(class_name: str, name: str) -> None:
    assert plugin_name(class_name) == name


def test_config_has_diffusers_fields_and_defaults() -> None:
    unipc = adapter("UniPCMultistepScheduler")
    defaults = {
        name: parameter.default
        for name, parameter in inspect.signature(diffusers.UniPCMultistepScheduler).parameters.items()
        if name != "solver_p"  # a scheduler object: left out, diffusers keeps its default None
    }
    assert unipc.Config().model_dump() == defaults
    assert unipc.Config.model_fields["trained_betas"].annotation == list[float] | None
    with pytest.raises(ConfigError, match="solver_order"):
        unipc(solver_order="two")
    with pytest.raises(ConfigError, match="solver_ordr"):
        unipc(solver_ordr=3)


def test_config_round_trips_infinity_through_json() -> None:
    config = ADAPTERS["diffusers-dpmsolver-multistep"].Config()
    assert config.lambda_min_clipped == -float("inf")  # type: ignore[attr-defined]
    assert type(config).model_validate_json(json.dumps(json.loads(config.model_dump_json()))) == config


def test_constructor_takes_a_config_a_dict_or_overrides() -> None:
    ddim = ADAPTERS["diffusers-ddim"]
    config = ddim.Config(beta_schedule="scaled_linear")
    assert (
        ddim(config).config
        == ddim({"beta_schedule": "scaled_linear"}).config
        == ddim(beta_schedule="scaled_linear").config
    )
    assert ddim(config, clip_sample=False).config == config.model_copy(update={"clip_sample": False})
    assert ddim(trained_betas=[0.01] * 1000).scheduler.betas.tolist() == pytest.approx([0.01] * 1000)


@pytest.mark.parametrize("plugin", ["diffusers-euler", "diffusers-ddim"])
def test_step_before_set_timesteps_is_an_input_error(plugin: str) -> None:
    """diffusers' Euler classes would step off their 1000 training timesteps; the adapter refuses."""
    x = torch.zeros(1, 4, 8, 8)
    with pytest.raises(InputError, match="set_timesteps"):
        ADAPTERS[plugin]().step(x, 500, x)


def test_delegates_to_the_wrapped_scheduler() -> None:
    euler, reference = ADAPTERS["diffusers-euler"](), diffusers.EulerDiscreteScheduler()
    euler.set_timesteps(10)
    reference.set_timesteps(10)
    assert torch.equal(euler.timesteps, reference.timesteps)
    assert euler.init_noise_sigma == float(reference.init_noise_sigma)
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    t = euler.timesteps[3]
    assert torch.equal(euler.add_noise(x, x, int(t)), reference.add_noise(x, x, t.reshape(1)))  # an int is read
    ours, theirs = x, x
    for t in euler.timesteps[:2]:
        out = euler.step(euler.scale_model_input(ours, t), t, ours)
        expected = reference.step(reference.scale_model_input(theirs, t), t, theirs)
        assert torch.equal(out.pred_original_sample, expected.pred_original_sample)
        ours, theirs = out.prev_sample, expected.prev_sample
        assert torch.equal(ours, theirs)


def test_set_begin_index_only_where_diffusers_has_it() -> None:
    for name, cls in ADAPTERS.items():
        assert hasattr(cls, "set_begin_index") == hasattr(cls.diffusers_class, "set_begin_index"), name
    assert not hasattr(ADAPTERS["diffusers-ddim"], "set_begin_index")
    euler = ADAPTERS["diffusers-euler"]()
    euler.set_timesteps(10)
    euler.set_begin_index(4)
    assert euler.scheduler.begin_index == 4


def test_no_strength_parameter() -> None:
    """The sampler cuts img2img runs itself (core.schedules.img2img_timesteps), as diffusers' pipelines do."""
    for cls in ADAPTERS.values():
        assert "strength" not in inspect.signature(cls.set_timesteps).parameters


@pytest.mark.parametrize("skip_prk_steps, warmup, counts", [(True, 1, (3, 10, 25)), (False, 9, (4, 10, 25))])
def test_pndm_declares_its_warmup_timesteps(skip_prk_steps: bool, warmup: int, counts: tuple[int, ...]) -> None:
    """Declared from the config (diffusers' PNDM source), checked here against what diffusers produces.
    With PRK steps diffusers' PNDM cannot do fewer than 4 steps, hence 4 instead of 3."""
    pndm = ADAPTERS["diffusers-pndm"](skip_prk_steps=skip_prk_steps)
    assert pndm.order == 1 and pndm.warmup_timesteps == warmup
    for n in counts:
        pndm.set_timesteps(n)
        assert len(pndm.timesteps) == n + warmup
    assert all(cls().warmup_timesteps == 0 for name, cls in ADAPTERS.items() if name != "diffusers-pndm")


def test_provides_one_scheduler_per_adapted_class() -> None:
    manager = PluginManager()
    manager.register(diffstack_diffusers, PluginInfo("diffusers", "diffstack_diffusers", "manual"))
    for class_name in ADAPTED:
        spec = manager.get("scheduler", plugin_name(class_name)).spec
        scheduler = spec.build(spec.config(**spec.example_config))
        assert isinstance(scheduler.scheduler, getattr(diffusers, class_name))
        assert spec.example_config == EXAMPLE_CONFIGS.get(class_name, {})


def test_registered_through_its_entry_point() -> None:
    try:
        importlib.metadata.distribution("diffstack-diffusers")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("diffstack-diffusers is not installed: pip install -e examples/diffstack-diffusers")
    record = PluginManager.discover().get("scheduler", "diffusers-unipc")
    assert record.plugin.distribution == "diffstack-diffusers"
    assert record.spec.factory is ADAPTERS["diffusers-unipc"]


# --- the classes left out: each reason in EXCLUDED, checked -----------------------------------------------------

FAILING_CHECKS = {
    "KDPM2DiscreteScheduler": ["add_noise_matches_forward_process"],
    "KDPM2AncestralDiscreteScheduler": ["timesteps_descending", "add_noise_matches_forward_process"],
    "DEISMultistepScheduler": ["true_noise_ends_at_x0"],
    "SASolverScheduler": ["true_noise_ends_at_x0"],
    "TCDScheduler": ["true_noise_ends_at_x0"],
    "EDMEulerScheduler": ["timesteps_in_range", "true_noise_ends_at_x0"],
    "EDMDPMSolverMultistepScheduler": ["timesteps_in_range", "true_noise_ends_at_x0"],
    "CMStochasticIterativeScheduler": ["timesteps_in_range"],
    "DDIMInverseScheduler": ["timesteps_descending"],
    "DPMSolverMultistepInverseScheduler": ["timesteps_descending"],
}
"""Excluded class → contract checks its adapter fails at diffusers' defaults."""

MISSING = {
    "IPNDMScheduler": ["add_noise"],
    "FlowMatchEulerDiscreteScheduler": ["add_noise", "scale_model_input", "init_noise_sigma"],
    "FlowMatchHeunDiscreteScheduler": ["add_noise", "scale_model_input", "init_noise_sigma"],
    "DDIMInverseScheduler": ["add_noise"],
    "ScoreSdeVeScheduler": ["step"],
    "UnCLIPScheduler": ["order"],
}
"""Excluded class → members of `core.Scheduler` a default instance of it lacks."""

TORCHSDE = ["DPMSolverSDEScheduler", "CosineDPMSolverMultistepScheduler"]


@pytest.mark.parametrize("class_name, checks", sorted(FAILING_CHECKS.items()))
def test_excluded_class_fails_the_checks_its_reason_names(class_name: str, checks: list[str]) -> None:
    named = [name.removeprefix("test_") for name in SchedulerContract.check_names()]
    assert [name for name in named if name in EXCLUDED[class_name]] == checks  # the reason names these checks
    for check in checks:
        with pytest.raises(AssertionError):
            getattr(SchedulerContract(), f"test_{check}")(adapter(class_name)())


@pytest.mark.parametrize(
    "class_name, overrides, miss",
    [
        ("SASolverScheduler", {}, "0.03"),
        ("TCDScheduler", {}, "0.1"),
        ("PNDMScheduler", {"skip_prk_steps": True}, "0.03"),  # ᾱ_0 < 1 at the end (set_alpha_to_one=False)
    ],
)
def test_runs_fed_the_true_noise_miss_x0_by(class_name: str, overrides: dict[str, bool], miss: str) -> None:
    with pytest.raises(AssertionError, match=rf"largest difference {re.escape(miss)}\d* "):
        SchedulerContract().test_true_noise_ends_at_x0(adapter(class_name)(**overrides))


def test_pndm_with_prk_steps_needs_4_steps() -> None:
    """diffusers' default PNDM (Runge-Kutta warm-up) fails below 4 steps, hence `EXAMPLE_CONFIGS` and the
    adapter's `fewest_steps`."""
    with pytest.raises(ValueError, match="broadcast"):
        diffusers.PNDMScheduler().set_timesteps(3)


@pytest.mark.parametrize("class_name, members", sorted(MISSING.items()))
def test_excluded_class_lacks_what_its_reason_names(class_name: str, members: list[str]) -> None:
    instance = getattr(diffusers, class_name)()
    assert [member for member in members if hasattr(instance, member)] == []


def test_other_excluded_reasons() -> None:
    kdpm2 = diffusers.KDPM2DiscreteScheduler()
    kdpm2.set_timesteps(10)
    midpoint, full = kdpm2.timesteps[1:3]
    noise_level = [kdpm2.add_noise(torch.zeros(1), torch.ones(1), t.reshape(1)).item() for t in (midpoint, full)]
    assert midpoint > full and noise_level[0] == noise_level[1]  # the midpoint gets the next full step's σ
    edm = diffusers.EDMEulerScheduler()
    edm.set_timesteps(10)
    assert torch.allclose(edm.timesteps, 0.25 * torch.log(edm.sigmas[:-1]))
    cm = diffusers.CMStochasticIterativeScheduler()
    cm.set_timesteps(10)
    assert torch.allclose(cm.timesteps.float(), 250 * torch.log(cm.sigmas[:-1]), rtol=1e-4)
    deis = diffusers.DEISMultistepScheduler()
    deis.set_timesteps(10)
    ac0 = deis.alphas_cumprod[0].item()
    assert deis.sigmas[-1].item() == pytest.approx(((1 - ac0) / ac0) ** 0.5)  # ends at σ of timestep 0, not 0
    assert {"original_image", "mask"} <= set(inspect.signature(diffusers.RePaintScheduler.step).parameters)
    assert "num_train_timesteps" not in inspect.signature(diffusers.KarrasVeScheduler).parameters
    assert {"sigma_hat", "sigma_prev"} <= set(inspect.signature(diffusers.KarrasVeScheduler.step).parameters)
    assert hasattr(diffusers.ScoreSdeVeScheduler, "step_pred") and hasattr(
        diffusers.ScoreSdeVeScheduler, "step_correct"
    )
    sasolver = diffusers.SASolverScheduler()
    assert [sasolver.tau_func(t) for t in (199, 200, 800, 801)] == [0, 1, 1, 0]


@pytest.mark.skipif(importlib.util.find_spec("torchsde") is not None, reason="torchsde is installed here")
@pytest.mark.parametrize("class_name", TORCHSDE)
def test_excluded_for_torchsde(class_name: str) -> None:
    with pytest.raises(ImportError, match="torchsde"):
        getattr(diffusers, class_name)()


def test_every_tried_class_is_adapted_or_excluded_with_a_tested_reason() -> None:
    assert not set(ADAPTED) & set(EXCLUDED)
    tested = {*FAILING_CHECKS, *MISSING, *TORCHSDE, "RePaintScheduler", "KarrasVeScheduler"}
    assert tested == set(EXCLUDED)


def test_readme_lists_every_adapted_and_excluded_class() -> None:
    text = README.read_text(encoding="utf-8")
    adapted = dict(re.findall(r"^\| `(diffusers-[a-z0-9-]+)` \| `(\w+)` \| 17/17", text, re.MULTILINE))
    assert adapted == {plugin_name(name): name for name in ADAPTED}
    excluded = re.findall(r"^- `(\w+Scheduler)`: ", text, re.MULTILINE)
    assert sorted(excluded) == sorted(EXCLUDED)


def test_a_swap_from_an_adapted_scheduler_carries_only_what_the_pipeline_declared() -> None:
    """The adapter keeps its config's given fields as given, so `--scheduler euler` from a `diffusers-unipc`
    pipeline carries the declared schedule and notes nothing about unipc's own defaults."""
    from core.scheduler_swap import carried_config
    from plugins import euler

    declared = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}
    unipc = ADAPTERS["diffusers-unipc"](ADAPTERS["diffusers-unipc"].Config(**declared))
    rebuilt = type(unipc)(unipc.config)
    assert unipc.config.model_fields_set == rebuilt.config.model_fields_set == set(declared)
    config, note = carried_config(euler.Config, rebuilt.config.model_dump(exclude_unset=True), rule="euler")
    assert note is None and config.model_fields_set == set(declared)


def test_default_pndm_below_four_steps_says_what_to_do() -> None:
    """diffusers' own PNDM (Runge-Kutta warm-up) fails below 4 steps with a numpy broadcast error; the adapter
    says so first, naming the setting that lifts the limit."""
    from core import InputError

    pndm = ADAPTERS["diffusers-pndm"]()
    with pytest.raises(InputError, match=r"needs at least 4 steps, got 3.*\n.*skip_prk_steps: true"):
        pndm.set_timesteps(3)
    pndm.set_timesteps(4)
    ADAPTERS["diffusers-pndm"](skip_prk_steps=True).set_timesteps(1)
