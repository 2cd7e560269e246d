"""Conditioning beyond one tensor (`core/conditioning.py`, issue 14): denoisers written to the first interface
keep working, added inputs reach the denoiser from the text conditioner and the micro-conditioning, and a
pipeline whose parts do not agree on them — or on the prediction type — is refused when it is built."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

import core
from core.conditioning import added_for, guidance_batch, missing_inputs
from plugins import unet

PROMPT = "a red circle"


class ThreeArgumentDenoiser(torch.nn.Module):
    """A third-party denoiser written to the first interface: exactly (sample, timestep, context), no **kwargs."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.in_channels, self.context_dim = inner.in_channels, inner.context_dim
        self.prediction_type = inner.prediction_type
        self.calls = 0

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.inner(sample, timestep, context)


class PooledDenoiser(ThreeArgumentDenoiser):
    """Takes `pooled` (the context's width) and `size` (2,) from its micro-conditioning; records what it got."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__(inner)
        self.added_inputs = {"pooled": (inner.context_dim,), "size": (2,)}
        self.seen: list[dict[str, torch.Tensor]] = []

    def micro_conditioning(self, height: int, width: int) -> dict[str, torch.Tensor]:
        return {"size": torch.tensor([height, width], dtype=torch.float32)}

    def forward(self, sample, timestep, context, *, pooled, size):  # type: ignore[override]
        self.seen.append({"pooled": pooled, "size": size, "context": context})
        return super().forward(sample, timestep, context) + 0.01 * pooled.mean(dim=1)[:, None, None, None]


class PooledText(torch.nn.Module):
    """Wraps a text conditioner; adds `pooled` = the mean over tokens of the context."""

    def __init__(self, inner: torch.nn.Module, width: int | None = None) -> None:
        super().__init__()
        self.inner = inner
        self.max_length, self.embedding_dim = inner.max_length, inner.embedding_dim
        self.added_outputs = {"pooled": (width or inner.embedding_dim,)}

    def forward(self, prompts: list[str]) -> core.Conditioning:
        context = self.inner(prompts)
        return core.Conditioning(context, {"pooled": context.mean(dim=1)})


def test_a_denoiser_written_to_the_first_interface_builds_and_runs(tiny_pipeline: core.Pipeline) -> None:
    denoiser = ThreeArgumentDenoiser(tiny_pipeline.denoiser)
    pipe = dataclasses.replace(tiny_pipeline, denoiser=denoiser)
    assert torch.equal(pipe(PROMPT, seed=1).pixels, tiny_pipeline(PROMPT, seed=1).pixels)
    assert denoiser.calls == 4


def test_added_inputs_come_from_the_text_and_the_micro_conditioning(tiny_pipeline: core.Pipeline) -> None:
    denoiser = PooledDenoiser(tiny_pipeline.denoiser)
    pipe = dataclasses.replace(tiny_pipeline, denoiser=denoiser, text=PooledText(tiny_pipeline.text))
    pipe([PROMPT, "a cat"], seed=1, num_images=2, height=32, width=48, negative_prompt="blurry")
    for seen in denoiser.seen:  # 4 images under guidance: 8 rows, unconditional ones first
        assert seen["pooled"].shape == (8, pipe.text.embedding_dim)
        assert torch.equal(seen["pooled"], seen["context"].mean(dim=1))  # each row's own prompt
        assert seen["size"].tolist() == [[32.0, 48.0]] * 8


def test_a_denoiser_input_no_part_gives_is_refused_when_the_pipeline_is_built(tiny_pipeline) -> None:
    with pytest.raises(core.RegistryError, match=r"takes the added input 'pooled' .* \(a pooled text embedding\)"):
        dataclasses.replace(tiny_pipeline, denoiser=PooledDenoiser(tiny_pipeline.denoiser))
    narrow = PooledText(tiny_pipeline.text, width=3)
    problems = missing_inputs(PooledDenoiser(tiny_pipeline.denoiser), narrow)
    assert problems == [
        f"the denoiser takes 'pooled' of per-sample shape ({tiny_pipeline.text.embedding_dim},), but it is given (3,)"
    ]


def test_guidance_batches_the_unconditional_rows_first() -> None:
    cond, uncond, size = torch.ones(2, 3), torch.zeros(2, 3), torch.full((2, 2), 7.0)
    batch = guidance_batch({"pooled": cond, "size": size}, {"pooled": uncond})
    assert torch.equal(batch["pooled"], torch.cat([uncond, cond]))
    assert torch.equal(batch["size"], torch.cat([size, size]))  # the unconditional half lacks it: same values


def test_the_text_conditioners_value_wins_over_the_micro_conditioning(tiny_pipeline) -> None:
    denoiser = PooledDenoiser(tiny_pipeline.denoiser)
    given = core.Conditioning(torch.zeros(2, 5, 4), {"pooled": torch.ones(2, 4), "size": torch.full((2, 2), 9.0)})
    added = added_for(denoiser, given, 16, 24)
    assert added["size"].tolist() == [[9.0, 9.0]] * 2 and set(added) == {"pooled", "size"}


def registry(tmp_path: Path, tiny_registry: Path, denoiser: str, scheduler: str) -> core.Registry:
    """The tiny registry with its pipeline's denoiser and scheduler config blocks replaced."""
    text = tiny_registry.read_text()
    text = text.replace("    denoiser: tiny-denoiser\n", f"    denoiser: {denoiser}\n")
    text = text.replace("scheduler: {plugin: ddim, config: {", f"scheduler: {{plugin: ddim, config: {{{scheduler}")
    path = tmp_path / "registry.yaml"
    path.write_text(text.replace("weights: ", f"weights: {tiny_registry.parent}/"))
    return core.load_registry(path)


def test_the_scheduler_reads_predictions_as_the_denoiser_makes_them(tmp_path: Path, tiny_registry: Path) -> None:
    """A registry that sets no prediction_type for the scheduler gets the denoiser's, and a swap carries it."""
    config = json.dumps({**unet.SPEC.example_config, "prediction_type": "v_prediction"})
    denoiser = f"{{plugin: unet2d-condition, weights: denoiser.safetensors, config: {config}}}"
    pipe = registry(tmp_path, tiny_registry, denoiser, "").build("tiny", device="cpu")
    assert pipe.scheduler.config.prediction_type == "v_prediction"
    assert pipe.settings(PROMPT, scheduler="euler").scheduler_config["prediction_type"] == "v_prediction"


def test_a_scheduler_set_to_another_prediction_type_is_refused(tmp_path: Path, tiny_registry: Path) -> None:
    with pytest.raises(core.RegistryError, match=r"predicts 'epsilon' but the scheduler's prediction_type is 'v_pr"):
        registry(tmp_path, tiny_registry, "tiny-denoiser", "prediction_type: v_prediction, ").build(
            "tiny", device="cpu"
        )
