"""The five interfaces every diffstack pipeline is assembled from, and the `Dataset` training reads.

Structural types (`typing.Protocol`): a plugin need not inherit anything, it only has to provide these
attributes and methods. The contract suites in `core.contracts` check the behaviour behind them.

Shape letters: B batch, C latent channels, f encoder downsample factor, H/W image size, h/w latent size
(H/f, W/f), L tokens, D embedding width. Components holding weights are `torch.nn.Module`s, accept
`.to(device, dtype)` and run under `torch.inference_mode()`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, get_args, runtime_checkable

import torch
from pydantic import BaseModel

Kind = Literal["encoder", "denoiser", "text", "scheduler", "sampler", "dataset"]
KINDS: tuple[Kind, ...] = get_args(Kind)
"""Every kind of component, one interface each (below)."""
PIPELINE_KINDS: tuple[Kind, ...] = KINDS[:-1]
"""The five parts of a pipeline, in the order they are built; a dataset only feeds training and evaluation."""
ModelKind = Literal["encoder", "denoiser", "text"]
MODEL_KINDS: tuple[ModelKind, ...] = get_args(ModelKind)
"""The parts that hold weights (`torch.nn.Module`s): the ones a checkpoint fills."""
PredictionType = Literal["epsilon", "v_prediction", "sample"]
Generators = torch.Generator | Sequence[torch.Generator] | None
"""One generator for the whole batch, or one per sample (sample i then draws only from generator i)."""


@dataclass(frozen=True)
class StepOutput:
    """What `Scheduler.step` returns.

    prev_sample: (B, C, h, w), the sample at the next (lower-noise) timestep.
    pred_original_sample: (B, C, h, w) or None, the scheduler's estimate of the clean latent x0.
    """

    prev_sample: torch.Tensor
    pred_original_sample: torch.Tensor | None = None


@dataclass
class StepEvent:
    """One finished denoising step, handed to the step callback and the `diffstack_step_end` hook.

    step: 0-based index of the finished step; num_steps: steps in this run;
    timestep: 0-d tensor, the timestep just processed; latents: (B, C, h, w), the sample after the step;
    pred_original_sample: (B, C, h, w) or None, the x0 estimate at this step (for previews).
    Call `request_stop()` to end the run after this step; the sampler then returns `latents` as they are.
    """

    step: int
    num_steps: int
    timestep: torch.Tensor
    latents: torch.Tensor
    pred_original_sample: torch.Tensor | None = None
    stop_requested: bool = field(default=False, init=False)

    def request_stop(self) -> None:
        self.stop_requested = True


StepCallback = Callable[[StepEvent], None]


def should_stop(callback: StepCallback | None, event: StepEvent) -> bool:
    """Hand `event` to `callback` (when there is one); True when the run should end after this step."""
    if callback is not None:
        callback(event)
    return event.stop_requested


@runtime_checkable
class Encoder(Protocol):
    """Image ⇄ latent autoencoder (e.g. VAE-KL).

    `encode(images)`: images (B, 3, H, W) float in [-1, 1], H and W multiples of `downsample_factor`
    → latents (B, latent_channels, H/f, W/f), already multiplied by `scaling_factor`. `sample=True` draws
    from the posterior with `generator`; `sample=False` returns its mode (deterministic).
    `decode(latents)`: (B, latent_channels, h, w) scaled latents → images (B, 3, h·f, w·f) in [-1, 1].
    """

    latent_channels: int
    downsample_factor: int
    scaling_factor: float

    def encode(
        self, images: torch.Tensor, *, generator: torch.Generator | None = None, sample: bool = True
    ) -> torch.Tensor: ...

    def decode(self, latents: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class Denoiser(Protocol):
    """Predicts the *entire* noise (or v, or x0, per `prediction_type`) in a noisy latent.

    `__call__(sample, timestep, context)`: sample (B, in_channels, h, w); timestep a Python number, a 0-d
    tensor or a (B,) tensor, int or float, in [0, num_train_timesteps); context (B, L, context_dim)
    → prediction (B, in_channels, h, w) in the dtype of `sample`; a context of another width raises a
    `core.DiffstackError` (`core.InputError`), not a torch error. Optionally, `sample_size`: the latent side
    h = w the model was trained at; a pipeline whose registry sets no default size generates at sample_size ×
    the encoder's downsample factor.

    Conditioning beyond the context (SDXL, SD3-style models; `core.conditioning`): a denoiser may declare
    `added_inputs`, name → per-sample shape (SDXL's U-Net: `{"pooled": (1280,), "time_ids": (6,)}`), and is then
    called `denoiser(sample, t, context, **added)` with exactly those names, each (B, *shape). It may derive some
    itself from the image size with `micro_conditioning(height, width)` → name → 1-D tensor (SDXL's time ids);
    the others come from the text conditioner; a denoiser declaring nothing is called with three arguments.
    A call missing a declared input raises a `core.DiffstackError` naming it (take them as optional keyword
    arguments and check, rather than let Python's TypeError speak).
    """

    in_channels: int
    context_dim: int
    prediction_type: PredictionType

    def __call__(
        self, sample: torch.Tensor, timestep: torch.Tensor | float | int, context: torch.Tensor
    ) -> torch.Tensor: ...


@runtime_checkable
class Scheduler(Protocol):
    """A noise schedule × an update rule, diffusers-compatible so the classic loop works unchanged::

        scheduler.set_timesteps(steps, device=latents.device)
        latents = noise * scheduler.init_noise_sigma
        for t in scheduler.timesteps:
            eps = denoiser(scheduler.scale_model_input(latents, t), t, context)
            latents = scheduler.step(eps, t, latents).prev_sample

    `config` is a frozen pydantic model (diffusers' key names, with `num_train_timesteps` and
    `prediction_type`); `type(s)(s.config)` builds a fresh scheduler with no per-run state, which is how
    pipelines get a private copy per call.
    `set_timesteps(n, device)` fills `timesteps` (1-D, descending, in [0, num_train_timesteps)); a scheduler
    may also take `strength=` and keep only the last ⌊n·strength⌋ steps itself (diffstack's do), else the
    sampler starts img2img part-way (`core.schedules.img2img_timesteps`). `step` before `set_timesteps`
    raises an exception whose message says to call `set_timesteps` (`core.InputError` recommended).
    `scale_model_input(sample, t)` returns the denoiser input for timestep t (same shape, dtype, device).
    `add_noise(x0, noise, t)` returns the sample this scheduler expects at timestep t (a scalar or (B,)):
    x_t = a_t·x0 + s_t·noise, with (a_t, s_t) = (√ᾱ_t, √(1-ᾱ_t)) for VP rules or (1, σ_t) for σ-space ones.
    `order` is the number of denoiser calls per step of the rule's own counting (diffusers' meaning); n steps
    give n to n·order timesteps, plus `warmup_timesteps` when a multistep rule declares that optional int
    attribute (diffusers' PNDM/PLMS spends 1 extra timestep warming up).
    `step(..., generator=)` takes one generator or a list of B (one per sample); stochastic rules draw
    their noise from it.
    """

    config: BaseModel
    order: int
    timesteps: torch.Tensor
    init_noise_sigma: float

    def set_timesteps(
        self, num_inference_steps: int, device: torch.device | str | None = None, *, strength: float = 1.0
    ) -> None: ...

    def scale_model_input(self, sample: torch.Tensor, timestep: torch.Tensor | float | int) -> torch.Tensor: ...

    def step(
        self,
        model_output: torch.Tensor,
        timestep: torch.Tensor | float | int,
        sample: torch.Tensor,
        *,
        generator: Generators = None,
    ) -> StepOutput: ...

    def add_noise(
        self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor | float | int
    ) -> torch.Tensor: ...


@dataclass(frozen=True)
class Conditioning:
    """What a text conditioner may return instead of a bare context tensor: the context and added inputs.

    context: (B, L, D), the sequence the denoiser cross-attends to; added: name → (B, …) tensors a denoiser
    may take as keyword inputs (`Denoiser.added_inputs`), such as `pooled` (B, P), a pooled text embedding.
    """

    context: torch.Tensor
    added: Mapping[str, torch.Tensor] = field(default_factory=dict)


@runtime_checkable
class TextConditioner(Protocol):
    """Prompt → embeddings; owns its tokenizer.

    `__call__(prompts)`: a list of B strings (empty strings allowed) → (B, max_length, embedding_dim) in the
    module's dtype. Over-long prompts are truncated to `max_length` tokens with a warning, never an error.
    A conditioner that also gives added inputs for the denoiser (a pooled embedding `pooled`, (B, P)) returns a
    `Conditioning` holding that context and the added tensors instead, and declares them in `added_outputs`,
    name → per-sample shape (`{"pooled": (1280,)}` for SDXL's).
    """

    max_length: int
    embedding_dim: int

    def __call__(self, prompts: list[str]) -> torch.Tensor | Conditioning: ...


@dataclass(frozen=True)
class SamplerInputs:
    """Everything one run of a `Sampler` works on.

    noise (B, C, h, w), standard normal, from which the run starts; context and uncond_context (B, L, D),
    the conditional and unconditional embeddings (uncond_context None → no guidance); `added` and
    `uncond_added`, the denoiser's added inputs (name → (B, …), `Denoiser.added_inputs`) for each half — pass
    them as keyword arguments to every denoiser call, batched like the contexts (`core.conditioning`); a name
    `uncond_added` lacks has the conditional value in both halves; `guidance_scale` g gives
    pred = u + g·(c − u); `init_latents` (B, C, h, w) with `strength` in (0, 1] starts from a noised version of
    them (img2img; `strength=None` means the sampler's own default); `generator` (one, or one per sample)
    feeds stochastic schedulers; `callback` gets a `StepEvent` after every step in order, and the loop stops
    early when it calls `request_stop()`. The scheduler is used as given (callers pass a private copy); the
    sampler calls `set_timesteps` itself.
    """

    denoiser: Denoiser
    scheduler: Scheduler
    noise: torch.Tensor
    context: torch.Tensor
    uncond_context: torch.Tensor | None = None
    steps: int = 50
    guidance_scale: float = 1.0
    init_latents: torch.Tensor | None = None
    strength: float | None = None
    generator: Generators = None
    callback: StepCallback | None = None
    added: Mapping[str, torch.Tensor] = field(default_factory=dict)
    uncond_added: Mapping[str, torch.Tensor] = field(default_factory=dict)


@runtime_checkable
class Sampler(Protocol):
    """The denoising loop: `__call__(inputs: SamplerInputs)` → the final latents (B, C, h, w)."""

    def __call__(self, inputs: SamplerInputs) -> torch.Tensor: ...


@runtime_checkable
class Dataset(Protocol):
    """Image–caption pairs for training and evaluation, deterministic by index.

    `dataset[i]` → (image (3, H, W) float in [-1, 1], caption str); the same i always gives the same pair.
    """

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str]: ...


INTERFACES: dict[Kind, type] = {
    "encoder": Encoder,
    "denoiser": Denoiser,
    "text": TextConditioner,
    "scheduler": Scheduler,
    "sampler": Sampler,
    "dataset": Dataset,
}
"""The Protocol each kind of component satisfies."""


def missing_members(component: object, kind: Kind) -> list[str]:
    """The attributes and methods of `kind`'s interface that `component` lacks; empty when it has them all."""
    protocol = INTERFACES[kind]
    methods = [
        name
        for name, value in vars(protocol).items()
        if getattr(value, "__qualname__", "").startswith(f"{protocol.__name__}.")
    ]
    return [name for name in [*protocol.__annotations__, *methods] if not hasattr(component, name)]
