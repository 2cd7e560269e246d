"""How clip-text's weights are laid out in checkpoints written by transformers (a diffusers `text_encoder/` or
`text_encoder_2/` folder) and by the original SD code (an SD 1.x or 2.x single file, under `cond_stage_model.`).

- transformers (`CLIPTextModel[WithProjection]`, and SD 1.x single files under `cond_stage_model.transformer.`)
  hold our names (`text_model.…`, `text_projection.weight`) — except that transformers 5 saves a
  `CLIPTextModel` without the `text_model.` prefix, and older versions saved the constant `position_ids`.
- OpenCLIP (SD 2.x single files under `cond_stage_model.model.`) names the same tensors its own way and fuses
  q/k/v: `transformer.resblocks.N.attn.in_proj_weight` (3·D, D) is read as three (D, D) row blocks, and
  `text_projection` (D, P), applied as x @ W, is read transposed.

`hf_names` and `openclip_names` map the keys under one such prefix (prefix stripped) and read the architecture
from the shapes; an SDXL layout reuses them: `CheckpointLayout(single_file_prefix="conditioner.embedders.1.model.",
single_file_names=openclip_names)` and `"conditioner.embedders.0.transformer."` with `hf_names`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core import CheckpointLayout
from core.checkpoint_layout import ANY_VALUE, FileTensor, ShapeReader, Shapes, SingleFileNames, Unreadable
from core.weights import read_json
from plugins import single_file

WITH_PROJECTION = "CLIPTextModelWithProjection"
OPENCLIP_HEAD_WIDTH = 64  # OpenCLIP's ViT-H/14 and ViT-bigG/14 text towers: 1024/16 and 1280/20

# transformers' CLIPTextConfig keys that Config leaves out whatever their value: metadata, training-only
# settings, and token ids the tokenizer knows. (`projection_dim` is kept for a CLIPTextModelWithProjection only:
# `config_from_diffusers`.)
LEFT_OUT = (
    "architectures",
    "model_type",
    "transformers_version",
    "torch_dtype",
    "dtype",
    "attention_dropout",
    "dropout",
    "initializer_factor",
    "initializer_range",
    "bos_token_id",
    "eos_token_id",
    "pad_token_id",
    "output_attentions",
    "output_hidden_states",
    "use_return_dict",
)


def tensor_names(keys: list[str]) -> dict[str, str]:
    """transformers' CLIPTextModel[WithProjection] keys → ours: `text_model.X` (the prefix transformers 5 leaves
    out of a CLIPTextModel) and `text_projection.weight`, minus the constant `position_ids` buffer."""
    return {
        k if k == "text_projection.weight" else "text_model." + k.removeprefix("text_model."): k
        for k in keys
        if not k.endswith("position_ids")
    }


def config_from_diffusers(config: dict[str, Any], folder: Path) -> dict[str, Any]:
    """A `text_encoder[_N]/config.json` (left-out keys dropped) → Config fields: `projection_dim` kept only for a
    CLIPTextModelWithProjection (a CLIPTextModel's config states its CLIP model's projection without having
    its weights), plus `tokenizer`: the pipeline's `tokenizer[_N]/` folder beside it, when there is one."""
    architectures = read_json(folder / "config.json").get("architectures")
    if not (isinstance(architectures, list) and architectures and architectures[0] == WITH_PROJECTION):
        config.pop("projection_dim", None)
    tokenizer = folder.parent / ("tokenizer" + folder.name.removeprefix("text_encoder"))
    if folder.name.startswith("text_encoder") and tokenizer.is_dir():
        config.setdefault("tokenizer", str(tokenizer))
    return config


def hf_names(shapes: Shapes) -> tuple[SingleFileNames, dict[str, Any]]:
    """transformers' names (`[text_model.]X`, `text_projection.weight`; prefix stripped) → ours, position_ids
    dropped, and the architecture the shapes show (projection_dim when `text_projection.weight` is there).
    Raises `Unreadable` (naming keys as `text_model.X`, the usual layout in a file)."""
    names = {ours: FileTensor(theirs) for ours, theirs in tensor_names(list(shapes)).items()}
    reader = ShapeReader({ours: shapes[read.key] for ours, read in names.items()})
    layer = re.compile(r"text_model\.encoder\.layers\.(\d{1,9})\.")
    layers = {m.group(1) for k in reader.shapes if (m := layer.match(k))}
    architecture = {
        "vocab_size": reader.dim("text_model.embeddings.token_embedding.weight", 0, 2),
        "hidden_size": reader.dim("text_model.embeddings.token_embedding.weight", 1, 2),
        "num_hidden_layers": len(layers),
        "intermediate_size": reader.dim("text_model.encoder.layers.0.mlp.fc1.weight", 0, 2),
        "max_position_embeddings": reader.dim("text_model.embeddings.position_embedding.weight", 0, 2),
    }
    if "text_projection.weight" in reader.shapes:
        architecture["projection_dim"] = reader.dim("text_projection.weight", 0, 2)
    reader.check()
    return names, architecture


OPENCLIP_NAMES = {  # OpenCLIP's text-tower tensors → ours, but for the resblocks'
    "token_embedding.weight": "text_model.embeddings.token_embedding.weight",
    "positional_embedding": "text_model.embeddings.position_embedding.weight",
    "ln_final.weight": "text_model.final_layer_norm.weight",
    "ln_final.bias": "text_model.final_layer_norm.bias",
}
OPENCLIP_LAYER = {  # a resblock's modules → ours, but for the fused attn.in_proj_{weight,bias}
    "ln_1": "layer_norm1",
    "ln_2": "layer_norm2",
    "attn.out_proj": "self_attn.out_proj",
    "mlp.c_fc": "mlp.fc1",
    "mlp.c_proj": "mlp.fc2",
}
OPENCLIP_RESBLOCK = re.compile(r"transformer\.resblocks\.(\d{1,9})\.(.+)\.(weight|bias)")
OPENCLIP_IN_PROJ = re.compile(r"transformer\.resblocks\.(\d{1,9})\.attn\.in_proj_(weight|bias)")
OPENCLIP_LEFT_OUT = re.compile(r"logit_scale|attn_mask|visual\..*")  # CLIP's image half, constants


def openclip_names(shapes: Shapes) -> tuple[SingleFileNames, dict[str, Any]]:
    """OpenCLIP text-tower names (prefix stripped: `token_embedding.weight`, `positional_embedding` (L, D),
    `transformer.resblocks.N.{ln_1,attn.in_proj_*,attn.out_proj,ln_2,mlp.c_fc,mlp.c_proj}.*`, `ln_final.*`,
    `text_projection` (D, P)) → ours, and the architecture: sizes and projection_dim P from the shapes, gelu,
    pad_token "!" (OpenCLIP pads with id 0), and num_attention_heads = hidden_size / 64, which no shape shows
    (OpenCLIP's ViT-H and ViT-bigG text towers use 64-wide heads; set it in the config for another tower).
    `logit_scale`, `attn_mask` and `visual.*` are not loaded; any other key is passed on under its own name,
    for strict loading to report as unexpected. Raises `Unreadable`."""
    reader = ShapeReader(shapes)
    width = reader.dim("token_embedding.weight", 1, 2)
    names: SingleFileNames = {}
    layers = set()
    for key in shapes:
        if OPENCLIP_LEFT_OUT.fullmatch(key):
            continue
        if key in OPENCLIP_NAMES:
            names[OPENCLIP_NAMES[key]] = FileTensor(key)
        elif key == "text_projection":
            names["text_projection.weight"] = FileTensor(key, transpose=True)  # (D, P) → (P, D)
        elif fused := OPENCLIP_IN_PROJ.fullmatch(key):  # (3·D, …) → q, k, v blocks of D rows
            index, kind = fused.groups()
            layers.add(index)
            for i, proj in enumerate(("q_proj", "k_proj", "v_proj")):
                ours = f"text_model.encoder.layers.{index}.self_attn.{proj}.{kind}"
                names[ours] = FileTensor(key, rows=(i * width, (i + 1) * width))
        elif (resblock := OPENCLIP_RESBLOCK.fullmatch(key)) and resblock[2] in OPENCLIP_LAYER:
            index, module, kind = resblock.groups()
            layers.add(index)
            names[f"text_model.encoder.layers.{index}.{OPENCLIP_LAYER[module]}.{kind}"] = FileTensor(key)
        else:
            names[key] = FileTensor(key)  # not ours: strict loading names it as unexpected
    architecture = {
        "vocab_size": reader.dim("token_embedding.weight", 0, 2),
        "hidden_size": width,
        "num_hidden_layers": len(layers),
        "num_attention_heads": max(width // OPENCLIP_HEAD_WIDTH, 1),
        "intermediate_size": reader.dim("transformer.resblocks.0.mlp.c_fc.weight", 0, 2),
        "max_position_embeddings": reader.dim("positional_embedding", 0, 2),
        "hidden_act": "gelu",
        "pad_token": "!",
    }
    if "text_projection" in shapes:
        architecture["projection_dim"] = reader.dim("text_projection", 1, 2)
    reader.check()
    return names, architecture


NamesReader = Callable[[Shapes], tuple[SingleFileNames, dict[str, Any]]]


def under(prefix: str, read: NamesReader, shapes: Shapes) -> tuple[SingleFileNames, dict[str, Any]]:
    """`read` (`hf_names`, `openclip_names`) applied to the keys under `prefix`, every file key it names or
    reports (`Unreadable`) with `prefix` put back."""
    try:
        names, architecture = read({k.removeprefix(prefix): v for k, v in shapes.items() if k.startswith(prefix)})
    except Unreadable as exc:
        raise Unreadable([prefix + k for k in exc.missing], [prefix + line for line in exc.misshapen]) from None
    return {ours: file._replace(key=prefix + file.key) for ours, file in names.items()}, architecture


def single_file_names(shapes: Shapes) -> tuple[SingleFileNames, dict[str, Any]]:
    """An SD 1.x or 2.x single file's text tower (`cond_stage_model.` stripped): `transformer.…` (SD 1.x,
    transformers' names: `hf_names`) or `model.…` (SD 2.x, OpenCLIP's: `openclip_names`, with clip_skip 2 —
    SD 2.x conditions on the penultimate layer, then the final norm; diffusers' SD 2.x folders drop the last
    layer instead, which gives the same context — and without the projection, which SD 2.x does not use, so
    both loads make the same bare context)."""
    if any(k.startswith("model.") for k in shapes) and not any(k.startswith("transformer.") for k in shapes):
        names, architecture = under("model.", openclip_names, shapes)
        names.pop("text_projection.weight", None)
        architecture.pop("projection_dim", None)
        return names, architecture | {"clip_skip": 2}
    return under("transformer.", hf_names, shapes)


CHECKPOINT_LAYOUT = CheckpointLayout(
    diffusers_subfolder="text_encoder",
    diffusers_weights_stem="model",
    diffusers_classes=("CLIPTextModel", WITH_PROJECTION),
    diffusers_left_out=dict.fromkeys(LEFT_OUT, ANY_VALUE),
    config_from_diffusers=config_from_diffusers,
    diffusers_tensor_names=tensor_names,
    single_file_prefix=single_file.SD_TEXT,
    single_file_family=single_file.FAMILY,
    single_file_lookalikes={"conditioner.embedders.": "SDXL's two text encoders, read by an SDXL conditioner"},
    single_file_names=single_file_names,
)
