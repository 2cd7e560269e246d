"""The reference side of the benchmarks: diffusers / transformers models holding the *same* tensors as ours.

diffstack's parts keep diffusers' and transformers' parameter names, so a reference module is built on the
meta device from the same config and takes our state dict with `assign=True`: no copy, no second set of
weights in memory (until one side converts its own, e.g. to channels_last).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from bench.vocabulary import write_vocab_folder
from core.pipeline import Pipeline

OURS_ONLY = {
    "unet": {"prediction_type"},
    "vae": {"decode_slicing", "decode_tiling", "tile_overlap"},
    "text": {"clip_skip", "max_length", "tokenizer"},
}


def realistic_init(state: dict[str, torch.Tensor], seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors of the given shapes that keep activations O(1) through a deep net (no denormals, no
    overflow, so the timings are those of real weights): matrices and kernels N(0, 1/fan_in), 1-D norm
    weights 1, biases 0. Each matrix has its own generator (seeded by `seed` and its place), so they are
    drawn on all cores at once and come out the same however the work is shared."""

    def draw(index: int, shape: torch.Size) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed * 100_003 + index)
        return torch.empty(shape).normal_(std=shape[1:].numel() ** -0.5, generator=generator)

    with ThreadPoolExecutor(max(1, torch.get_num_threads())) as pool:
        matrices = {
            key: pool.submit(draw, i, value.shape) for i, (key, value) in enumerate(state.items()) if value.ndim >= 2
        }
        return {
            key: matrices[key].result()
            if key in matrices
            else torch.ones(value.shape)
            if key.endswith("weight") and "norm" in key
            else torch.zeros(value.shape)
            for key, value in state.items()
        }


def _load_shared(module: torch.nn.Module, state: dict[str, torch.Tensor]) -> torch.nn.Module:
    missing, unexpected = module.load_state_dict(state, strict=False, assign=True)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise RuntimeError(f"reference {type(module).__name__}: missing {missing[:3]}, unexpected {unexpected[:3]}")
    return module.eval()


def diffusers_pipeline(ours: Pipeline, folder: Path):
    """diffusers' StableDiffusionPipeline on our pipeline's tensors, device and dtype, with our DDIM's config.
    `folder` receives the tokenizer files (vocab.json, merges.txt) transformers' CLIPTokenizer reads."""
    import diffusers
    import transformers

    unet_config = ours.denoiser.config.model_dump(exclude=OURS_ONLY["unet"])
    vae_config = ours.encoder.config.model_dump(exclude=OURS_ONLY["vae"])
    text_config = ours.text.config.model_dump(exclude=OURS_ONLY["text"])
    with torch.device("meta"):
        unet = diffusers.UNet2DConditionModel(**unet_config)
        vae = diffusers.AutoencoderKL(**vae_config)
        text = transformers.CLIPTextModel(transformers.CLIPTextConfig(**text_config))
    _load_shared(unet, ours.denoiser.state_dict())
    _load_shared(vae, ours.encoder.state_dict())
    _load_shared(text, {k.removeprefix("text_model."): v for k, v in ours.text.state_dict().items()})
    text.embeddings.register_buffer(  # transformers ≥ 5 flattens CLIPTextModel (no `text_model` level)
        "position_ids", torch.arange(text_config["max_position_embeddings"], device=ours.device)[None], persistent=False
    )
    tokenizer = transformers.CLIPTokenizer.from_pretrained(
        write_vocab_folder(folder / "tokenizer"), model_max_length=ours.text.config.max_length
    )
    scheduler_config = {k: v for k, v in ours.scheduler.config.model_dump().items() if k != "eta" and v is not None}
    pipe = diffusers.StableDiffusionPipeline(
        vae=vae,
        text_encoder=text,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=diffusers.DDIMScheduler(**scheduler_config),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.scheduler = diffusers.DDIMScheduler(**scheduler_config)  # the constructor would rewrite steps_offset to 1
    pipe.set_progress_bar_config(disable=True)
    return pipe
