"""How clip-text's weights are laid out in checkpoints written by transformers (a diffusers `text_encoder/`
folder) and by the original LDM code (`cond_stage_model.transformer.*` in an SD 1.x single file).

Both hold transformers' `CLIPTextModel` keys, which are ours (`text_model.…`) — except that transformers 5
saves them without the `text_model.` prefix, and older versions saved the constant `position_ids` buffer.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from core import CheckpointLayout
from core.checkpoint_layout import ANY_VALUE, ShapeReader, Shapes, SingleFileNames

SD1_SINGLE_FILE = ("model.diffusion_model.", "first_stage_model.", "cond_stage_model.")  # its U-Net, VAE, text

# transformers' CLIPTextConfig keys that Config leaves out whatever their value: metadata, training-only
# settings, token ids the tokenizer knows, and the projection of the CLIP model this text tower came from.
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
    "projection_dim",
    "output_attentions",
    "output_hidden_states",
    "use_return_dict",
)


def tensor_names(keys: list[str]) -> dict[str, str]:
    """transformers' CLIPTextModel keys → ours (`text_model.X`, the prefix transformers 5 leaves out), minus
    the constant `position_ids` buffer older versions saved."""
    return {"text_model." + k.removeprefix("text_model."): k for k in keys if not k.endswith("position_ids")}


def config_from_diffusers(config: dict[str, Any], folder: Path) -> dict[str, Any]:
    """A `text_encoder/config.json` (left-out keys dropped) plus `tokenizer`: the pipeline's `tokenizer/`
    folder beside it, when there is one."""
    if (folder.parent / "tokenizer").is_dir():
        config.setdefault("tokenizer", str(folder.parent / "tokenizer"))
    return config


def single_file_names(shapes: Shapes) -> tuple[SingleFileNames, dict[str, Any]]:
    """`[text_model.]X` (`cond_stage_model.transformer.` stripped) → `text_model.X`, position_ids dropped, and
    the architecture the shapes show. Raises `Unreadable` (naming keys as `text_model.X`, the usual layout in
    the file)."""
    names = {ours: (theirs, False) for ours, theirs in tensor_names(list(shapes)).items()}
    reader = ShapeReader({ours: shapes[theirs] for ours, (theirs, _) in names.items()})
    layer = re.compile(r"text_model\.encoder\.layers\.(\d{1,9})\.")
    layers = {m.group(1) for k in reader.shapes if (m := layer.match(k))}
    architecture = {
        "vocab_size": reader.dim("text_model.embeddings.token_embedding.weight", 0, 2),
        "hidden_size": reader.dim("text_model.embeddings.token_embedding.weight", 1, 2),
        "num_hidden_layers": len(layers),
        "intermediate_size": reader.dim("text_model.encoder.layers.0.mlp.fc1.weight", 0, 2),
        "max_position_embeddings": reader.dim("text_model.embeddings.position_embedding.weight", 0, 2),
    }
    reader.check()
    return names, architecture


CHECKPOINT_LAYOUT = CheckpointLayout(
    diffusers_subfolder="text_encoder",
    diffusers_weights_stem="model",
    diffusers_classes=("CLIPTextModel",),
    diffusers_left_out=dict.fromkeys(LEFT_OUT, ANY_VALUE),
    config_from_diffusers=config_from_diffusers,
    diffusers_tensor_names=tensor_names,
    single_file_prefix="cond_stage_model.transformer.",
    single_file_family=SD1_SINGLE_FILE,
    single_file_lookalikes={"cond_stage_model.model.": "SD 2.x's OpenCLIP text encoder, not supported"},
    single_file_names=single_file_names,
)
