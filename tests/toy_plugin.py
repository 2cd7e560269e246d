"""A test-only diffstack plugin: tiny but correct components of all five kinds.

Registered by tests (on a `PluginManager`, or by name under `plugins:` in a registry file) and checked
against the contract suites. Every component has a frozen pydantic Config; the hookimpl at the bottom
provides them as toy-encoder, toy-denoiser, toy-text, toy-scheduler and toy-sampler.

- encoder: pixel-unshuffle by 2 then a 1×1 conv to a diagonal-Gaussian posterior (mean, log-variance);
  decode is the mirror image, squashed into [-1, 1] by tanh.
- denoiser: conv net with a sinusoidal timestep embedding and attention-pooling of the context.
- text: character-hash tokenizer + token/position embeddings + one residual MLP layer.
- scheduler: exact DDIM with eta=0 (Song et al. 2021), linear betas, "leading" timestep spacing.
  `ToyEulerScheduler` (not registered) is the σ-space counterpart, Euler on the same schedule (Karras et
  al. 2022, Algorithm 2 without churn), for tests that need a non-trivial `scale_model_input`.
- sampler: the classifier-free-guidance loop (Ho & Salimans 2022), one batched forward for cond+uncond.
"""

import math
import warnings

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from core import ComponentSpec, InputError, PredictionType, StepEvent, StepOutput, hookimpl
from core.interfaces import SamplerInputs, should_stop


# --------------------------------------------------------------------------------------------- encoder
class ToyEncoderConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    latent_channels: int = Field(4, ge=1)
    scaling_factor: float = Field(0.5, gt=0.0, description="multiplies latents after encoding")


class ToyEncoder(nn.Module):
    """Pixel-unshuffle (f=2) + 1×1 conv to (mean, log-variance); decode mirrors it."""

    downsample_factor = 2

    def __init__(self, config: ToyEncoderConfig) -> None:
        super().__init__()
        self.config = config
        self.latent_channels = config.latent_channels
        self.scaling_factor = config.scaling_factor
        pixels = 3 * self.downsample_factor**2
        self.to_moments = nn.Conv2d(pixels, 2 * config.latent_channels, 1)
        self.to_pixels = nn.Conv2d(config.latent_channels, pixels, 1)

    def encode(
        self, images: torch.Tensor, *, generator: torch.Generator | None = None, sample: bool = True
    ) -> torch.Tensor:
        f = self.downsample_factor
        if images.ndim != 4 or images.shape[1] != 3:
            raise InputError(f"toy-encoder: expected images (B, 3, H, W), got shape {tuple(images.shape)}")
        if images.shape[2] % f or images.shape[3] % f:
            raise InputError(
                f"toy-encoder: image size {images.shape[2]}×{images.shape[3]} is not a multiple of {f}",
                hint=f"resize or crop to a multiple of {f}",
            )
        moments = self.to_moments(F.pixel_unshuffle(images, f))  # (B, 2C, H/f, W/f)
        mean, logvar = moments.chunk(2, dim=1)
        latents = mean
        if sample:
            noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
            latents = mean + torch.exp(0.5 * logvar.clamp(-30.0, 20.0)) * noise
        return latents * self.scaling_factor

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        pixels = self.to_pixels(latents / self.scaling_factor)  # (B, 3f², h, w)
        return torch.tanh(F.pixel_shuffle(pixels, self.downsample_factor))  # (B, 3, H, W) in [-1, 1]


# -------------------------------------------------------------------------------------------- denoiser
class ToyDenoiserConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    in_channels: int = Field(4, ge=1)
    context_dim: int = Field(16, ge=1)
    hidden: int = Field(16, ge=2, description="feature channels; even (sinusoidal embedding)")
    prediction_type: PredictionType = "epsilon"


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """(B,) timesteps → (B, dim) sinusoidal features (Vaswani et al. 2017)."""
    freqs = torch.exp(-math.log(10000.0) * torch.arange(dim // 2, device=t.device) / (dim // 2))
    angles = t.float()[:, None] * freqs[None]  # (B, dim/2)
    return torch.cat([angles.sin(), angles.cos()], dim=1)


class ToyDenoiser(nn.Module):
    """conv → + time embedding → + attention-pooled context → SiLU → conv."""

    def __init__(self, config: ToyDenoiserConfig) -> None:
        super().__init__()
        self.config = config
        self.in_channels = config.in_channels
        self.context_dim = config.context_dim
        self.prediction_type = config.prediction_type
        self.conv_in = nn.Conv2d(config.in_channels, config.hidden, 3, padding=1)
        self.time_proj = nn.Linear(config.hidden, config.hidden)
        self.query = nn.Linear(config.hidden, config.context_dim)
        self.context_proj = nn.Linear(config.context_dim, config.hidden)
        self.conv_out = nn.Conv2d(config.hidden, config.in_channels, 3, padding=1)

    def forward(
        self, sample: torch.Tensor, timestep: torch.Tensor | float | int, context: torch.Tensor
    ) -> torch.Tensor:
        if sample.ndim != 4 or sample.shape[1] != self.in_channels:
            raise InputError(f"toy-denoiser: expected sample (B, {self.in_channels}, h, w), got {tuple(sample.shape)}")
        batch = sample.shape[0]
        if context.ndim != 3 or context.shape[0] != batch or context.shape[2] != self.context_dim:
            raise InputError(
                f"toy-denoiser: expected context ({batch}, L, {self.context_dim}), got {tuple(context.shape)}",
                hint="the text conditioner's embedding_dim must equal the denoiser's context_dim",
            )
        t = torch.as_tensor(timestep, device=sample.device).reshape(-1)
        if t.numel() == 1:
            t = t.expand(batch)
        elif t.numel() != batch:
            raise InputError(f"toy-denoiser: {t.numel()} timesteps for a batch of {batch}")
        emb = timestep_embedding(t, self.config.hidden).to(sample.dtype)  # (B, hidden)
        h = self.conv_in(sample) + self.time_proj(emb)[:, :, None, None]  # (B, hidden, h, w)
        query = self.query(h.mean(dim=(2, 3)))  # (B, D)
        weights = torch.softmax(torch.einsum("bld,bd->bl", context, query) / math.sqrt(self.context_dim), -1)
        pooled = torch.einsum("bl,bld->bd", weights, context)  # (B, D)
        h = F.silu(h + self.context_proj(pooled)[:, :, None, None])
        return self.conv_out(h)  # (B, C, h, w)


# ------------------------------------------------------------------------------------------------ text
class ToyTextConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    max_length: int = Field(48, ge=2, description="tokens per prompt, BOS and EOS included")
    embedding_dim: int = Field(16, ge=1)
    vocab_size: int = Field(97, ge=4, description="3 special tokens + hashed character buckets")


class ToyText(nn.Module):
    """Characters hashed into buckets, BOS … EOS PAD…, embedded, one residual MLP layer."""

    PAD, BOS, EOS = 0, 1, 2

    def __init__(self, config: ToyTextConfig) -> None:
        super().__init__()
        self.config = config
        self.max_length = config.max_length
        self.embedding_dim = config.embedding_dim
        self.token_embedding = nn.Embedding(config.vocab_size, config.embedding_dim)
        self.position_embedding = nn.Embedding(config.max_length, config.embedding_dim)
        self.norm = nn.LayerNorm(config.embedding_dim)
        self.mlp = nn.Linear(config.embedding_dim, config.embedding_dim)

    def tokenize(self, prompt: str) -> list[int]:
        buckets = self.config.vocab_size - 3
        ids = [3 + (ord(ch) * 2654435761) % buckets for ch in prompt]
        if len(ids) + 2 > self.max_length:
            warnings.warn(
                f"toy-text: prompt of {len(ids) + 2} tokens truncated to {self.max_length}: {prompt[:40]!r}…",
                stacklevel=2,
            )
            ids = ids[: self.max_length - 2]
        ids = [self.BOS, *ids, self.EOS]
        return ids + [self.PAD] * (self.max_length - len(ids))

    def forward(self, prompts: list[str]) -> torch.Tensor:
        device = self.token_embedding.weight.device
        ids = torch.tensor([self.tokenize(p) for p in prompts], device=device, dtype=torch.long)  # (B, L)
        x = self.token_embedding(ids) + self.position_embedding.weight[None]  # (B, L, D)
        return x + F.gelu(self.mlp(self.norm(x)))


# ------------------------------------------------------------------------------------------- scheduler
class ToySchedulerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    num_train_timesteps: int = Field(1000, ge=2)
    beta_start: float = Field(0.0001, gt=0.0, lt=1.0)
    beta_end: float = Field(0.02, gt=0.0, lt=1.0)
    prediction_type: PredictionType = "epsilon"
    steps_offset: int = Field(0, ge=0, description="added to every inference timestep (SD uses 1)")


class ToyScheduler:
    """DDIM, eta = 0: x_prev = √ᾱ_prev·x̂0 + √(1-ᾱ_prev)·ε̂, with ᾱ_prev = 1 past the last step.

    Linear betas; "leading" spacing: t_i = i·⌊T/n⌋ + steps_offset, descending.
    """

    order = 1
    init_noise_sigma = 1.0

    def __init__(self, config: ToySchedulerConfig) -> None:
        self.config = config
        betas = torch.linspace(config.beta_start, config.beta_end, config.num_train_timesteps, dtype=torch.float64)
        self.alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)  # (T,) ᾱ_t, float64
        self.timesteps = torch.empty(0, dtype=torch.long)
        self._step_ratio: int | None = None

    def set_timesteps(
        self, num_inference_steps: int, device: torch.device | str | None = None, *, strength: float = 1.0
    ) -> None:
        total = self.config.num_train_timesteps
        if not 1 <= num_inference_steps <= total:
            raise InputError(f"toy-scheduler: num_inference_steps must be in [1, {total}], got {num_inference_steps}")
        keep = int(num_inference_steps * strength)
        if not 0.0 < strength <= 1.0 or keep < 1:
            raise InputError(f"toy-scheduler: strength {strength} keeps no step of {num_inference_steps}")
        ratio = total // num_inference_steps
        timesteps = torch.arange(num_inference_steps).flip(0) * ratio + self.config.steps_offset
        if int(timesteps[0]) >= total:
            raise InputError(f"toy-scheduler: steps_offset {self.config.steps_offset} pushes t past {total - 1}")
        self.timesteps = timesteps[num_inference_steps - keep :].to(device)
        self._step_ratio = ratio

    def _alpha_bar(self, timesteps: torch.Tensor | float | int) -> torch.Tensor:
        t = torch.as_tensor(timesteps).detach().to("cpu", torch.float64).round().long()
        if bool(((t < 0) | (t >= self.config.num_train_timesteps)).any()):
            raise InputError(f"toy-scheduler: timestep {t.tolist()} outside [0, {self.config.num_train_timesteps})")
        return self.alphas_cumprod[t]

    def scale_model_input(self, sample: torch.Tensor, timestep: torch.Tensor | float | int) -> torch.Tensor:
        return sample

    def add_noise(
        self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor | float | int
    ) -> torch.Tensor:
        alpha_bar = self._alpha_bar(timesteps)
        alpha_bar = alpha_bar.reshape(-1, *[1] * (original_samples.ndim - 1)) if alpha_bar.ndim else alpha_bar
        alpha_bar = alpha_bar.to(original_samples.device, original_samples.dtype)
        return alpha_bar.sqrt() * original_samples + (1.0 - alpha_bar).sqrt() * noise

    def step(
        self,
        model_output: torch.Tensor,
        timestep: torch.Tensor | float | int,
        sample: torch.Tensor,
        *,
        generator: torch.Generator | None = None,
    ) -> StepOutput:
        if self._step_ratio is None:
            raise InputError(
                f"{type(self).__name__}: step() called before set_timesteps()", hint="call set_timesteps(n) first"
            )
        return self._move(model_output, timestep, sample, int(round(float(timestep))) - self._step_ratio)

    def _move(
        self, model_output: torch.Tensor, timestep: torch.Tensor | float | int, sample: torch.Tensor, prev_t: int
    ) -> StepOutput:
        """From `timestep` to `prev_t` (< 0: past the last step)."""
        alpha_bar = float(self._alpha_bar(timestep))
        alpha_bar_prev = float(self.alphas_cumprod[prev_t]) if prev_t >= 0 else 1.0
        a, s = math.sqrt(alpha_bar), math.sqrt(1.0 - alpha_bar)
        if self.config.prediction_type == "epsilon":
            eps = model_output
            x0 = (sample - s * eps) / a
        elif self.config.prediction_type == "sample":
            x0 = model_output
            eps = (sample - a * x0) / s
        else:  # v = a·ε − s·x0
            x0 = a * sample - s * model_output
            eps = s * sample + a * model_output
        prev = math.sqrt(alpha_bar_prev) * x0 + math.sqrt(1.0 - alpha_bar_prev) * eps  # (B, C, h, w)
        return StepOutput(prev_sample=prev, pred_original_sample=x0)


class ToyEulerScheduler(ToyScheduler):
    """σ-space Euler: x = x0 + σ·ε with σ_t = √((1-ᾱ_t)/ᾱ_t); the model sees x/√(σ²+1).

    x_next = x + (σ_next − σ)·(x − x̂0)/σ, with σ_next = 0 past the last step.
    """

    def __init__(self, config: ToySchedulerConfig) -> None:
        super().__init__(config)
        self.init_noise_sigma = math.sqrt(self._sigma(config.num_train_timesteps - 1) ** 2 + 1)

    def _sigma(self, timestep: torch.Tensor | float | int) -> float:
        alpha_bar = float(self._alpha_bar(timestep))
        return math.sqrt((1.0 - alpha_bar) / alpha_bar)

    def set_timesteps(
        self, num_inference_steps: int, device: torch.device | str | None = None, *, strength: float = 1.0
    ) -> None:
        super().set_timesteps(num_inference_steps, device, strength=strength)
        self.init_noise_sigma = math.sqrt(self._sigma(self.timesteps[0]) ** 2 + 1)

    def scale_model_input(self, sample: torch.Tensor, timestep: torch.Tensor | float | int) -> torch.Tensor:
        return sample / math.sqrt(self._sigma(timestep) ** 2 + 1)

    def add_noise(
        self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor | float | int
    ) -> torch.Tensor:
        alpha_bar = self._alpha_bar(timesteps)
        sigma = ((1.0 - alpha_bar) / alpha_bar).sqrt()
        sigma = sigma.reshape(-1, *[1] * (original_samples.ndim - 1)) if sigma.ndim else sigma
        return original_samples + sigma.to(original_samples.device, original_samples.dtype) * noise

    def _move(
        self, model_output: torch.Tensor, timestep: torch.Tensor | float | int, sample: torch.Tensor, prev_t: int
    ) -> StepOutput:
        sigma = self._sigma(timestep)
        sigma_next = self._sigma(prev_t) if prev_t >= 0 else 0.0
        if self.config.prediction_type == "epsilon":
            x0 = sample - sigma * model_output
        elif self.config.prediction_type == "sample":
            x0 = model_output
        else:  # v-prediction on the scaled input (Salimans & Ho 2022)
            x0 = sample / (sigma**2 + 1) - sigma / math.sqrt(sigma**2 + 1) * model_output
        prev = sample + (sigma_next - sigma) * (sample - x0) / sigma  # (B, C, h, w)
        return StepOutput(prev_sample=prev, pred_original_sample=x0)


# --------------------------------------------------------------------------------------------- sampler
class ToySamplerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    batched_guidance: bool = Field(True, description="one denoiser call for cond+uncond (else two)")


class ToySampler:
    """Classifier-free guidance: pred = u + g·(c − u); img2img when `init_latents` is given."""

    def __init__(self, config: ToySamplerConfig) -> None:
        self.config = config

    def _predict(self, x: torch.Tensor, t: torch.Tensor, job: SamplerInputs) -> torch.Tensor:
        if job.uncond_context is None:
            return job.denoiser(x, t, job.context, **job.added)
        uncond_added = {**job.added, **job.uncond_added}
        if self.config.batched_guidance:
            context = torch.cat([job.uncond_context, job.context])
            added = {name: torch.cat([uncond_added[name], value]) for name, value in job.added.items()}
            uncond, cond = job.denoiser(torch.cat([x, x]), t, context, **added).chunk(2)
        else:
            uncond = job.denoiser(x, t, job.uncond_context, **uncond_added)
            cond = job.denoiser(x, t, job.context, **job.added)
        return uncond + job.guidance_scale * (cond - uncond)

    def __call__(self, job: SamplerInputs) -> torch.Tensor:
        img2img = job.init_latents is not None
        job.scheduler.set_timesteps(
            job.steps, device=job.noise.device, strength=(job.strength or 0.8) if img2img else 1.0
        )
        timesteps = job.scheduler.timesteps
        latents = (
            job.scheduler.add_noise(job.init_latents, job.noise, timesteps[0])
            if img2img
            else job.noise * job.scheduler.init_noise_sigma
        )
        for i, t in enumerate(timesteps):
            out = job.scheduler.step(
                self._predict(job.scheduler.scale_model_input(latents, t), t, job), t, latents, generator=job.generator
            )
            latents = out.prev_sample
            if should_stop(job.callback, StepEvent(i, len(timesteps), t, latents, out.pred_original_sample)):
                break
        return latents


# --------------------------------------------------------------------------------------------- dataset
class ToyDatasetConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    length: int = Field(16, ge=1)
    image_size: int = Field(8, ge=1)


class ToyDataset:
    """Item i: a flat image of grey level i/length in [-1, 1], captioned "grey i"."""

    def __init__(self, config: ToyDatasetConfig) -> None:
        self.config = config

    def __len__(self) -> int:
        return self.config.length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str]:
        if not 0 <= index < self.config.length:
            raise IndexError(f"toy-dataset: index {index} out of range({self.config.length})")
        size = self.config.image_size
        return torch.full((3, size, size), 2.0 * index / self.config.length - 1.0), f"grey {index}"


@hookimpl
def diffstack_components() -> list[ComponentSpec]:
    return [
        ComponentSpec("encoder", "toy-encoder", ToyEncoder, ToyEncoderConfig, description="test-only encoder"),
        ComponentSpec("denoiser", "toy-denoiser", ToyDenoiser, ToyDenoiserConfig, description="test-only denoiser"),
        ComponentSpec("text", "toy-text", ToyText, ToyTextConfig, description="test-only text conditioner"),
        ComponentSpec("scheduler", "toy-scheduler", ToyScheduler, ToySchedulerConfig, description="test-only DDIM"),
        ComponentSpec("sampler", "toy-sampler", ToySampler, ToySamplerConfig, description="test-only CFG loop"),
        ComponentSpec("dataset", "toy-dataset", ToyDataset, ToyDatasetConfig, description="test-only greys"),
    ]
