"""Trained components as self-describing safetensors: the weights plus, in the file's metadata, the kind,
plugin and config they were trained with, so a later stage (or the registry block) rebuilds them exactly.

    metadata {"kind": "encoder", "plugin": "vae-kl", "config": "<JSON of the plugin config>"}
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from core.create import create
from core.errors import WeightsError
from core.images import current_umask
from core.weights import load_into, load_state_dict


def save_component(
    state: dict[str, torch.Tensor],
    path: str | Path,
    *,
    kind: str,
    plugin: str,
    config: dict[str, Any],
    dtype: torch.dtype = torch.float32,
) -> None:
    """Write `state` (floating tensors cast to `dtype`) with its kind, plugin and config as metadata."""
    tensors = {
        k: (v.to(dtype) if v.is_floating_point() else v).detach().cpu().contiguous().clone() for k, v in state.items()
    }
    metadata = {"kind": kind, "plugin": plugin, "config": json.dumps(config)}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=metadata)
    os.chmod(path, 0o666 & ~current_umask())  # as open(path, "w") would; safetensors writes 0600


def component_info(path: str | Path) -> dict[str, Any]:
    """{"kind", "plugin", "config"} of a file written by `save_component`."""
    path = Path(path)
    if not path.exists():
        raise WeightsError(f"{path}: no such file", hint="train that stage first (diffstack train …)")
    with safe_open(str(path), "pt") as f:
        metadata = f.metadata() or {}
    if not {"kind", "plugin", "config"} <= set(metadata):
        raise WeightsError(
            f"{path}: no kind/plugin/config metadata", hint="write it with core.training.export.save_component"
        )
    return {"kind": metadata["kind"], "plugin": metadata["plugin"], "config": json.loads(metadata["config"])}


def load_component(path: str | Path, *, device: torch.device | str = "cpu") -> nn.Module:
    """Build the component described by the file's metadata and load its weights (float32, on `device`)."""
    info = component_info(path)
    module = create(info["kind"], info["plugin"], **info["config"])
    load_into(module, load_state_dict(path), component=f"{info['kind']} {info['plugin']}", source=str(path))
    return module.float().to(device).eval()
