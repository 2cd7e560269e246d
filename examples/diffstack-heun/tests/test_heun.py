"""diffstack-heun: parity with diffusers' HeunDiscreteScheduler (a test-only oracle), and diffstack's contract."""

from __future__ import annotations

import importlib.metadata
import itertools

import diffstack_heun
import pytest
import torch
from diffstack_heun import Config, Heun
from diffusers import HeunDiscreteScheduler

from core import InputError
from core.contracts.scheduler import SchedulerContract
from core.plugin_manager import PluginInfo, PluginManager

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:diffusers")  # numpy 2 notice in diffusers

SCHEDULES = {
    "linear": {},
    "scaled_linear": {"beta_start": 0.00085, "beta_end": 0.012},
    "squaredcos_cap_v2": {},
}


def dummy_model(sample: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """diffusers' scheduler-test model: x·t/(t+1)."""
    return sample * t / (t + 1)


def trajectory(scheduler, steps: int, *, strength: float | None = None) -> list[torch.Tensor]:
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    x = x * float(scheduler.init_noise_sigma)
    out = []
    for t in scheduler.timesteps:
        x = scheduler.step(dummy_model(scheduler.scale_model_input(x, t), t), t, x).prev_sample
        out.append(x)
    return out


@pytest.mark.parametrize(
    "schedule, spacing, prediction_type, steps, karras",
    list(
        itertools.product(
            SCHEDULES,
            ["linspace", "leading", "trailing"],
            ["epsilon", "v_prediction", "sample"],
            [7, 10],
            [False, True],
        )
    ),
)
def test_parity_with_diffusers(schedule: str, spacing: str, prediction_type: str, steps: int, karras: bool) -> None:
    kwargs = dict(
        beta_schedule=schedule,
        timestep_spacing=spacing,
        prediction_type=prediction_type,
        steps_offset=1 if spacing == "leading" else 0,
        use_karras_sigmas=karras,
        **SCHEDULES[schedule],
    )
    ours, reference = Heun(Config(**kwargs)), HeunDiscreteScheduler(**kwargs)
    ours.set_timesteps(steps)
    reference.set_timesteps(steps)
    reference.set_begin_index(0)
    assert torch.equal(ours.timesteps, reference.timesteps)
    expected = trajectory(reference, steps)
    scale = max(x.abs().max().item() for x in expected)
    for i, (a, b) in enumerate(zip(trajectory(ours, steps), expected, strict=True)):
        assert (a - b).abs().max().item() <= 1e-5 * scale, f"visit {i}"


@pytest.mark.parametrize("spacing", ["linspace", "leading", "trailing"])
@pytest.mark.parametrize("strength", [0.3, 0.5, 0.75, 1.0])
def test_strength_starts_where_diffusers_img2img_starts(spacing: str, strength: float) -> None:
    steps = 10
    ours = Heun(Config(timestep_spacing=spacing))
    ours.set_timesteps(steps, strength=strength)
    reference = HeunDiscreteScheduler(timestep_spacing=spacing)
    reference.set_timesteps(steps)
    t_start = max(steps - min(int(steps * strength), steps), 0)  # StableDiffusionImg2ImgPipeline
    assert torch.equal(ours.timesteps, reference.timesteps[t_start * reference.order :])
    assert torch.equal(ours.sigmas, reference.sigmas[t_start * reference.order :])


def test_correction_without_prediction_is_an_input_error() -> None:
    heun = Heun(Config())
    heun.set_timesteps(5)
    x = torch.zeros(1, 4, 8, 8)
    with pytest.raises(InputError, match="without its prediction"):
        heun.step(x, heun.timesteps[1], x)


def test_provides_the_heun_scheduler_component() -> None:
    manager = PluginManager()
    manager.register(diffstack_heun, PluginInfo("heun", "diffstack_heun", "manual"))
    spec = manager.get("scheduler", "heun").spec
    assert isinstance(spec.build(spec.config()), Heun)


def test_registered_through_its_entry_point() -> None:
    try:
        importlib.metadata.distribution("diffstack-heun")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("diffstack-heun is not installed: pip install -e examples/diffstack-heun")
    record = PluginManager.discover().get("scheduler", "heun")
    assert record.plugin.distribution == "diffstack-heun" and record.spec.factory is Heun


class TestHeunContract(SchedulerContract):
    @pytest.fixture
    def component(self) -> Heun:
        return Heun(Config())
