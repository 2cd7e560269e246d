"""Test-only writers of the ORIGINAL single-file checkpoint layouts, independent of diffstack's key tables.

Each converter goes the inverse direction of the plugins' readers — diffusers / transformers names → the names
the original Stable Diffusion code saves — so a file written here checks the readers instead of echoing them:

- `ldm_unet_key`, `ldm_vae_key`, `ldm_checkpoint`: CompVis/LDM (SD 1.x) U-Net and VAE, and an SD 1.x file
  (`model.diffusion_model.`, `first_stage_model.`, `cond_stage_model.transformer.`).
- `sgm_key`, `original_layout`: the SD 2.x (LDM) / SDXL (SGM) U-Net, with SDXL's `label_emb` and per-level
  transformer depths — written separately from `ldm_unet_key`, a second independent spelling.
- `openclip_state`: a transformers CLIP text tower in OpenCLIP's layout (SD 2.x's tower, SDXL's second).
- `sd2_checkpoint`, `sdxl_checkpoint`: whole SD 2.x / SDXL single files from diffusers pipelines.
"""

from __future__ import annotations

import re
from typing import Any

import torch

# ─── LDM (SD 1.x) U-Net and VAE ─────────────────────────────────────────────────────────────────────────


def ldm_unet_key(key: str, layers: int, up_attention: list[bool]) -> str:
    """A diffusers UNet2DConditionModel key → LDM's (without `model.diffusion_model.`); `layers` is
    layers_per_block, `up_attention[level]` whether that up level has attention. No `add_embedding` (SD 1.x)."""
    resnet = [
        ("norm1", "in_layers.0"),
        ("conv1", "in_layers.2"),
        ("time_emb_proj", "emb_layers.1"),
        ("norm2", "out_layers.0"),
        ("conv2", "out_layers.3"),
        ("conv_shortcut", "skip_connection"),
    ]
    top = {
        "conv_in": "input_blocks.0.0",
        "time_embedding.linear_1": "time_embed.0",
        "time_embedding.linear_2": "time_embed.2",
        "conv_norm_out": "out.0",
        "conv_out": "out.2",
        "mid_block.resnets.0": "middle_block.0",
        "mid_block.attentions.0": "middle_block.1",
        "mid_block.resnets.1": "middle_block.2",
    }
    module, _, leaf = key.rpartition(".")
    for ours, theirs in resnet:
        module = re.sub(rf"resnets\.(\d+)\.{ours}$", rf"resnets.\1.{theirs}", module)
    for ours, theirs in top.items():
        if module == ours or module.startswith(ours + "."):
            return theirs + module[len(ours) :] + "." + leaf
    block, level, sub, index, *rest = module.split(".")
    level, index, inner = int(level), int(index), "".join(f"{part}." for part in rest)
    if block == "down_blocks":
        first = 1 + level * (layers + 1)  # input_blocks.0 is conv_in; each level: `layers` slots + downsample
        if sub == "downsamplers":
            return f"input_blocks.{first + layers}.0.op.{leaf}"
        return f"input_blocks.{first + index}.{0 if sub == 'resnets' else 1}.{inner}{leaf}"
    first = level * (layers + 1)  # each up level: `layers + 1` slots, the upsampler in the last one
    if sub == "upsamplers":  # after the slot's resnet (.0) and attention (.1) if the level has one
        return f"output_blocks.{first + layers}.{2 if up_attention[level] else 1}.conv.{leaf}"
    return f"output_blocks.{first + index}.{0 if sub == 'resnets' else 1}.{inner}{leaf}"


def ldm_vae_key(key: str, levels: int) -> str:
    """A diffusers AutoencoderKL key → LDM's (without `first_stage_model.`); `levels` = len(block_out_channels).
    (The mid attention's q/k/v/proj_out weights are 1×1 convs there: `ldm_vae_state` reshapes them.)"""
    key = key.replace("conv_norm_out", "norm_out").replace("conv_shortcut", "nin_shortcut")
    key = re.sub(r"down_blocks\.(\d+)\.resnets\.", r"down.\1.block.", key)
    key = re.sub(r"down_blocks\.(\d+)\.downsamplers\.0\.", r"down.\1.downsample.", key)
    key = re.sub(r"up_blocks\.(\d+)\.resnets\.", lambda m: f"up.{levels - 1 - int(m.group(1))}.block.", key)
    key = re.sub(r"up_blocks\.(\d+)\.upsamplers\.0\.", lambda m: f"up.{levels - 1 - int(m.group(1))}.upsample.", key)
    key = re.sub(r"mid_block\.resnets\.(\d)\.", lambda m: f"mid.block_{int(m.group(1)) + 1}.", key)
    for ours, theirs in [("group_norm", "norm"), ("to_q", "q"), ("to_k", "k"), ("to_v", "v"), ("to_out.0", "proj_out")]:
        key = key.replace(f"mid_block.attentions.0.{ours}.", f"mid.attn_1.{theirs}.")
    return key


def ldm_vae_state(vae: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A diffusers AutoencoderKL's weights in LDM's layout (without `first_stage_model.`)."""
    state = {}
    for key, value in vae.state_dict().items():
        name = ldm_vae_key(key, len(vae.config.block_out_channels))
        if ".mid.attn_1." in name and name.endswith("weight") and value.ndim == 2:
            value = value[:, :, None, None]  # LDM's attention projections are 1×1 convs
        state[name] = value
    return state


def ldm_checkpoint(unet: torch.nn.Module, vae: torch.nn.Module, text: torch.nn.Module) -> dict[str, torch.Tensor]:
    """An SD 1.x single file: a diffusers U-Net and VAE and a transformers CLIPTextModel in LDM's layout, plus
    the constant `position_ids` and a top-level `model_ema.decay` (real files have such entries)."""
    state: dict[str, torch.Tensor] = {}
    up_attention = ["CrossAttn" in kind for kind in unet.config.up_block_types]
    for key, value in unet.state_dict().items():
        state["model.diffusion_model." + ldm_unet_key(key, unet.config.layers_per_block, up_attention)] = value
    state |= {"first_stage_model." + key: value for key, value in ldm_vae_state(vae).items()}
    for key, value in text.state_dict().items():  # transformers 5 names them without the text_model. prefix
        state["cond_stage_model.transformer.text_model." + key.removeprefix("text_model.")] = value
    positions = text.config.max_position_embeddings
    state["cond_stage_model.transformer.text_model.embeddings.position_ids"] = torch.arange(positions)[None]
    state["model_ema.decay"] = torch.tensor(0.9999)  # other top-level entries of real checkpoints are ignored
    return {k: v.contiguous() for k, v in state.items()}


# ─── LDM/SGM (SD 2.x, SDXL) U-Net ───────────────────────────────────────────────────────────────────────

RESNET_PARTS = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
WHOLE_MODULES = {
    "conv_in": "input_blocks.0.0",
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "add_embedding.linear_1": "label_emb.0.0",  # SDXL: label_emb.0 is Sequential(Linear, SiLU, Linear)
    "add_embedding.linear_2": "label_emb.0.2",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
    "mid_block.resnets.0": "middle_block.0",
    "mid_block.attentions.0": "middle_block.1",
    "mid_block.resnets.1": "middle_block.2",
}


def sgm_key(key: str, layers: int, up_attention: list[bool]) -> str:
    """A diffusers UNet2DConditionModel key → the original layout's (without `model.diffusion_model.`).

    input_blocks: 0 is conv_in, then per level `layers` slots (.0 ResNet, .1 SpatialTransformer) and one
    downsample slot (.0.op); output_blocks: per level `layers + 1` slots, the last one ending in the upsampler
    (.1.conv, or .2.conv after an attention). Transformer layers keep their `transformer_blocks.N` names.
    """
    key = re.sub(r"resnets\.(\d+)\.(\w+)\.", lambda m: f"resnets.{m[1]}.{RESNET_PARTS.get(m[2], m[2])}.", key)
    for ours, theirs in WHOLE_MODULES.items():
        if key.startswith(ours + "."):
            return theirs + key[len(ours) :]
    m = re.fullmatch(r"(down|up)_blocks\.(\d+)\.(resnets|attentions|downsamplers|upsamplers)\.(\d+)\.(.+)", key)
    assert m is not None, key
    direction, level, part, index, rest = m[1], int(m[2]), m[3], int(m[4]), m[5]
    if direction == "down":
        slot = 1 + level * (layers + 1)
        if part == "downsamplers":
            return f"input_blocks.{slot + layers}.0.op.{rest.removeprefix('conv.')}"
        return f"input_blocks.{slot + index}.{1 if part == 'attentions' else 0}.{rest}"
    slot = level * (layers + 1)
    if part == "upsamplers":
        return f"output_blocks.{slot + layers}.{2 if up_attention[level] else 1}.{rest}"
    return f"output_blocks.{slot + index}.{1 if part == 'attentions' else 0}.{rest}"


def original_layout(state: dict[str, torch.Tensor], config: Any) -> dict[str, torch.Tensor]:
    """A diffusers U-Net state dict → the SD 2.x / SDXL layout (`sgm_key`); `config`: the U-Net's diffusers
    config (a mapping with `up_block_types` and `layers_per_block`)."""
    up_attention = ["CrossAttn" in kind for kind in config["up_block_types"]]
    return {sgm_key(k, config["layers_per_block"], up_attention): v for k, v in state.items()}


# ─── OpenCLIP text towers ───────────────────────────────────────────────────────────────────────────────


def openclip_state(model, projection: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """A transformers CLIPTextModel[WithProjection]'s weights under OpenCLIP's names (open_clip `CLIP`'s text
    half): `token_embedding`, `positional_embedding` (L, D), `transformer.resblocks.N.{ln_1, attn.in_proj_*
    (q/k/v fused), attn.out_proj, ln_2, mlp.c_fc, mlp.c_proj}`, `ln_final`, `text_projection` (D, P) applied as
    x @ W, plus `logit_scale` and the `attn_mask` buffer. `projection` (D, P): for a model without its own."""
    text, state = getattr(model, "text_model", model), {}  # transformers 5's CLIPTextModel is the transformer
    state["token_embedding.weight"] = text.embeddings.token_embedding.weight
    state["positional_embedding"] = text.embeddings.position_embedding.weight  # (L, D)
    for i, layer in enumerate(text.encoder.layers):
        block, attn = f"transformer.resblocks.{i}.", layer.self_attn
        state[block + "ln_1.weight"], state[block + "ln_1.bias"] = layer.layer_norm1.weight, layer.layer_norm1.bias
        state[block + "attn.in_proj_weight"] = torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight])
        state[block + "attn.in_proj_bias"] = torch.cat([attn.q_proj.bias, attn.k_proj.bias, attn.v_proj.bias])
        state[block + "attn.out_proj.weight"], state[block + "attn.out_proj.bias"] = (
            attn.out_proj.weight,
            attn.out_proj.bias,
        )
        state[block + "ln_2.weight"], state[block + "ln_2.bias"] = layer.layer_norm2.weight, layer.layer_norm2.bias
        state[block + "mlp.c_fc.weight"], state[block + "mlp.c_fc.bias"] = layer.mlp.fc1.weight, layer.mlp.fc1.bias
        state[block + "mlp.c_proj.weight"], state[block + "mlp.c_proj.bias"] = layer.mlp.fc2.weight, layer.mlp.fc2.bias
    state["ln_final.weight"], state["ln_final.bias"] = text.final_layer_norm.weight, text.final_layer_norm.bias
    if projection is None and hasattr(model, "text_projection"):
        projection = model.text_projection.weight.T  # (D, P): OpenCLIP computes x @ text_projection
    if projection is not None:
        state["text_projection"] = projection
    state["logit_scale"] = torch.tensor(4.6052)
    positions = state["positional_embedding"].shape[0]
    state["attn_mask"] = torch.full((positions, positions), float("-inf")).triu(1)
    return {k: v.detach().contiguous().clone() for k, v in state.items()}


def random_resblock(state: dict[str, torch.Tensor], generator: torch.Generator) -> dict[str, torch.Tensor]:
    """`state` (OpenCLIP names) with one more random resblock after its last — the layer that diffusers' SD 2.x
    folders drop and SD 2.x never reads (it conditions on the penultimate layer)."""
    layers = {int(m[1]) for k in state if (m := re.match(r"transformer\.resblocks\.(\d+)\.", k))}
    last, new = f"transformer.resblocks.{max(layers)}.", f"transformer.resblocks.{max(layers) + 1}."
    extra = {
        new + key.removeprefix(last): torch.randn(value.shape, generator=generator) * 0.1 + value.mean()
        for key, value in state.items()
        if key.startswith(last)
    }
    return state | extra


# ─── whole SD 2.x / SDXL single files ───────────────────────────────────────────────────────────────────


def transformers_text_state(text) -> dict[str, torch.Tensor]:
    """A transformers CLIPTextModel's weights under `text_model.` (as original SDXL/SD 1.x files keep them,
    whatever transformers' version), with the constant `embeddings.position_ids` real files carry."""
    state = {"text_model." + k.removeprefix("text_model."): v for k, v in text.state_dict().items()}
    positions = text.config.max_position_embeddings
    return state | {"text_model.embeddings.position_ids": torch.arange(positions)[None]}


def sd2_checkpoint(pipeline, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """A diffusers SD 2.x `StableDiffusionPipeline` as an original SD 2.x single file: U-Net (LDM), VAE (LDM),
    and the text tower in OpenCLIP's layout under `cond_stage_model.model.` with what diffusers' folder dropped
    put back: one more (random) final resblock and a (random) text_projection (D, D)."""
    unet, vae, text = pipeline.unet, pipeline.vae, pipeline.text_encoder
    width = text.config.hidden_size
    projection = torch.randn(width, width, generator=generator) * width**-0.5
    tower = random_resblock(openclip_state(text, projection), generator)
    state = {"model.diffusion_model." + k: v for k, v in original_layout(unet.state_dict(), unet.config).items()}
    state |= {"first_stage_model." + k: v for k, v in ldm_vae_state(vae).items()}
    state |= {"cond_stage_model.model." + k: v for k, v in tower.items()}
    return {k: v.detach().contiguous() for k, v in state.items()}


def sdxl_checkpoint(pipeline) -> dict[str, torch.Tensor]:
    """A diffusers `StableDiffusionXLPipeline` as an original SDXL single file: U-Net (SGM, with `label_emb`),
    VAE (LDM), the first tower in transformers' names under `conditioner.embedders.0.transformer.`, the second
    in OpenCLIP's under `conditioner.embedders.1.model.`."""
    unet, vae = pipeline.unet, pipeline.vae
    state = {"model.diffusion_model." + k: v for k, v in original_layout(unet.state_dict(), unet.config).items()}
    state |= {"first_stage_model." + k: v for k, v in ldm_vae_state(vae).items()}
    first = transformers_text_state(pipeline.text_encoder)
    state |= {"conditioner.embedders.0.transformer." + k: v for k, v in first.items()}
    state |= {"conditioner.embedders.1.model." + k: v for k, v in openclip_state(pipeline.text_encoder_2).items()}
    return {k: v.detach().contiguous() for k, v in state.items()}
