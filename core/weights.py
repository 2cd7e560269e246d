"""Checkpoint loading: safetensors only, memory-mapped, strict, in three layouts.

Formats (`detect_format` picks one for `format: auto`):
- `native`: one `.safetensors` file whose keys are the component's own parameter names.
- `diffusers`: a folder with `model_index.json` and `unet/`, `vae/`, `text_encoder/` (+ `tokenizer/`,
  `scheduler/`) subfolders — or one such subfolder. Each holds `config.json` (the architecture, in the same
  key names as our plugin Configs) and `diffusion_pytorch_model.safetensors` / `model.safetensors` (also
  `*.fp16.safetensors` variants and sharded `*.safetensors.index.json`). Keys are already ours.
- `sd1-single-file`: the original CompVis/LDM checkpoint of Stable Diffusion 1.x in one file, with
  `model.diffusion_model.*` (U-Net), `first_stage_model.*` (VAE) and `cond_stage_model.transformer.*`
  (CLIP text model) keys; they are renamed here, and the VAE's 1×1-conv attention projections are read as
  Linear weights. The architecture is read from the tensor shapes where they tell it (channels, levels,
  layers, attention placement, context width); the rest is SD 1.x's.

`read_component_weights(path, kind)` returns a lazy `CheckpointState` plus the architecture found (or None):
tensors stay in the memory-mapped file until `load_into` reads them one at a time, after checking every key
and shape, so nothing is half-loaded and no second full copy is made. `build_with_weights` builds the module
on the meta device first, so a random initialisation is never allocated either. Pickle checkpoints are
refused with a conversion hint.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch.overrides import TorchFunctionMode

from core.devices import placement_dtype
from core.errors import WeightsError
from core.interfaces import MODEL_KINDS

log = logging.getLogger(__name__)

Format = Literal["native", "diffusers", "sd1-single-file"]
FORMATS: tuple[str, ...] = get_args(Format)

PICKLE_SUFFIXES = (".ckpt", ".bin", ".pt", ".pth", ".pkl")
SHOWN_KEYS = 5
REMAP_BYTES = 64 * 2**20  # reopen a file's memory map after this much was read, so read pages leave RSS

DIFFUSERS_SUBFOLDER = {"encoder": "vae", "denoiser": "unet", "text": "text_encoder"}
DIFFUSERS_WEIGHTS_STEM = {"encoder": "diffusion_pytorch_model", "denoiser": "diffusion_pytorch_model", "text": "model"}
DIFFUSERS_CLASS = {"encoder": "AutoencoderKL", "denoiser": "UNet2DConditionModel", "text": "CLIPTextModel"}
SINGLE_FILE_PREFIX = {
    "encoder": "first_stage_model.",
    "denoiser": "model.diffusion_model.",
    "text": "cond_stage_model.transformer.",
}

_ANY = object()
# Config keys of diffusers / transformers that our Configs leave out, with the value that means "feature off".
# A key set to another value is a feature the plugin lacks → WeightsError. `_ANY`: dropped whatever the value
# (metadata, or training-only settings). None values are dropped everywhere (diffusers' "not set").
_LEFT_OUT: dict[str, dict[str, Any]] = {
    "denoiser": {
        "center_input_sample": False,
        "only_cross_attention": False,
        "downsample_padding": 1,
        "mid_block_scale_factor": 1,
        "act_fn": "silu",
        "dual_cross_attention": False,
        "resnet_time_scale_shift": "default",
        "resnet_skip_time_act": False,
        "resnet_out_scale_factor": 1,
        "time_embedding_type": "positional",
        "conv_in_kernel": 3,
        "conv_out_kernel": 3,
        "attention_type": "default",
        "class_embeddings_concat": False,
        "addition_embed_type_num_heads": _ANY,
        "encoder_hid_dim_type": None,
        "class_embed_type": None,
        "addition_embed_type": None,
        "num_class_embeds": None,
        "encoder_hid_dim": None,
        "time_cond_proj_dim": None,
        "time_embedding_dim": None,
        "num_attention_heads": None,
        "addition_time_embed_dim": None,
        "projection_class_embeddings_input_dim": None,
        "timestep_post_act": None,
        "time_embedding_act_fn": None,
        "cross_attention_norm": None,
        "mid_block_only_cross_attention": None,
        "reverse_transformer_layers_per_block": None,
    },
    "encoder": {"act_fn": "silu", "shift_factor": None, "latents_mean": None, "latents_std": None},
    "text": {
        key: _ANY
        for key in (
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
    },
}


def refuse_pickle(path: Path) -> None:
    """Raise a WeightsError for a pickle checkpoint (by its suffix), saying how to convert it."""
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise _pickle_error(path)


def _pickle_error(path: Path) -> WeightsError:
    return WeightsError(
        f"{path}: pickle checkpoints are refused — loading them can run arbitrary code",
        hint='convert once with: python -c "import torch, safetensors.torch as s; '
        f"s.save_file(torch.load('{path.name}', weights_only=True), '{path.stem}.safetensors')\"",
    )


def _open(path: Path, device: torch.device | str = "cpu") -> Any:
    """A safetensors handle for `path`, or a WeightsError saying what is wrong with the file."""
    refuse_pickle(path)
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}", hint="check the `weights:` path in the registry")
    try:
        return safe_open(str(path), framework="pt", device=str(device))
    except Exception as exc:  # safetensors raises its own SafetensorError as well as OSError
        with path.open("rb") as f:
            head = f.read(4)
        if head.startswith((b"PK\x03\x04", b"\x80")):  # torch.save's zip archive, or a bare pickle
            raise _pickle_error(path) from None
        raise WeightsError(
            f"{path}: not a complete safetensors file ({exc})",
            hint="the file may be truncated (an interrupted download) or another format; "
            "re-download it or re-export it with safetensors.torch.save_file",
        ) from None


def load_state_dict(path: str | Path, *, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """Read every tensor of a `.safetensors` file. Tensors are memory-mapped on CPU."""
    with _open(Path(path), device) as f:
        return {key: f.get_tensor(key) for key in f.keys()}


def save_state_dict(state: Mapping[str, torch.Tensor], path: str | Path) -> None:
    """Write a state dict as safetensors (contiguous CPU copies, shared storage broken)."""
    save_file({k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}, str(path))


@dataclass(frozen=True)
class TensorSource:
    """Where one tensor of a `CheckpointState` lives. `squeeze`: an (O, I, 1, 1) conv kernel read as (O, I)."""

    file: Path
    key: str
    squeeze: bool = False


class CheckpointState(Mapping[str, torch.Tensor]):
    """A read-only state dict whose tensors are read from safetensors files only when accessed.

    `shape(key)` comes from the file header, so a whole checkpoint can be checked before any data is read.
    Each access returns a memory-mapped CPU tensor (or one on `device`); the file's map is reopened every
    `REMAP_BYTES` so pages already read can leave resident memory.
    """

    def __init__(self, sources: dict[str, TensorSource], *, device: torch.device | str = "cpu") -> None:
        self.sources = sources
        self.device = device
        self._handles: dict[Path, Any] = {}
        self._read_bytes = 0
        self._shapes: dict[str, tuple[int, ...]] = {}
        for key, source in sources.items():
            shape = tuple(self._handle(source.file).get_slice(source.key).get_shape())
            self._shapes[key] = shape[:2] if source.squeeze else shape

    def _handle(self, file: Path) -> Any:
        if file not in self._handles:
            self._handles[file] = _open(file, self.device)
        return self._handles[file]

    def shape(self, key: str) -> tuple[int, ...]:
        return self._shapes[key]

    def __getitem__(self, key: str) -> torch.Tensor:
        source = self.sources[key]
        tensor = self._handle(source.file).get_tensor(source.key)
        self._read_bytes += tensor.nbytes
        if self._read_bytes > REMAP_BYTES:  # returned tensors keep their own reference to the map
            self._handles.clear()
            self._read_bytes = 0
        return tensor.reshape(self._shapes[key]) if source.squeeze else tensor

    def __iter__(self) -> Iterator[str]:
        return iter(self.sources)

    def __len__(self) -> int:
        return len(self.sources)

    @property
    def files(self) -> list[Path]:
        return sorted({s.file for s in self.sources.values()})


def _shape(state: Mapping[str, torch.Tensor], key: str) -> tuple[int, ...]:
    return state.shape(key) if isinstance(state, CheckpointState) else tuple(state[key].shape)


def _listing(names: list[str]) -> str:
    shown = ", ".join(names[:SHOWN_KEYS])
    return shown + (f", … ({len(names)} in all)" if len(names) > SHOWN_KEYS else f" ({len(names)})")


def load_into(
    module: torch.nn.Module,
    state: Mapping[str, torch.Tensor],
    *,
    component: str,
    source: str,
    device: torch.device | str | None = None,
) -> None:
    """Copy `state` into `module` strictly, converting each tensor to its parameter's device and dtype.

    Every key and shape is checked before anything is written: a WeightsError lists missing keys,
    unexpected keys and shape mismatches (first few of each, with counts) and leaves the module untouched.
    Tensors are then read one at a time. A parameter or buffer on the meta device (see `build_with_weights`)
    is replaced by a new tensor on `device` (default CPU) with the meta tensor's dtype and strides.
    """
    own = module.state_dict(keep_vars=True)
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = [
        f"{k}: checkpoint {_shape(state, k)} vs model {tuple(own[k].shape)}"
        for k in sorted(set(own) & set(state))
        if _shape(state, k) != tuple(own[k].shape)
    ]
    problems = []
    if missing:
        problems.append(f"missing keys: {_listing(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_listing(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatches: {_listing(mismatched)}")
    if problems:
        raise WeightsError(
            f"{component}: checkpoint {source} does not fit the model — " + "; ".join(problems),
            hint="check that the component's config (architecture) matches the checkpoint",
        )
    with torch.no_grad():
        for key, target in own.items():
            if not target.is_meta:
                target.copy_(state[key])
                continue
            filled = torch.empty_strided(target.shape, target.stride(), dtype=target.dtype, device=device or "cpu")
            filled.copy_(state[key])
            owner_name, _, name = key.rpartition(".")
            owner = module.get_submodule(owner_name)
            if isinstance(target, torch.nn.Parameter):
                filled = torch.nn.Parameter(filled, requires_grad=target.requires_grad)
            setattr(owner, name, filled)


class SkipInitOnMeta(TorchFunctionMode):
    """Inside it, random initialisation (`torch.nn.init.*`, `Tensor.normal_` and kin) of meta tensors returns
    the tensor untouched. On the meta device it computes nothing anyway, but torch routes it through its
    Python reference implementations (and imports torch._dynamo for them): ~3 s of an SD 1.5 load."""

    INIT = frozenset(
        {
            "normal_",
            "uniform_",
            "trunc_normal_",
            "zero_",
            "zeros_",
            "ones_",
            "fill_",
            "constant_",
            "xavier_uniform_",
            "xavier_normal_",
            "kaiming_uniform_",
            "kaiming_normal_",
            "orthogonal_",
        }
    )

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if getattr(func, "__name__", None) in self.INIT:
            tensor = args[0] if args else kwargs.get("tensor")
            if getattr(tensor, "is_meta", False):
                return tensor
        return func(*args, **kwargs)


def build_with_weights(
    build: Callable[[], torch.nn.Module],
    state: Mapping[str, torch.Tensor],
    *,
    component: str,
    source: str,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
) -> torch.nn.Module:
    """Build a module and fill it from `state` without ever allocating its random initialisation.

    `build()` runs on the meta device; the module is then moved to the dtype `core.devices.placement_dtype`
    gives for `dtype` (a VAE with `force_upcast` stays float32 for float16), and `load_into` materialises each
    tensor on `device` straight from the checkpoint. Peak memory ≈ the loaded model plus one tensor. A module
    holding non-persistent buffers (computed in `__init__`, absent from checkpoints) is built normally instead.
    """
    with torch.device("meta"), SkipInitOnMeta():
        module = build()
    if set(dict(module.named_buffers())) - set(module.state_dict()):
        module = build()
    if dtype is not None:
        module.to(dtype=placement_dtype(module, dtype))
    load_into(module, state, component=component, source=source, device=device)
    return module.to(device=device)


# ─── format detection and the three readers ──────────────────────────────────────────────────────────────


def detect_format(path: str | Path) -> Format:
    """`diffusers` for a folder with model_index.json or a component config.json; for a file,
    `sd1-single-file` when its keys carry the LDM prefixes, else `native`."""
    path = Path(path)
    if path.is_dir():
        if (path / "model_index.json").is_file() or (path / "config.json").is_file():
            return "diffusers"
        if any((path / sub / "config.json").is_file() for sub in DIFFUSERS_SUBFOLDER.values()):
            return "diffusers"
        raise WeightsError(
            f"{path}: a folder, but neither a diffusers pipeline (model_index.json) nor a component folder "
            "(config.json)",
            hint="point `weights:` at a diffusers folder, or at a .safetensors file",
        )
    with _open(path) as f:
        keys = list(f.keys())
    if any(key.startswith(tuple(SINGLE_FILE_PREFIX.values())) for key in keys):
        return "sd1-single-file"
    return "native"


def read_component_weights(
    path: str | Path, kind: str, format: str = "auto", *, device: torch.device | str = "cpu"
) -> tuple[CheckpointState, dict[str, Any] | None]:
    """The weights of one model part (`kind`: encoder, denoiser or text) in the part's own key names, and
    the architecture the checkpoint states (a dict of Config keys), or None when it states none (a native
    file states it in its `config` metadata, as `core.training` writes it).

    `format`: `auto` (see `detect_format`) or one of FORMATS. Nothing is read beyond headers and configs
    until the returned state is accessed.
    """
    path = Path(path)
    if kind not in MODEL_KINDS:
        raise WeightsError(f"{path}: {kind} components have no weights", hint=f"weights fit {', '.join(MODEL_KINDS)}")
    if format != "auto" and format not in FORMATS:
        raise WeightsError(f"{path}: unknown weights format {format!r}", hint=f"use auto, {', '.join(FORMATS)}")
    fmt = detect_format(path) if format == "auto" else format
    if fmt == "native":
        with _open(path) as f:
            keys, metadata = list(f.keys()), f.metadata() or {}
        return CheckpointState({k: TensorSource(path, k) for k in keys}, device=device), _stated_config(path, metadata)
    if fmt == "diffusers":
        return _read_diffusers(path, kind, device)
    return _read_single_file(path, kind, device)


def _stated_config(path: Path, metadata: dict[str, str]) -> dict[str, Any] | None:
    """The architecture a native file states in its metadata (`config`: JSON of the plugin config), if any."""
    if "config" not in metadata:
        return None
    try:
        config = json.loads(metadata["config"])
    except ValueError as exc:
        raise WeightsError(f"{path}: the `config` metadata is not valid JSON ({exc})") from None
    if not isinstance(config, dict):
        raise WeightsError(f"{path}: the `config` metadata is not a JSON object")
    return config


def _clip_text_names(sources: dict[str, Any]) -> dict[str, Any]:
    """transformers' CLIPTextModel keys as `text_model.X` (transformers 5 saves them without the prefix), minus
    the constant `position_ids` buffer older versions saved."""
    kept = {k: s for k, s in sources.items() if not k.endswith("position_ids")}
    return {"text_model." + k.removeprefix("text_model."): s for k, s in kept.items()}


# ─── diffusers folders ───────────────────────────────────────────────────────────────────────────────────


def _read_diffusers(path: Path, kind: str, device: torch.device | str) -> tuple[CheckpointState, dict[str, Any]]:
    if not path.is_dir():
        raise WeightsError(f"{path}: format diffusers needs a folder, got a file", hint="use format: auto")
    folder = path / DIFFUSERS_SUBFOLDER[kind]
    if not folder.is_dir():
        if (path / "model_index.json").is_file() or not (path / "config.json").is_file():
            raise WeightsError(
                f"{path}: diffusers folder has no {DIFFUSERS_SUBFOLDER[kind]}/ subfolder for the {kind}",
                hint=f"found: {', '.join(sorted(p.name for p in path.iterdir())) or 'nothing'}",
            )
        folder = path  # a component folder given directly
    architecture = read_diffusers_config(folder, kind)
    sources = _diffusers_sources(folder, kind)
    return CheckpointState(_clip_text_names(sources) if kind == "text" else sources, device=device), architecture


def read_diffusers_config(folder: str | Path, kind: str) -> dict[str, Any]:
    """A diffusers component's `config.json` as a dict of our Config keys.

    Checks the model class, drops metadata, None values and the left-out keys at their neutral values
    (`_LEFT_OUT`), and raises WeightsError for a feature our plugins lack. The denoiser also gets
    `prediction_type` from a sibling `scheduler/scheduler_config.json`; the text part gets `tokenizer`, the
    sibling `tokenizer/` folder.
    """
    folder = Path(folder)
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise WeightsError(
            f"{folder}: no config.json — a diffusers component folder needs it for the architecture",
            hint="copy config.json from the model's original repository into this folder",
        )
    try:
        raw = json.loads(config_path.read_text())
    except (OSError, ValueError) as exc:
        raise WeightsError(f"{config_path}: not readable JSON ({exc})") from None
    found = raw.get("_class_name") or next(iter(raw.get("architectures") or []), None)
    expected = DIFFUSERS_CLASS[kind]
    if found is not None and found != expected:
        raise WeightsError(
            f"{config_path}: describes a {found}, but a {kind} here needs a {expected}",
            hint="this checkpoint is for a different architecture",
        )
    config: dict[str, Any] = {}
    dropped = []
    for key, value in raw.items():
        neutral = _LEFT_OUT[kind].get(key, ...)
        if key.startswith("_") or value is None or neutral is _ANY or (neutral is not ... and value == neutral):
            dropped.append(key)
        elif neutral is not ...:
            raise WeightsError(
                f"{config_path}: {key}={value!r} is a feature the {kind} plugin does not implement",
                hint=f"only {key}={neutral!r} is supported; this checkpoint is for a different architecture",
            )
        else:
            config[key] = value
    log.debug("%s: left out diffusers-only keys %s", config_path, ", ".join(dropped))
    scheduler_config = folder.parent / "scheduler" / "scheduler_config.json"
    if kind == "denoiser" and scheduler_config.is_file():
        prediction_type = json.loads(scheduler_config.read_text()).get("prediction_type")
        if prediction_type:
            config.setdefault("prediction_type", prediction_type)
    if kind == "text" and (folder.parent / "tokenizer").is_dir():
        config.setdefault("tokenizer", str(folder.parent / "tokenizer"))
    return config


def _diffusers_sources(folder: Path, kind: str) -> dict[str, TensorSource]:
    stem = DIFFUSERS_WEIGHTS_STEM[kind]
    candidates = [folder / f"{stem}.safetensors", *sorted(folder.glob(f"{stem}.*.safetensors"))]
    for file in candidates:
        if file.is_file():
            with _open(file) as f:
                return {k: TensorSource(file, k) for k in f.keys()}
    index = folder / f"{stem}.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (OSError, ValueError, KeyError) as exc:
            raise WeightsError(f"{index}: not a safetensors shard index ({exc})") from None
        return {k: TensorSource(folder / shard, k) for k, shard in weight_map.items()}
    for pickle in (folder / f"{stem}.bin", folder / "pytorch_model.bin"):
        if pickle.is_file():
            refuse_pickle(pickle)
    raise WeightsError(
        f"{folder}: no {stem}.safetensors",
        hint=f"found: {', '.join(sorted(p.name for p in folder.iterdir()))}",
    )


# ─── original single-file SD 1.x checkpoints ─────────────────────────────────────────────────────────────


def _read_single_file(path: Path, kind: str, device: torch.device | str) -> tuple[CheckpointState, dict[str, Any]]:
    prefix = SINGLE_FILE_PREFIX[kind]
    with _open(path) as f:
        keys = list(f.keys())
        shapes = {k[len(prefix) :]: tuple(f.get_slice(k).get_shape()) for k in keys if k.startswith(prefix)}
    if not shapes:
        open_clip = kind == "text" and any(k.startswith("cond_stage_model.model.") for k in keys)
        other = " (it has cond_stage_model.model.*: SD 2.x's OpenCLIP text encoder, not supported)" if open_clip else ""
        raise WeightsError(
            f"{path}: no {prefix}* keys for the {kind} in this single-file checkpoint{other}",
            hint="use a complete SD 1.x checkpoint, or name the component's own weights file",
        )
    convert = {"denoiser": _ldm_unet, "encoder": _ldm_vae, "text": _ldm_text}[kind]
    names, architecture = convert(shapes)
    sources = {ours: TensorSource(path, prefix + theirs, squeeze=squeeze) for ours, (theirs, squeeze) in names.items()}
    return CheckpointState(sources, device=device), architecture


_UNET_RESNET = {
    "in_layers.0": "norm1",
    "in_layers.2": "conv1",
    "emb_layers.1": "time_emb_proj",
    "out_layers.0": "norm2",
    "out_layers.3": "conv2",
    "skip_connection": "conv_shortcut",
}
_UNET_FIXED = {
    "time_embed.0": "time_embedding.linear_1",
    "time_embed.2": "time_embedding.linear_2",
    "input_blocks.0.0": "conv_in",
    "out.0": "conv_norm_out",
    "out.2": "conv_out",
    "middle_block.0": "mid_block.resnets.0",
    "middle_block.1": "mid_block.attentions.0",
    "middle_block.2": "mid_block.resnets.1",
}


def _rename_resnet(rest: str) -> str:
    for theirs, ours in _UNET_RESNET.items():
        if rest.startswith(theirs + "."):
            return ours + rest[len(theirs) :]
    return rest


def _ldm_unet_name(key: str, per_level: int) -> str:
    """One LDM U-Net key → ours; unknown keys come back unchanged (and are then reported as unexpected)."""
    for theirs, ours in _UNET_FIXED.items():
        if key.startswith(theirs + "."):
            rest = key[len(theirs) + 1 :]
            return f"{ours}.{_rename_resnet(rest) if 'resnets' in ours else rest}"
    if m := re.match(r"input_blocks\.(\d+)\.(\d)\.(.*)", key):
        i, slot, rest = int(m.group(1)), int(m.group(2)), m.group(3)
        level, j = divmod(i - 1, per_level + 1)
        if j == per_level:
            return f"down_blocks.{level}.downsamplers.0.conv.{rest.removeprefix('op.')}"
        if slot == 0:
            return f"down_blocks.{level}.resnets.{j}.{_rename_resnet(rest)}"
        return f"down_blocks.{level}.attentions.{j}.{rest}"
    if m := re.match(r"output_blocks\.(\d+)\.(\d)\.(.*)", key):
        i, slot, rest = int(m.group(1)), int(m.group(2)), m.group(3)
        level, j = divmod(i, per_level + 1)
        if slot == 0:
            return f"up_blocks.{level}.resnets.{j}.{_rename_resnet(rest)}"
        if rest.startswith("conv."):
            return f"up_blocks.{level}.upsamplers.0.{rest}"
        return f"up_blocks.{level}.attentions.{j}.{rest}"
    return key


def _ldm_unet(shapes: dict[str, tuple[int, ...]]) -> tuple[dict[str, tuple[str, bool]], dict[str, Any]]:
    """LDM U-Net keys → ours, and the architecture the shapes show.

    LDM numbers `input_blocks` 1.. as `layers_per_block` (ResNet [, SpatialTransformer]) slots per level plus
    one downsample slot (`.0.op`), and `output_blocks` 0.. as `layers_per_block + 1` slots per level, where
    `.1`/`.2` is the attention or the upsampler (`.conv`).
    """
    inputs = {int(m.group(1)) for k in shapes if (m := re.match(r"input_blocks\.(\d+)\.", k))}
    downs = {int(m.group(1)) for k in shapes if (m := re.match(r"input_blocks\.(\d+)\.0\.op\.", k))}
    levels = len(downs) + 1
    per_level = (len(inputs) - 1 - len(downs)) // levels  # layers_per_block
    names = {_ldm_unet_name(key, per_level): (key, False) for key in shapes}

    def channels(i: int) -> int:
        return shapes[f"input_blocks.{i}.0.out_layers.3.weight"][0]

    first_slot = [1 + level * (per_level + 1) for level in range(levels)]
    attention = [f"input_blocks.{i}.1.proj_in.weight" in shapes for i in first_slot]
    up_attention = [f"output_blocks.{i * (per_level + 1)}.1.proj_in.weight" in shapes for i in range(levels)]
    proj_in = next((s for k, s in shapes.items() if k.endswith("proj_in.weight")), None)
    architecture: dict[str, Any] = {
        "in_channels": shapes["input_blocks.0.0.weight"][1],
        "out_channels": shapes["out.2.weight"][0],
        "block_out_channels": [channels(i) for i in first_slot],
        "layers_per_block": per_level,
        "down_block_types": ["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attention],
        "up_block_types": ["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in up_attention],
    }
    if proj_in is not None:
        architecture["use_linear_projection"] = len(proj_in) == 2
        architecture["cross_attention_dim"] = next(s[1] for k, s in shapes.items() if k.endswith("attn2.to_k.weight"))
        layer = re.compile(r"middle_block\.1\.transformer_blocks\.(\d+)\.")
        blocks = {m.group(1) for k in shapes if (m := layer.match(k))}
        architecture["transformer_layers_per_block"] = len(blocks) or 1
    return names, architecture


def _ldm_vae(shapes: dict[str, tuple[int, ...]]) -> tuple[dict[str, tuple[str, bool]], dict[str, Any]]:
    """LDM VAE keys → ours (`down.i.block.j` → `down_blocks.i.resnets.j`, decoder `up` levels numbered from
    the bottom, `mid.attn_1.{norm,q,k,v,proj_out}` → `group_norm, to_q, …`, 1×1-conv kernels squeezed)."""
    levels = len({m.group(1) for k in shapes if (m := re.match(r"decoder\.up\.(\d+)\.", k))})

    def up(match: re.Match[str]) -> int:  # LDM numbers decoder levels from the bottom, diffusers from the top
        return levels - 1 - int(match.group(1))

    attention = {"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"}
    names: dict[str, tuple[str, bool]] = {}
    for key in shapes:
        ours, squeeze = key, False
        ours = re.sub(r"^(encoder|decoder)\.norm_out\.", r"\1.conv_norm_out.", ours)
        ours = re.sub(r"\.down\.(\d+)\.block\.", r".down_blocks.\1.resnets.", ours)
        ours = re.sub(r"\.down\.(\d+)\.downsample\.", r".down_blocks.\1.downsamplers.0.", ours)
        ours = re.sub(r"\.up\.(\d+)\.block\.", lambda m: f".up_blocks.{up(m)}.resnets.", ours)
        ours = re.sub(r"\.up\.(\d+)\.upsample\.", lambda m: f".up_blocks.{up(m)}.upsamplers.0.", ours)
        ours = re.sub(r"\.mid\.block_(\d)\.", lambda m: f".mid_block.resnets.{int(m.group(1)) - 1}.", ours)
        ours = ours.replace(".nin_shortcut.", ".conv_shortcut.")
        if m := re.match(r"(encoder|decoder)\.mid\.attn_1\.(norm|q|k|v|proj_out)\.(weight|bias)$", key):
            ours = f"{m.group(1)}.mid_block.attentions.0.{attention[m.group(2)]}.{m.group(3)}"
            squeeze = m.group(2) != "norm" and len(shapes[key]) == 4
        names[ours] = (key, squeeze)
    encoder_levels = sorted({int(m.group(1)) for k in shapes if (m := re.match(r"encoder\.down\.(\d+)\.", k))})
    per_level = len({m.group(1) for k in shapes if (m := re.match(r"encoder\.down\.0\.block\.(\d+)\.", k))})
    architecture = {
        "in_channels": shapes["encoder.conv_in.weight"][1],
        "out_channels": shapes["decoder.conv_out.weight"][0],
        "block_out_channels": [shapes[f"encoder.down.{i}.block.0.conv2.weight"][0] for i in encoder_levels],
        "down_block_types": ["DownEncoderBlock2D"] * len(encoder_levels),
        "up_block_types": ["UpDecoderBlock2D"] * levels,
        "layers_per_block": per_level,
        "latent_channels": shapes["decoder.conv_in.weight"][1],
        "use_quant_conv": "quant_conv.weight" in shapes,
        "use_post_quant_conv": "post_quant_conv.weight" in shapes,
        "mid_block_add_attention": "encoder.mid.attn_1.q.weight" in shapes,
    }
    return names, architecture


def _ldm_text(shapes: dict[str, tuple[int, ...]]) -> tuple[dict[str, tuple[str, bool]], dict[str, Any]]:
    """`cond_stage_model.transformer.[text_model.]X` → transformers' `text_model.X`; position_ids dropped."""
    names = _clip_text_names({k: (k, False) for k in shapes})
    ours = {o: shapes[t] for o, (t, _) in names.items()}
    vocab_size, hidden_size = ours["text_model.embeddings.token_embedding.weight"]
    layers = {m.group(1) for k in ours if (m := re.match(r"text_model\.encoder\.layers\.(\d+)\.", k))}
    architecture = {
        "vocab_size": vocab_size,
        "hidden_size": hidden_size,
        "num_hidden_layers": len(layers),
        "intermediate_size": ours["text_model.encoder.layers.0.mlp.fc1.weight"][0],
        "max_position_embeddings": ours["text_model.embeddings.position_embedding.weight"][0],
    }
    return names, architecture
