"""`Pipeline.__call__`: seeds, batches, negative prompts, threads, step hooks, input errors."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

import core
from core import DiffstackError, InputError
from core.images import from_pil
from core.plugin_manager import PluginInfo


def pixels(image) -> np.ndarray:
    return np.asarray(image).astype(np.int16)


@pytest.mark.parametrize("scheduler", ["ddim", "euler-ancestral", "ddpm"])
def test_image_i_of_a_batch_matches_a_single_run_with_seed_plus_i_to_one_level(tiny_pipeline, scheduler):
    """Same noise, same result; CPU kernels pick batch-size-dependent blockings, so floats agree to ~1e-5
    (not bitwise) and 8-bit pixels to one level at most."""
    batch = tiny_pipeline("a red circle", seed=5, num_images=3, scheduler=scheduler).pixels
    for i in range(3):
        single = tiny_pipeline("a red circle", seed=5 + i, scheduler=scheduler).pixels
        assert (batch[i] - single[0]).abs().max() < 1e-4, f"image {i} of the batch differs from seed {5 + i}"
    assert (batch[0] - batch[1]).abs().max() > 0.1
    images = tiny_pipeline("a red circle", seed=5, num_images=2, scheduler=scheduler).images
    [second] = tiny_pipeline("a red circle", seed=6, scheduler=scheduler).images
    assert np.abs(pixels(images[1]) - pixels(second)).max() <= 1


def test_same_seed_same_image(tiny_pipeline):
    first = tiny_pipeline("a red circle", seed=9, num_images=2).images
    again = tiny_pipeline("a red circle", seed=9, num_images=2).images
    assert all(np.array_equal(pixels(a), pixels(b)) for a, b in zip(first, again, strict=True))


def test_prompt_lists_are_prompt_major(tiny_pipeline):
    images = tiny_pipeline(["a red circle", "a blue square"], seed=0, num_images=2).images
    assert len(images) == 4
    [third] = tiny_pipeline("a blue square", seed=2).images
    assert np.abs(pixels(images[2]) - pixels(third)).max() <= 1


def test_negative_prompt_changes_the_image_and_lists_must_match(tiny_pipeline):
    plain = tiny_pipeline("a red circle", seed=1).pixels
    negative = tiny_pipeline("a red circle", seed=1, negative_prompt="green").pixels
    assert (plain - negative).abs().max() > 1e-4
    per_prompt = tiny_pipeline(["a", "b"], seed=1, negative_prompt=["green", "green"]).pixels
    single = tiny_pipeline("a", seed=1, negative_prompt="green").pixels
    assert (per_prompt[:1] - single).abs().max() < 1e-4
    with pytest.raises(InputError, match="2 prompts but 3 negative prompts"):
        tiny_pipeline(["a", "b"], negative_prompt=["x", "y", "z"])


def test_guidance_one_ignores_the_negative_prompt(tiny_pipeline):
    a = tiny_pipeline("a red circle", seed=1, guidance_scale=1.0, negative_prompt="x").pixels
    b = tiny_pipeline("a red circle", seed=1, guidance_scale=1.0, negative_prompt="y").pixels
    assert torch.equal(a, b)


def test_concurrent_calls_from_two_threads(tiny_pipeline):
    jobs = [("a red circle", 3, "ddim"), ("a blue square", 4, "euler-ancestral")]
    expected = [tiny_pipeline(p, seed=s, scheduler=k).pixels for p, s, k in jobs]
    results: dict[int, torch.Tensor] = {}

    def run(index: int) -> None:
        prompt, seed, scheduler = jobs[index]
        for _ in range(3):
            results[index] = tiny_pipeline(prompt, seed=seed, scheduler=scheduler).pixels

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for index, tensor in enumerate(expected):
        assert torch.equal(results[index], tensor)


class StopAtSecondStep:
    def __init__(self) -> None:
        self.seen: list[int] = []

    @core.hookimpl
    def diffstack_step_end(self, event: core.StepEvent) -> None:
        self.seen.append(event.step)
        if event.step == 1:
            event.request_stop()


def test_a_plugin_hook_stops_the_run_early(tiny_registry):
    registry = core.load_registry(tiny_registry)
    pipe = registry.build(device="cpu")
    full = pipe("a red circle", seed=2, steps=6).pixels
    stopper = StopAtSecondStep()
    registry.plugin_manager.register(stopper, PluginInfo("stopper", __name__, "manual"))
    events: list[core.StepEvent] = []
    early = pipe("a red circle", seed=2, steps=6, callback=events.append).pixels
    assert stopper.seen == [0, 1] and [e.step for e in events] == [0, 1]
    assert not torch.equal(full, early)


def test_callback_sees_every_step_in_order(tiny_pipeline):
    events: list[core.StepEvent] = []
    tiny_pipeline("a red circle", steps=5, callback=events.append)
    assert [e.step for e in events] == [0, 1, 2, 3, 4] and all(e.num_steps == 5 for e in events)
    assert [int(e.timestep) for e in events] == sorted((int(e.timestep) for e in events), reverse=True)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"steps": 0}, r"steps \(num_inference_steps\) must be an integer in \[1, 1000\]"),
        ({"guidance_scale": -1.0}, "guidance_scale must be ≥ 0, got -1.0"),
        ({"height": 33}, r"height 33 is not a positive multiple of 2"),
        ({"num_images": 0}, "num_images must be a positive integer"),
        ({"strength": 0.5}, "strength 0.5 applies to an init image, and none was given"),
        ({"image": "source.png"}, "image must be a PIL image or a non-empty list of them, got str"),
        ({"scheduler": "eulr"}, "did you mean 'euler'"),
    ],
)
def test_bad_input_is_a_clear_error(tiny_pipeline, options, message):
    with pytest.raises(DiffstackError, match=message):
        tiny_pipeline("a red circle", **options)


def test_size_error_names_the_nearest_valid_sizes(tiny_pipeline):
    with pytest.raises(InputError) as caught:
        tiny_pipeline("a red circle", width=33)
    assert caught.value.hint == "use 32 or 34"


def test_empty_and_very_long_prompts(tiny_pipeline):
    assert len(tiny_pipeline("").images) == 1
    with pytest.warns(UserWarning, match="truncated"):
        [image] = tiny_pipeline(" ".join(["word"] * 500)).images
    assert image.size == (32, 32)


def test_nan_in_decoded_images_suggests_force_upcast(tiny_registry, monkeypatch):
    pipe = core.load_registry(tiny_registry).build(device="cpu")
    monkeypatch.setattr(pipe.encoder, "decode", lambda latents: torch.full((1, 3, 32, 32), float("nan")))
    with pytest.raises(DiffstackError, match="NaN") as caught:
        pipe("a red circle")
    assert "force_upcast" in caught.value.hint


def test_img2img_starts_from_the_init_image(tiny_pipeline):
    [source] = tiny_pipeline("a red circle", seed=1).images
    light = tiny_pipeline("a blue square", seed=2, image=source, strength=0.25).pixels
    heavy = tiny_pipeline("a blue square", seed=2, image=source, strength=1.0).pixels
    reference = from_pil([source])
    assert (light - reference).abs().mean() < (heavy - reference).abs().mean()
    with pytest.raises(InputError, match="init image is 32×32 but the run is 64×64"):
        tiny_pipeline("x", image=source, height=64, width=64)
    with pytest.raises(InputError, match=r"strength must be a number in \(0, 1\], got 1.5"):
        tiny_pipeline("x", image=source, strength=1.5)


def test_naming_the_pipelines_own_scheduler_keeps_its_options(tiny_registry, tmp_path):
    """The pipeline's DDIM sets clip_sample: false; asking for "ddim" by name must not reset it."""
    text = tiny_registry.read_text().replace(
        "{beta_schedule: scaled_linear, beta_start: 0.00085, beta_end: 0.012}",
        "{beta_schedule: scaled_linear, beta_start: 0.00085, beta_end: 0.012, clip_sample: false}",
    )
    for name in ("encoder", "denoiser", "text"):
        (tmp_path / f"{name}.safetensors").write_bytes((tiny_registry.parent / f"{name}.safetensors").read_bytes())
    (tmp_path / "registry.yaml").write_text(text)
    pipe = core.load_registry(tmp_path / "registry.yaml").build(device="cpu")
    assert pipe.scheduler.config.clip_sample is False
    plain = pipe("a red circle", seed=3).pixels
    assert torch.equal(pipe("a red circle", seed=3, scheduler="ddim").pixels, plain)
    swapped = pipe("a red circle", seed=3, scheduler="euler").pixels
    assert swapped.shape == plain.shape


def test_an_init_image_means_img2img_on_the_bundled_default_pipeline():
    """No strength given: the pipeline's default strength (0.8) keeps more of the init image than strength 1."""
    from core.registry import bundled_registry_path

    pipe = core.load_registry(bundled_registry_path()).build(device="cpu")
    [source] = pipe("a large red circle on a blue background", seed=1, progress=False).images
    default = pipe("a large red circle on a blue background", seed=2, image=source, progress=False)
    full = pipe("a large red circle on a blue background", seed=2, image=source, strength=1.0, progress=False)
    reference = from_pil([source])
    assert default.settings.strength == 0.8 and full.settings.strength == 1.0
    assert (default.pixels - reference).abs().mean() < (full.pixels - reference).abs().mean()


def test_without_a_default_size_the_model_states_its_own(tiny_pipeline):
    """No `defaults: {height, width}`: the denoiser's `sample_size` (latent side) × the encoder's downsample
    factor; a denoiser stating none makes the call say what to pass."""
    import dataclasses

    from core.registry_schema import PipelineDefaults

    bare = dataclasses.replace(tiny_pipeline, defaults=PipelineDefaults(steps=2))
    side = tiny_pipeline.denoiser.sample_size * tiny_pipeline.encoder.downsample_factor
    settings = bare.settings("a red circle")
    assert (settings.height, settings.width) == (side, side) and (settings.steps, settings.guidance_scale) == (2, 7.5)

    class Sizeless(torch.nn.Module):
        in_channels, context_dim = tiny_pipeline.denoiser.in_channels, tiny_pipeline.denoiser.context_dim
        prediction_type = "epsilon"

    with pytest.raises(InputError, match="sets no default height and its denoiser states no sample_size"):
        dataclasses.replace(bare, denoiser=Sizeless()).settings("a red circle")
    assert dataclasses.replace(bare, denoiser=Sizeless()).settings("x", height=16, width=16).height == 16
