"""Test-only helpers that build reference (diffusers / transformers) Stable Diffusion parts offline.

`openai_vocabulary` writes out OpenAI's CLIP BPE recipe independently of the code under test;
`tiny_sd_pipeline`, `tiny_sdxl_pipeline` and `tiny_sd2_pipeline` are random tiny SD 1.x / SDXL / SD 2.x
architecture diffusers pipelines (the oracles for end-to-end parity), savable as diffusers folders.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import torch

from plugins.clip_text.tokenizer import SHIPPED_VOCAB

TINY_UNET = dict(
    block_out_channels=(32, 64),
    layers_per_block=1,
    attention_head_dim=2,
    cross_attention_dim=32,
    norm_num_groups=8,
    sample_size=8,
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
)
TINY_VAE = dict(
    block_out_channels=(16, 32, 32, 32),
    layers_per_block=1,
    latent_channels=4,
    norm_num_groups=8,
    sample_size=64,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
)
TINY_TEXT = dict(
    vocab_size=49408,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    max_position_embeddings=77,
    hidden_act="quick_gelu",
)
SD_SCHEDULE = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000)
TINY_TOWER = dict(  # SDXL's and SD 2.x's text towers: 16-wide heads (not OpenCLIP's 64)
    vocab_size=49408, hidden_size=32, intermediate_size=64, num_attention_heads=4, max_position_embeddings=77
)
TINY_XL_UNET = dict(
    block_out_channels=(32, 64),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
    layers_per_block=1,
    transformer_layers_per_block=(1, 2),
    attention_head_dim=(2, 4),
    use_linear_projection=True,
    cross_attention_dim=64,
    addition_embed_type="text_time",
    addition_time_embed_dim=8,
    projection_class_embeddings_input_dim=16 + 6 * 8,
    norm_num_groups=8,
    sample_size=8,
)
TINY_SD2_UNET = dict(
    block_out_channels=(32, 64),
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    layers_per_block=1,
    attention_head_dim=(2, 4),
    use_linear_projection=True,
    upcast_attention=True,
    cross_attention_dim=32,
    norm_num_groups=8,
    sample_size=8,
)


def openai_vocabulary(gz: Path = SHIPPED_VOCAB) -> tuple[list[str], list[str]]:
    """OpenAI's recipe (openai/CLIP simple_tokenizer.py): (tokens in id order, merges)."""
    merges = gzip.open(gz).read().decode("utf-8").split("\n")[1 : 49152 - 256 - 2 + 1]
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    alphabet = [chr(c) for c in cs]
    tokens = alphabet + [a + "</w>" for a in alphabet] + ["".join(m.split()) for m in merges]
    return tokens + ["<|startoftext|>", "<|endoftext|>"], merges


def write_vocab_folder(folder: Path) -> Path:
    """vocab.json + merges.txt, as in a diffusers `tokenizer/` folder."""
    folder.mkdir(parents=True, exist_ok=True)
    tokens, merges = openai_vocabulary()
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    return folder


def perturb(module: torch.nn.Module, scale: float = 0.02) -> torch.nn.Module:
    """Move every weight off its init value (norms at 1 and 0), so each one matters in a comparison."""
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn_like(p) * scale)
    return module.eval()


def tiny_sd_pipeline(tmp_path: Path, scheduler_class: str = "LMSDiscreteScheduler"):
    """A random tiny `StableDiffusionPipeline` (fp32, CPU) with SD 1.x's scheduler settings."""
    import diffusers
    import transformers

    torch.manual_seed(0)
    unet = perturb(diffusers.UNet2DConditionModel(**TINY_UNET))
    vae = perturb(diffusers.AutoencoderKL(**TINY_VAE))
    text = perturb(transformers.CLIPTextModel(transformers.CLIPTextConfig(**TINY_TEXT)))
    tokenizer = transformers.CLIPTokenizer.from_pretrained(write_vocab_folder(tmp_path / "vocab"), model_max_length=77)
    scheduler = getattr(diffusers, scheduler_class)(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        **(
            {"steps_offset": 1, "set_alpha_to_one": False, "clip_sample": False}
            if scheduler_class in ("DDIMScheduler",)
            else {}
        ),
    )
    return diffusers.StableDiffusionPipeline(
        vae=vae,
        text_encoder=text,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def clip_tokenizer(folder: Path, **special):
    """transformers' CLIPTokenizer on OpenAI's vocabulary written to `folder` (special tokens: e.g. pad "!")."""
    import transformers

    return transformers.CLIPTokenizer.from_pretrained(write_vocab_folder(folder), model_max_length=77, **special)


def tiny_sdxl_pipeline(root: Path):
    """A random tiny `StableDiffusionXLPipeline` (fp32, CPU): two 3-layer towers (the second gelu, with a 16-wide
    projection, padding with "!"), a text-time U-Net, a VAE with SDXL's scaling factor, Euler; vocab in root."""
    import diffusers
    import transformers

    torch.manual_seed(0)
    return diffusers.StableDiffusionXLPipeline(
        vae=perturb(diffusers.AutoencoderKL(**TINY_VAE, scaling_factor=0.13025, force_upcast=True)),
        text_encoder=perturb(
            transformers.CLIPTextModel(transformers.CLIPTextConfig(**TINY_TOWER, num_hidden_layers=3))
        ),
        text_encoder_2=perturb(
            transformers.CLIPTextModelWithProjection(
                transformers.CLIPTextConfig(**TINY_TOWER, num_hidden_layers=3, hidden_act="gelu", projection_dim=16)
            )
        ),
        tokenizer=clip_tokenizer(root / "vocab"),
        tokenizer_2=clip_tokenizer(root / "vocab", pad_token="!"),
        unet=perturb(diffusers.UNet2DConditionModel(**TINY_XL_UNET)),
        scheduler=diffusers.EulerDiscreteScheduler(**SD_SCHEDULE, timestep_spacing="leading", steps_offset=1),
        force_zeros_for_empty_prompt=True,
        add_watermarker=False,
    )


def tiny_sd2_pipeline(root: Path):
    """A random tiny SD 2.x `StableDiffusionPipeline` (fp32, CPU): a 2-layer gelu tower padding with "!" (as
    diffusers' SD 2.x folders keep it: the original's last layer dropped), a v-prediction U-Net with linear
    projections and upcast attention, DDIM; vocab in root."""
    import diffusers
    import transformers

    torch.manual_seed(1)
    text = transformers.CLIPTextModel(transformers.CLIPTextConfig(**TINY_TOWER, num_hidden_layers=2, hidden_act="gelu"))
    return diffusers.StableDiffusionPipeline(
        vae=perturb(diffusers.AutoencoderKL(**TINY_VAE)),
        text_encoder=perturb(text),
        tokenizer=clip_tokenizer(root / "vocab", pad_token="!"),
        unet=perturb(diffusers.UNet2DConditionModel(**TINY_SD2_UNET)),
        scheduler=diffusers.DDIMScheduler(
            **SD_SCHEDULE, prediction_type="v_prediction", steps_offset=1, set_alpha_to_one=False, clip_sample=False
        ),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
