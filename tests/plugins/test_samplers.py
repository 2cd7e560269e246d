"""The built-in sampler `cfg` (also named `img2img`): its contract suite, guidance rescale, default strength."""

from __future__ import annotations

import pytest
import torch

import core
from core.contracts import SamplerContract
from core.contracts.oracles import StandInDenoiser
from core.interfaces import SamplerInputs
from plugins.guided import guided_prediction


class TestCFG(SamplerContract):
    @pytest.fixture
    def component(self):
        return core.create("sampler", "cfg")


class TestImg2Img(SamplerContract):
    @pytest.fixture
    def component(self):
        return core.create("sampler", "img2img", strength=0.7)


class Affine:
    """A denoiser whose prediction is the mean of its context, so cond and uncond differ predictably."""

    def __call__(self, sample, timestep, context):
        return sample * 0 + context.mean(dim=(1, 2)).reshape(-1, 1, 1, 1) * torch.linspace(0, 1, sample.shape[-1])


def test_guidance_rescale_matches_its_formula():
    sample = torch.zeros(2, 1, 1, 4)
    cond, uncond = torch.full((2, 3, 5), 2.0), torch.full((2, 3, 5), -1.0)
    inputs = SamplerInputs(Affine(), core.create("scheduler", "ddim"), sample, cond, uncond, guidance_scale=3.0)
    plain = guided_prediction(Affine(), sample, torch.tensor(1), inputs, rescale=0.0)
    rescaled = guided_prediction(Affine(), sample, torch.tensor(1), inputs, rescale=0.5)
    c = Affine()(sample, 1, cond)
    expected = 0.5 * plain * (c.std(dim=(1, 2, 3), keepdim=True) / plain.std(dim=(1, 2, 3), keepdim=True)) + 0.5 * plain
    assert torch.allclose(rescaled, expected)
    assert torch.allclose(plain, -c / 2 + 3.0 * (c - (-c / 2)))


def run(sampler, strength=None, init=True):
    scheduler = core.create("scheduler", "ddim")
    noise = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(0))
    events = []
    init_latents = torch.zeros_like(noise) if init else None
    sampler(
        SamplerInputs(
            StandInDenoiser(4, 8),
            scheduler,
            noise,
            torch.zeros(1, 3, 8),
            steps=10,
            init_latents=init_latents,
            strength=strength,
            callback=events.append,
        )
    )
    return len(events)


def test_init_latents_use_the_configured_strength_unless_given():
    sampler = core.create("sampler", "img2img", strength=0.3)
    assert run(sampler) == 3
    assert run(sampler, strength=0.6) == 6
    assert run(sampler, init=False) == 10
    assert run(core.create("sampler", "cfg")) == 8  # the default strength, 0.8


def test_img2img_is_the_cfg_sampler_under_its_old_name():
    assert type(core.create("sampler", "img2img")) is type(core.create("sampler", "cfg"))


def test_strength_without_init_latents_is_an_input_error():
    with pytest.raises(core.InputError, match="needs init latents"):
        run(core.create("sampler", "cfg"), strength=0.5, init=False)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("strength", [0.3, 0.5, 0.8, 1.0])
def test_img2img_with_a_scheduler_that_takes_no_strength_starts_where_diffusers_does(strength):
    """diffusers' own DDIMScheduler (a test-only oracle: `set_timesteps(n, device)`, no `strength`) through the
    sampler: the run starts at the timestep diffusers' img2img pipeline starts at, and takes its steps."""
    diffusers = pytest.importorskip("diffusers")
    steps = 10
    ours = diffusers.DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    reference = diffusers.DDIMScheduler.from_config(ours.config)
    reference.set_timesteps(steps)
    kept = min(int(steps * strength), steps)
    expected = reference.timesteps[steps - kept :].tolist()
    noise = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(0))
    events = []
    run = SamplerInputs(StandInDenoiser(4, 8), ours, noise, torch.zeros(1, 3, 8), steps=steps,
                        init_latents=torch.zeros_like(noise), strength=strength, callback=events.append)  # fmt: skip
    core.create("sampler", "cfg")(run)
    assert [int(e.timestep) for e in events] == expected
