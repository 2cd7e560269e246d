"""The recipe of the embedded `shapes-tiny` model: which plugins, at which size, trained how.

Data only — plugin names and configs, resolved through the plugin manager like any registry entry — so a
different model is a different table, not different code. Each stage's `train` values are the defaults of
`diffstack train STAGE` (command-line options override them).
"""

from __future__ import annotations

from typing import Any

DATASET = "shapes"

VAE: dict[str, Any] = {
    "plugin": "vae-kl",
    "config": {
        "block_out_channels": [16, 32, 64, 64],  # f = 8: 64×64 images → 8×8×4 latents
        "down_block_types": ["DownEncoderBlock2D"] * 4,
        "up_block_types": ["UpDecoderBlock2D"] * 4,
        "layers_per_block": 1,
        "latent_channels": 4,
        "norm_num_groups": 1,  # one group: every normalisation sees all channels (flat-colour images)
        "sample_size": 64,
        "force_upcast": False,
    },
    "beta": 1e-4,
    "train": {"steps": 2500, "batch_size": 16, "lr": 5e-4, "warmup": 100},
}

DECODER: dict[str, Any] = {
    # fine-tune the decoder alone on the frozen encoder (as SD's ft-MSE decoders): latents stay the same, so it
    # can run alongside the U-Net stage, which only reads the encoder
    "beta": VAE["beta"],
    "train": {"steps": 1000, "batch_size": 16, "lr": 2e-4, "warmup": 50},
}

CLIP: dict[str, Any] = {
    "plugin": "clip-text",
    "config": {
        "hidden_size": 64,  # the 49 408 × 64 token embedding is most of the model
        "intermediate_size": 256,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "max_position_embeddings": 16,
        "max_length": 16,  # captions are 10 tokens with BOS and EOS
        "hidden_act": "gelu",
    },
    "embed_dim": 64,  # width of the shared image–text space
    "train": {"steps": 300, "batch_size": 32, "lr": 2e-3, "warmup": 30},
}

UNET: dict[str, Any] = {
    "plugin": "unet2d-condition",
    "config": {
        "sample_size": 8,
        "in_channels": 4,
        "out_channels": 4,
        "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
        "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
        "block_out_channels": [32, 64],
        "layers_per_block": 1,
        "attention_head_dim": 4,
        "cross_attention_dim": 64,
        "norm_num_groups": 8,
    },
    "schedule": {
        "num_train_timesteps": 1000,
        "beta_schedule": "scaled_linear",
        "beta_start": 0.00085,
        "beta_end": 0.012,
    },
    "caption_dropout": 0.1,
    "cached_images": 20_000,
    "train": {"steps": 2500, "batch_size": 64, "lr": 1e-3, "warmup": 100, "ema_decay": 0.998},
}

STAGES: dict[str, dict[str, Any]] = {"vae": VAE, "decoder": DECODER, "clip": CLIP, "unet": UNET}
WEIGHT_FILES: dict[str, str] = {
    "vae": "encoder.safetensors",
    "decoder": "encoder.safetensors",
    "clip": "text.safetensors",
    "unet": "denoiser.safetensors",
}
KINDS: dict[str, str] = {"vae": "encoder", "decoder": "encoder", "clip": "text", "unet": "denoiser"}
