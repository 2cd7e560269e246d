"""The four training stages of a latent diffusion model, each building its parts through the plugin
manager from the model's recipe (`core.training.recipe_file`), training them with `loop.train`, and exporting
the result with `export.save_component` into the model's folder (`WEIGHT_FILES`); `RUNNERS` maps each stage's
name to its `run_<stage>(recipe, config, out, model_dir, *, resume, device)`:

    vae      the autoencoder (reconstruction + β·KL), then its `scaling_factor` → encoder.safetensors
    decoder  optional: the trained autoencoder's decoder fine-tuned on posterior means, its encoder frozen
             (latents and scaling factor unchanged) → encoder.safetensors, rewritten
    clip     text tower + image tower, contrastively; the text tower → text.safetensors
    unet     ε-prediction on latents of the trained encoder, conditioned by the trained text tower
             (both frozen, their outputs cached) → denoiser.safetensors (EMA weights)

Under torchrun (`core.training.distributed`) every process runs the stage's runner and trains; rank 0 alone
writes the unet stage's cache and exports and measures the result, the others returning {"result"} alone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from core import schedules
from core.create import create
from core.errors import WeightsError
from core.interfaces import Dataset
from core.training.autoencoder import KLAutoencoderObjective, TrainableAutoencoder, latent_scale, psnr
from core.training.contrastive import ContrastiveObjective
from core.training.data import stack
from core.training.diffusion import DiffusionObjective, cache_contexts, cache_latents
from core.training.distributed import current, main_first
from core.training.export import component_info, load_component, save_component
from core.training.loop import TrainConfig, train
from core.training.recipe_file import STAGE_MODELS, STAGES, TrainingRecipe
from core.weights import load_state_dict, save_state_dict

log = logging.getLogger(__name__)

TRAIN_SEED_OFFSET, EVAL_SEED_OFFSET = 0, 10_000  # data-set seeds: training items vs fresh evaluation items
FRESH_IMAGES = 256  # images the stages measure PSNR and retrieval on

WEIGHT_FILES: dict[str, str] = {
    "vae": "encoder.safetensors",
    "decoder": "encoder.safetensors",
    "clip": "text.safetensors",
    "unet": "denoiser.safetensors",
}
"""stage → the file of the model's folder it writes (the decoder stage rewrites the vae stage's)."""


def trained(model_dir: Path, stage: str, *, device: torch.device | str = "cpu") -> nn.Module:
    """The component an earlier stage wrote into `model_dir`, or a WeightsError naming the stage to train."""
    path = model_dir / WEIGHT_FILES[stage]
    if not path.exists():
        raise WeightsError(f"{path}: no such file", hint=f"train that stage first: diffstack train {stage} "
                           f"--model-dir {model_dir}")  # fmt: skip
    return load_component(path, device=device)


KINDS: dict[str, str] = {stage: STAGE_MODELS[stage].kind for stage in STAGES}
"""stage → the kind of component it exports."""


def dataset(name: str, split: str, seed: int, length: int = 100_000) -> Dataset:
    """Data set plugin `name` (a recipe's `dataset`) with the split, seed and length the stages ask for."""
    return create("dataset", name, split=split, seed=seed, length=length)


def train_config(recipe: TrainingRecipe, stage: str, overrides: dict[str, Any]) -> TrainConfig:
    """The recipe's training hyper-parameters for `stage`, with non-None `overrides` applied."""
    values = {k: v for k, v in overrides.items() if v is not None}
    return TrainConfig.model_validate({**recipe.stage(stage).train.model_dump(exclude_unset=True), **values})


@torch.no_grad()
def vae_psnr(encoder: Any, images: torch.Tensor, batch: int = 64) -> float:
    """PSNR (dB) of encode (posterior mode) → decode on images (N, 3, H, W) in [-1, 1]."""
    decoded = torch.cat([encoder.decode(encoder.encode(x, sample=False)) for x in images.split(batch)])
    return psnr(decoded, images)


def fresh_images(name: str, n: int, seed: int, device: torch.device) -> torch.Tensor:
    """n images of data set `name` the training never saw (all combinations, evaluation seed) → (n, 3, H, W)
    in [-1, 1]."""
    images, _ = stack(dataset(name, "all", seed + EVAL_SEED_OFFSET, n), list(range(n)))
    return images.to(device)


def run_vae(
    recipe: TrainingRecipe, config: TrainConfig, out: Path, model_dir: Path, *, resume: bool, device: torch.device
) -> dict[str, Any]:
    """Train the autoencoder, measure its scaling factor, export it; returns {"result", "psnr", "scaling_factor"}."""
    stage = recipe.vae
    torch.manual_seed(config.seed)
    vae = create("encoder", stage.plugin, **stage.config).to(device)
    objective = KLAutoencoderObjective(
        vae, dataset(recipe.dataset, "train", config.seed + TRAIN_SEED_OFFSET), beta=stage.beta, device=device
    )
    result = train(objective, config, out, resume=resume)
    if not current().is_main:
        return {"result": result}
    images = fresh_images(recipe.dataset, FRESH_IMAGES, config.seed, device)
    scale = latent_scale(vae, images)
    exported = {**stage.config, "scaling_factor": scale}
    save_component(
        vae.state_dict(),
        model_dir / WEIGHT_FILES["vae"],
        kind=stage.kind,
        plugin=stage.plugin,
        config=exported,
    )
    encoder = trained(model_dir, "vae", device=device)
    return {"result": result, "psnr": vae_psnr(encoder, images), "scaling_factor": scale}


def run_clip(
    recipe: TrainingRecipe, config: TrainConfig, out: Path, model_dir: Path, *, resume: bool, device: torch.device
) -> dict[str, Any]:
    """Pre-train text and image towers contrastively, export the text tower (float16); returns
    {"result", "retrieval_accuracy"}: image → caption top-1 accuracy over FRESH_IMAGES fresh images and their
    captions."""
    stage = recipe.clip
    torch.manual_seed(config.seed)
    text = create("text", stage.plugin, **stage.config).to(device)
    objective = ContrastiveObjective(
        text,
        dataset(recipe.dataset, "train", config.seed + TRAIN_SEED_OFFSET),
        embed_dim=stage.embed_dim,
        device=device,
    )
    result = train(objective, config, out, resume=resume)
    if not current().is_main:
        return {"result": result}
    save_component(
        text.state_dict(),
        model_dir / WEIGHT_FILES["clip"],
        kind=stage.kind,
        plugin=stage.plugin,
        config=stage.config,
        dtype=torch.float16,
    )
    fresh = dataset(recipe.dataset, "all", config.seed + EVAL_SEED_OFFSET, FRESH_IMAGES)
    images, captions = stack(fresh, list(range(FRESH_IMAGES)))
    with torch.no_grad():
        image, caption = objective.embed(images.to(device), captions)
    hits = [captions[j] == captions[i] for i, j in enumerate((image @ caption.T).argmax(dim=1).tolist())]
    return {"result": result, "retrieval_accuracy": sum(hits) / len(hits)}


def unet_cache(
    data: str, model_dir: Path, out: Path, n: int, seed: int, device: torch.device
) -> dict[str, torch.Tensor]:
    """Latents of n training images of data set `data` and contexts of their captions, from the trained encoder
    and text tower; computed once and kept in `out`/cache.safetensors for resumed runs."""
    path = out / "cache.safetensors"
    if path.exists():
        return load_state_dict(path)
    encoder = trained(model_dir, "vae", device=device)
    text = trained(model_dir, "clip", device=device)
    items = dataset(data, "train", seed + TRAIN_SEED_OFFSET, n)
    latents, captions = cache_latents(encoder, items, n, device=device)
    caption_index, contexts, uncond = cache_contexts(text, captions)
    cache = {"latents": latents, "caption_index": caption_index, "contexts": contexts, "uncond": uncond}
    log.info("cached %d latents %s and %d caption contexts in %s", n, tuple(latents.shape[1:]), len(contexts), path)
    out.mkdir(parents=True, exist_ok=True)
    save_state_dict(cache, path)
    return cache


def run_unet(
    recipe: TrainingRecipe, config: TrainConfig, out: Path, model_dir: Path, *, resume: bool, device: torch.device
) -> dict[str, Any]:
    """Train the denoiser on cached latents and contexts, export its EMA weights (float16); returns
    {"result", "latent_std"}."""
    stage = recipe.unet
    text = trained(model_dir, "clip")
    unet_config = {**stage.config, "cross_attention_dim": text.embedding_dim}
    with main_first():  # rank 0 writes the cache, the others read it
        cache = unet_cache(recipe.dataset, model_dir, out, stage.cached_images, config.seed, device)
    torch.manual_seed(config.seed)
    unet = create("denoiser", stage.plugin, **unet_config).to(device)
    schedule = schedules.alphas_cumprod(stage.schedule)
    objective = DiffusionObjective(
        unet,
        schedule,
        cache["latents"],
        cache["caption_index"],
        cache["contexts"],
        cache["uncond"],
        caption_dropout=stage.caption_dropout,
        device=device,
    )
    result = train(objective, config, out, resume=resume)
    if not current().is_main:
        return {"result": result}
    assert result.ema is not None  # the recipe sets ema_decay (`DenoiserStage` requires it)
    save_component(
        result.ema,
        model_dir / WEIGHT_FILES["unet"],
        kind=stage.kind,
        plugin=stage.plugin,
        config=unet_config,
        dtype=torch.float16,
    )
    return {"result": result, "latent_std": cache["latents"].std().item()}


def run_decoder(
    recipe: TrainingRecipe, config: TrainConfig, out: Path, model_dir: Path, *, resume: bool, device: torch.device
) -> dict[str, Any]:
    """Fine-tune the trained autoencoder's decoder on posterior means with its encoder frozen (latents and
    scaling factor stay the same) and re-export it; returns {"result", "psnr_before", "psnr"}."""
    path = model_dir / WEIGHT_FILES["decoder"]
    info = component_info(path)
    images = fresh_images(recipe.dataset, FRESH_IMAGES, config.seed, device)
    vae = load_component(path, device=device)
    before = vae_psnr(vae, images)
    for parameter in cast(TrainableAutoencoder, vae).encoding_parameters():
        parameter.requires_grad_(False)
    objective = KLAutoencoderObjective(
        vae,
        dataset(recipe.dataset, "train", config.seed + TRAIN_SEED_OFFSET + 1),
        beta=recipe.decoder.beta,
        sample=False,
        device=device,
    )
    result = train(objective, config, out, resume=resume)
    if not current().is_main:
        return {"result": result}
    save_component(vae.state_dict(), path, kind=recipe.decoder.kind, plugin=info["plugin"], config=info["config"])
    return {"result": result, "psnr_before": before, "psnr": vae_psnr(load_component(path, device=device), images)}


# stage name (one of recipe_file.STAGES) → run_<stage>(recipe, config, out, model_dir, *, resume, device) → its report
RUNNERS: dict[str, Callable[..., dict[str, Any]]] = {
    "vae": run_vae,
    "decoder": run_decoder,
    "clip": run_clip,
    "unet": run_unet,
}
