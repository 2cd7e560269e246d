"""Every contract suite can fail: a toy component with one property broken fails exactly the check for it.

Each case subclasses a correct toy component from tests/toy_plugin.py, breaks one property, runs the suite
through `run_contract`, and asserts which checks fail (with a useful message) and that the others pass.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
import torch
import toy_plugin as toy
from pydantic import ConfigDict, field_serializer

from core import InputError, StepEvent
from core.contracts import SamplerContract, run_contract
from core.interfaces import SamplerInputs, should_stop

Scheduler, Denoiser, Encoder = toy.ToyScheduler, toy.ToyDenoiser, toy.ToyEncoder
Text, Sampler = toy.ToyText, toy.ToySampler


# ------------------------------------------------------------------------------------------- schedulers
class SwappedTimesteps(Scheduler):
    """The second and third timesteps of a full run are swapped."""

    def set_timesteps(self, num_inference_steps: int, device: Any = None, *, strength: float = 1.0) -> None:
        super().set_timesteps(num_inference_steps, device, strength=strength)
        if strength == 1.0:
            self.timesteps = self.timesteps[[0, 2, 1, *range(3, len(self.timesteps))]]


class NegativeLastTimestep(Scheduler):
    """Timesteps shifted down by one, so the last is -1 (looked up as 0)."""

    def set_timesteps(self, num_inference_steps: int, device: Any = None, *, strength: float = 1.0) -> None:
        super().set_timesteps(num_inference_steps, device, strength=strength)
        self.timesteps = self.timesteps - 1

    def _alpha_bar(self, timesteps: Any) -> torch.Tensor:
        return super()._alpha_bar(torch.as_tensor(timesteps).clamp(min=0))


class SkipsFirstStep(Scheduler):
    """A full run (strength 1) has one timestep too few."""

    def set_timesteps(self, num_inference_steps: int, device: Any = None, *, strength: float = 1.0) -> None:
        super().set_timesteps(num_inference_steps, device, strength=strength)
        if strength == 1.0:
            self.timesteps = self.timesteps[1:]


class IgnoresStrength(Scheduler):
    def set_timesteps(self, num_inference_steps: int, device: Any = None, *, strength: float = 1.0) -> None:
        super().set_timesteps(num_inference_steps, device)


class ZeroInitSigma(Scheduler):
    init_noise_sigma = 0.0


class ScaleUpcasts(Scheduler):
    def scale_model_input(self, sample: torch.Tensor, timestep: Any) -> torch.Tensor:
        return sample.double()


class LastAlphaNotOne(Scheduler):
    """The last step goes to t = 0 (ᾱ_0) instead of ᾱ = 1, like diffusers' DDIM with set_alpha_to_one=False."""

    def step(self, model_output: torch.Tensor, timestep: Any, sample: torch.Tensor, *, generator: Any = None) -> Any:
        if self._step_ratio is None or int(timestep) >= self._step_ratio:
            return super().step(model_output, timestep, sample)
        ratio, self._step_ratio = self._step_ratio, int(timestep)  # so that prev_t = 0
        try:
            return super().step(model_output, timestep, sample)
        finally:
            self._step_ratio = ratio


class PredictedX0OfFirstItem(Scheduler):
    def step(self, model_output: torch.Tensor, timestep: Any, sample: torch.Tensor, *, generator: Any = None) -> Any:
        out = super().step(model_output, timestep, sample)
        return type(out)(out.prev_sample, out.pred_original_sample[:1])


class AlwaysEpsilon(Scheduler):
    """Reads every model output as ε, whatever config.prediction_type says."""

    def step(self, model_output: torch.Tensor, timestep: Any, sample: torch.Tensor, *, generator: Any = None) -> Any:
        if self._step_ratio is None:
            return super().step(model_output, timestep, sample)
        correct, self.config = self.config, self.config.model_copy(update={"prediction_type": "epsilon"})
        try:
            return super().step(model_output, timestep, sample)
        finally:
            self.config = correct


class AddNoiseFirstTimestepOnly(Scheduler):
    """add_noise uses the first of (B,) timesteps for the whole batch."""

    def add_noise(self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: Any) -> torch.Tensor:
        return super().add_noise(original_samples, noise, torch.as_tensor(timesteps).reshape(-1)[0])


class IgnoresGenerator(Scheduler):
    """Draws noise from the global RNG (except on the last step)."""

    def step(self, model_output: torch.Tensor, timestep: Any, sample: torch.Tensor, *, generator: Any = None) -> Any:
        out = super().step(model_output, timestep, sample)
        if int(timestep) - self._step_ratio < 0:
            return out
        noise = torch.randn(sample.shape, dtype=sample.dtype)  # global RNG
        return type(out)(out.prev_sample + 0.01 * noise, out.pred_original_sample)


class Fp16Upcasts(Scheduler):
    def step(self, model_output: torch.Tensor, timestep: Any, sample: torch.Tensor, *, generator: Any = None) -> Any:
        out = super().step(model_output, timestep, sample)
        return type(out)(out.prev_sample.float(), out.pred_original_sample)


class MutableConfig(toy.ToySchedulerConfig):
    model_config = ConfigDict(extra="forbid", frozen=False)


class LossyJsonConfig(toy.ToySchedulerConfig):
    @field_serializer("beta_end", when_used="json")
    def _rounded(self, value: float) -> float:
        return round(value, 3)


class BatchCoupled(Scheduler):
    """Every step but the last leaks the batch mean into each sample."""

    def step(self, model_output: torch.Tensor, timestep: Any, sample: torch.Tensor, *, generator: Any = None) -> Any:
        out = super().step(model_output, timestep, sample)
        if int(timestep) - self._step_ratio < 0:
            return out
        return type(out)(out.prev_sample + 0.01 * sample.mean(dim=0, keepdim=True), out.pred_original_sample)


class RawErrorBeforeSetTimesteps(Scheduler):
    def step(self, model_output: torch.Tensor, timestep: Any, sample: torch.Tensor, *, generator: Any = None) -> Any:
        if self._step_ratio is None:
            raise ValueError("no timesteps")
        return super().step(model_output, timestep, sample)


class KeywordsOnly(Scheduler):
    """diffusers' style: built from keyword arguments; handed its own config object, it fails."""

    def __init__(self, config: Any = None, **kwargs: Any) -> None:
        if config is not None:
            raise TypeError("expected keyword arguments")
        super().__init__(toy.ToySchedulerConfig(**kwargs))


SCHEDULER_CASES: dict[str, tuple[Callable[[], Any], set[str]]] = {
    "constructor refuses its own config": (
        KeywordsOnly,
        {  # and every check that rebuilds the scheduler, each with a one-line pointer to the first
            "constructor_accepts_its_own_config",
            "true_noise_ends_at_x0",
            "same_generator_same_result",
            "fp16_in_fp16_out",
            "config_round_trips_through_dict",
            "config_round_trips_through_json",
            "batch_of_n_equals_n_singles",
            "step_before_set_timesteps_raises",
        },
    ),
    "timesteps out of order": (lambda: SwappedTimesteps(toy.ToySchedulerConfig()), {"timesteps_descending"}),
    "timesteps out of range": (lambda: NegativeLastTimestep(toy.ToySchedulerConfig()), {"timesteps_in_range"}),
    "one timestep too few": (lambda: SkipsFirstStep(toy.ToySchedulerConfig()), {"timesteps_count"}),
    "strength ignored": (lambda: IgnoresStrength(toy.ToySchedulerConfig()), {"strength_keeps_the_last_steps"}),
    "init_noise_sigma 0": (lambda: ZeroInitSigma(toy.ToySchedulerConfig()), {"init_noise_sigma"}),
    "scale_model_input upcasts": (
        lambda: ScaleUpcasts(toy.ToySchedulerConfig()),
        {"scale_model_input_keeps_shape_dtype_device"},
    ),
    "pred_original_sample of one item": (lambda: PredictedX0OfFirstItem(toy.ToySchedulerConfig()), {"step_output"}),
    "last step stops short of ᾱ=1": (lambda: LastAlphaNotOne(toy.ToySchedulerConfig()), {"true_noise_ends_at_x0"}),
    "prediction_type ignored": (
        lambda: AlwaysEpsilon(toy.ToySchedulerConfig(prediction_type="v_prediction")),
        {"true_noise_ends_at_x0"},
    ),
    "add_noise ignores per-sample timesteps": (
        lambda: AddNoiseFirstTimestepOnly(toy.ToySchedulerConfig()),
        {"add_noise_matches_forward_process"},
    ),
    "generator ignored": (
        lambda: IgnoresGenerator(toy.ToySchedulerConfig()),
        {"same_generator_same_result", "config_round_trips_through_dict", "config_round_trips_through_json"},
    ),
    "fp16 step returns fp32": (lambda: Fp16Upcasts(toy.ToySchedulerConfig()), {"fp16_in_fp16_out"}),
    "config not frozen": (lambda: Scheduler(MutableConfig()), {"config_is_frozen_pydantic"}),
    "config loses precision in JSON": (
        lambda: Scheduler(LossyJsonConfig(beta_end=0.0123)),
        {"config_round_trips_through_json"},
    ),
    "batch items coupled": (lambda: BatchCoupled(toy.ToySchedulerConfig()), {"batch_of_n_equals_n_singles"}),
    "raw error before set_timesteps": (
        lambda: RawErrorBeforeSetTimesteps(toy.ToySchedulerConfig()),
        {"step_before_set_timesteps_raises"},
    ),
}


# -------------------------------------------------------------------------------------------- denoisers
class DropsAChannel(Denoiser):
    def forward(self, sample: torch.Tensor, timestep: Any, context: torch.Tensor) -> torch.Tensor:
        return super().forward(sample, timestep, context)[:, 1:]


class FloatTimestepsRescaled(Denoiser):
    """Treats float timesteps as if they were in [0, 1] (multiplies them by 1000)."""

    def forward(self, sample: torch.Tensor, timestep: Any, context: torch.Tensor) -> torch.Tensor:
        if isinstance(timestep, float) or (isinstance(timestep, torch.Tensor) and timestep.is_floating_point()):
            timestep = timestep * 1000
        return super().forward(sample, timestep, context)


class BatchNormalised(Denoiser):
    def forward(self, sample: torch.Tensor, timestep: Any, context: torch.Tensor) -> torch.Tensor:
        return super().forward(sample - sample.mean(dim=0, keepdim=True), timestep, context)


class StateDictMissesABias(Denoiser):
    """conv_out.bias is a parameter but not part of the saved state, so a load never restores it."""

    def state_dict(self, *args: Any, **kwargs: Any) -> Any:
        state = super().state_dict(*args, **kwargs)
        state.pop("conv_out.bias")
        return state


class NoContextCheck(Denoiser):
    """Skips its context validation, so a wrong width ends in a raw torch error."""

    def forward(self, sample: torch.Tensor, timestep: Any, context: torch.Tensor) -> torch.Tensor:
        if context.shape[-1] != self.context_dim:
            return self.context_proj(context).mean()
        return super().forward(sample, timestep, context)


class TakesPooled(Denoiser):
    """Declares the added input `pooled` (context_dim,) and shifts its output by it; refuses a call without it."""

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self.added_inputs = {"pooled": (config.context_dim,)}

    def forward(self, sample: torch.Tensor, timestep: Any, context: torch.Tensor, **added: torch.Tensor) -> Any:
        if "pooled" not in added:
            raise InputError("takes-pooled: the added input 'pooled' is missing")
        shift = 0.1 * added["pooled"].mean(dim=1)[:, None, None, None]  # (B, 1, 1, 1)
        return super().forward(sample, timestep, context) + shift


class UndeclaredMicroConditioning(TakesPooled):
    """Derives `time_ids` from the image size without declaring it."""

    def micro_conditioning(self, height: int, width: int) -> dict[str, torch.Tensor]:
        return {"time_ids": torch.tensor([height, width], dtype=torch.float32)}


class ZeroPooledWhenMissing(TakesPooled):
    """Runs on zeros when `pooled` is not given, where it should refuse the call."""

    def forward(self, sample: torch.Tensor, timestep: Any, context: torch.Tensor, **added: torch.Tensor) -> Any:
        pooled = added.get("pooled", torch.zeros(sample.shape[0], self.context_dim))
        return super().forward(sample, timestep, context, pooled=pooled)


class UnknownPredictionType(Denoiser):
    prediction_type = "eps"

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self.prediction_type = "eps"


DENOISER_CASES: dict[str, tuple[Callable[[], Any], set[str]]] = {
    "unknown prediction_type": (lambda: UnknownPredictionType(toy.ToyDenoiserConfig()), {"attributes"}),
    "output loses a channel": (lambda: DropsAChannel(toy.ToyDenoiserConfig()), {"output_shape_and_dtype"}),
    "float timesteps rescaled": (lambda: FloatTimestepsRescaled(toy.ToyDenoiserConfig()), {"timestep_forms_agree"}),
    "batch statistics": (lambda: BatchNormalised(toy.ToyDenoiserConfig()), {"batch_independence"}),
    "weight outside the state dict": (
        lambda: StateDictMissesABias(toy.ToyDenoiserConfig()),
        {"safetensors_round_trip"},
    ),
    "raw torch error for a wrong context": (
        lambda: NoContextCheck(toy.ToyDenoiserConfig()),
        {"wrong_context_width_is_a_diffstack_error"},
    ),
    "micro-conditioning not declared": (
        lambda: UndeclaredMicroConditioning(toy.ToyDenoiserConfig()),
        {"added_inputs_declared"},
    ),
    "missing added input run on zeros": (
        lambda: ZeroPooledWhenMissing(toy.ToyDenoiserConfig()),
        {"missing_added_input_is_a_diffstack_error"},
    ),
}


# --------------------------------------------------------------------------------------------- encoders
class NegativeScale(Encoder):
    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self.scaling_factor = -config.scaling_factor


class SampledLatentsInFloat64(Encoder):
    def encode(self, images: torch.Tensor, *, generator: Any = None, sample: bool = True) -> torch.Tensor:
        latents = super().encode(images, generator=generator, sample=sample)
        return latents.double() if sample else latents


class DecodeCrops(Encoder):
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return super().decode(latents)[:, :, 1:]


class UnclampedDecode(Encoder):
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return torch.atanh(super().decode(latents).clamp(-0.999, 0.999)) * 2


class ModeSamples(Encoder):
    """sample=False still draws noise (from the global RNG)."""

    def encode(self, images: torch.Tensor, *, generator: Any = None, sample: bool = True) -> torch.Tensor:
        return super().encode(images, generator=generator, sample=True)


class GlobalRngSampling(Encoder):
    def encode(self, images: torch.Tensor, *, generator: Any = None, sample: bool = True) -> torch.Tensor:
        return super().encode(images, generator=None, sample=sample)


class BatchCentred(Encoder):
    def encode(self, images: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        latents = super().encode(images, **kwargs)
        return latents - 0.1 * latents.mean(dim=0, keepdim=True)


class NoSizeCheck(Encoder):
    def encode(self, images: torch.Tensor, *, generator: Any = None, sample: bool = True) -> torch.Tensor:
        latents = self.to_moments(torch.nn.functional.pixel_unshuffle(images, 2)).chunk(2, dim=1)[0]
        return latents * self.scaling_factor


ENCODER_CASES: dict[str, tuple[Callable[[], Any], set[str]]] = {
    "negative scaling_factor": (lambda: NegativeScale(toy.ToyEncoderConfig()), {"attributes"}),
    "sampled latents change dtype": (lambda: SampledLatentsInFloat64(toy.ToyEncoderConfig()), {"encode_shape"}),
    "decode crops a row": (lambda: DecodeCrops(toy.ToyEncoderConfig()), {"decode_keeps_shape"}),
    "decode leaves [-1, 1]": (lambda: UnclampedDecode(toy.ToyEncoderConfig()), {"decode_range"}),
    "sample=False samples": (
        lambda: ModeSamples(toy.ToyEncoderConfig()),
        {"mode_is_deterministic", "batch_independence"},
    ),
    "generator ignored": (lambda: GlobalRngSampling(toy.ToyEncoderConfig()), {"sampling_reproducible_with_generator"}),
    "batch statistics": (lambda: BatchCentred(toy.ToyEncoderConfig()), {"batch_independence"}),
    "raw torch error for a bad size": (
        lambda: NoSizeCheck(toy.ToyEncoderConfig()),
        {"size_not_a_multiple_is_an_input_error"},
    ),
}


# ----------------------------------------------------------------------------------------- text models
class FloatEmbeddingDim(Text):
    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self.embedding_dim = float(config.embedding_dim)


class PadsToLongest(Text):
    """Pads a batch to its longest prompt instead of max_length."""

    def forward(self, prompts: list[str]) -> torch.Tensor:
        longest = max(len(self.tokenize(p)) - self.tokenize(p).count(self.PAD) for p in prompts)
        return super().forward(prompts)[:, :longest]


class EmptyPromptCrashes(Text):
    def tokenize(self, prompt: str) -> list[int]:
        first = prompt[0]  # IndexError for ""
        return super().tokenize(first + prompt[1:])


class SilentTruncation(Text):
    def tokenize(self, prompt: str) -> list[int]:
        return super().tokenize(prompt[: self.max_length - 2])


class AsciiOnly(Text):
    def tokenize(self, prompt: str) -> list[int]:
        return super().tokenize(prompt.encode("ascii").decode())


class CountsCalls(Text):
    """Drifts with every call, as if it had a dropout left on."""

    calls = 0

    def forward(self, prompts: list[str]) -> torch.Tensor:
        self.calls += 1
        return super().forward(prompts) + 1e-3 * self.calls


class BatchMixed(Text):
    def forward(self, prompts: list[str]) -> torch.Tensor:
        out = super().forward(prompts)
        return out + 0.1 * out.mean(dim=0, keepdim=True)


TEXT_CASES: dict[str, tuple[Callable[[], Any], set[str]]] = {
    "embedding_dim not an int": (lambda: FloatEmbeddingDim(toy.ToyTextConfig()), {"attributes"}),
    "padded to the longest prompt": (
        lambda: PadsToLongest(toy.ToyTextConfig()),
        {"output_shape", "empty_prompt", "unicode_and_emoji", "batch_independence"},
    ),
    "empty prompt crashes": (lambda: EmptyPromptCrashes(toy.ToyTextConfig()), {"empty_prompt"}),
    "silent truncation": (lambda: SilentTruncation(toy.ToyTextConfig()), {"long_prompt_truncated_with_warning"}),
    "ascii only": (lambda: AsciiOnly(toy.ToyTextConfig()), {"unicode_and_emoji"}),
    "not deterministic": (lambda: CountsCalls(toy.ToyTextConfig()), {"deterministic", "batch_independence"}),
    "batch statistics": (lambda: BatchMixed(toy.ToyTextConfig()), {"batch_independence"}),
}


# --------------------------------------------------------------------------------------------- samplers
class GuidanceWithoutDifference(Sampler):
    """pred = u + g·c: forgets to subtract u."""

    def _predict(self, x: Any, t: Any, job: SamplerInputs) -> Any:
        if job.uncond_context is None:
            return job.denoiser(x, t, job.context, **job.added)
        uncond = job.denoiser(x, t, job.uncond_context, **{**job.added, **job.uncond_added})
        return uncond + job.guidance_scale * job.denoiser(x, t, job.context, **job.added)


class DropsAddedInputs(Sampler):
    """Calls the denoiser without the run's added inputs."""

    def _predict(self, x: Any, t: Any, job: SamplerInputs) -> Any:
        return super()._predict(x, t, replace(job, added={}, uncond_added={}))


class SwapsAddedHalves(Sampler):
    """Gives the conditional half the unconditional added inputs and the reverse."""

    def _predict(self, x: Any, t: Any, job: SamplerInputs) -> Any:
        swapped = replace(job, added={**job.added, **job.uncond_added}, uncond_added=job.added)
        return super()._predict(x, t, swapped)


class DropsLastStep(Sampler):
    """The loop runs over timesteps[:-1]."""

    def __call__(self, job: SamplerInputs) -> torch.Tensor:
        scheduler = job.scheduler
        scheduler.set_timesteps(job.steps, strength=job.strength or 1.0 if job.init_latents is not None else 1.0)
        timesteps = scheduler.timesteps
        latents = (
            job.noise if job.init_latents is None else scheduler.add_noise(job.init_latents, job.noise, timesteps[0])
        )
        for i, t in enumerate(timesteps[:-1]):
            pred = self._predict(latents, t, job)
            latents = scheduler.step(pred, t, latents, generator=job.generator).prev_sample
            if should_stop(job.callback, StepEvent(i, len(timesteps), t, latents)):
                break
        return latents


class CallbackOneTimestepAhead(Sampler):
    def __call__(self, job: SamplerInputs) -> Any:
        callback = job.callback

        def shifted(event: Any) -> None:
            ts = job.scheduler.timesteps
            event.timestep = ts[min(event.step + 1, len(ts) - 1)]
            callback(event)

        return super().__call__(replace(job, callback=shifted if callback else None))


class IgnoresStop(Sampler):
    def __call__(self, job: SamplerInputs) -> Any:
        callback = job.callback

        def unstoppable(event: Any) -> None:
            callback(event)
            event.stop_requested = False

        return super().__call__(replace(job, callback=unstoppable if callback else None))


class IgnoresInitLatents(Sampler):
    def __call__(self, job: SamplerInputs) -> Any:
        return super().__call__(replace(job, init_latents=None, strength=None))


class SkipsInputScaling(Sampler):
    """Feeds the denoiser the unscaled latents (harmless for VP rules, wrong for σ-space ones)."""

    def __call__(self, job: SamplerInputs) -> Any:
        scheduler = job.scheduler

        class Unscaled:
            def __getattr__(self, name: str) -> Any:
                return getattr(scheduler, name)

            def scale_model_input(self, sample: torch.Tensor, timestep: Any) -> torch.Tensor:
                return sample

        return super().__call__(replace(job, scheduler=Unscaled()))


class EulerSamplerContract(SamplerContract):
    """The sampler suite driven by the σ-space toy rule, so that a skipped input scaling shows."""

    def make_scheduler(self) -> Any:
        return toy.ToyEulerScheduler(toy.ToySchedulerConfig())


SAMPLER_CASES: dict[str, tuple[Callable[[], Any], set[str]]] = {
    "guidance formula without the difference": (
        lambda: GuidanceWithoutDifference(toy.ToySamplerConfig()),
        {"guidance_one_equals_unguided", "oracle_lands_on_x0_with_guidance"},
    ),
    "last step dropped": (
        lambda: DropsLastStep(toy.ToySamplerConfig()),
        {
            "oracle_lands_on_x0",
            "oracle_lands_on_x0_with_guidance",
            "oracle_lands_on_x0_from_init_latents",
            "callback_once_per_step_in_order",
        },
    ),
    "callback timesteps shifted": (
        lambda: CallbackOneTimestepAhead(toy.ToySamplerConfig()),
        {"callback_once_per_step_in_order"},
    ),
    "request_stop ignored": (lambda: IgnoresStop(toy.ToySamplerConfig()), {"request_stop_ends_early"}),
    "added inputs dropped": (lambda: DropsAddedInputs(toy.ToySamplerConfig()), {"added_inputs_follow_their_half"}),
    "added inputs in the wrong half": (
        lambda: SwapsAddedHalves(toy.ToySamplerConfig()),
        {"added_inputs_follow_their_half"},
    ),
    "input scaling skipped": (
        lambda: SkipsInputScaling(toy.ToySamplerConfig()),
        {"oracle_lands_on_x0", "oracle_lands_on_x0_with_guidance"},
    ),
    "init_latents ignored": (
        lambda: IgnoresInitLatents(toy.ToySamplerConfig()),
        {"oracle_lands_on_x0_from_init_latents"},
    ),
}


# ---------------------------------------------------------------------------------------------- datasets
class Empty(toy.ToyDataset):
    def __len__(self) -> int:
        return 0


class OutOfRange(toy.ToyDataset):
    """Pixels in [0, 255] instead of [-1, 1]."""

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str]:
        image, caption = super().__getitem__(index)
        return (image + 1) * 127.5, caption


class Shuffled(toy.ToyDataset):
    """A fresh random caption on every read."""

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str]:
        image, _ = super().__getitem__(index)
        return image, f"grey {torch.randint(0, 1000, ()).item()}"


class Wraps(toy.ToyDataset):
    """Indices past the end wrap around instead of raising IndexError."""

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str]:
        return super().__getitem__(index % len(self))


DATASET_CASES: dict[str, tuple[Callable[[], Any], set[str]]] = {
    "empty": (
        lambda: Empty(toy.ToyDatasetConfig()),
        {
            "has_items",
            "items_are_images_in_range_with_captions",
            "same_index_same_item",
            "index_past_the_end_is_an_index_error",
        },
    ),
    "pixels in [0, 255]": (lambda: OutOfRange(toy.ToyDatasetConfig()), {"items_are_images_in_range_with_captions"}),
    "random captions": (lambda: Shuffled(toy.ToyDatasetConfig()), {"same_index_same_item"}),
    "indices wrap": (lambda: Wraps(toy.ToyDatasetConfig()), {"index_past_the_end_is_an_index_error"}),
}

CASES = [
    pytest.param(kind, make, expected, id=f"{kind}: {name}")
    for kind, cases in [
        ("scheduler", SCHEDULER_CASES),
        ("denoiser", DENOISER_CASES),
        ("encoder", ENCODER_CASES),
        ("text", TEXT_CASES),
        ("sampler", SAMPLER_CASES),
        ("dataset", DATASET_CASES),
    ]
    for name, (make, expected) in cases.items()
]


@pytest.mark.parametrize(("kind", "make", "expected"), CASES)
def test_broken_component_fails_exactly_its_check(kind: str, make: Callable[[], Any], expected: set[str]) -> None:
    results = run_contract(kind, make, contract=EulerSamplerContract if kind == "sampler" else None)
    failed = {r.name: r.detail for r in results if not r.passed}
    assert set(failed) == expected, f"expected {sorted(expected)} to fail, got {failed}"
    assert all(detail.strip() for detail in failed.values()), f"a failure without a message: {failed}"


def test_every_check_is_shown_failing_somewhere() -> None:
    """Each check of each suite has a broken component above that fails it."""
    from core.contracts import CONTRACTS

    shown = {(kind, name) for kind, _, expected in (p.values for p in CASES) for name in expected}
    missing = {
        (kind, name)
        for kind, contract in CONTRACTS.items()
        for name in (n.removeprefix("test_") for n in contract.check_names())
        if (kind, name) not in shown
    }
    assert missing == set(), f"checks never shown to fail: {sorted(missing)}"
