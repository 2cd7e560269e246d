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

Checkpoints are untrusted input: whatever is wrong with one — a damaged or truncated file, a fifo, malformed
JSON, missing or misshapen tensors, an integer tensor for a float parameter, NaN or inf (found as each tensor
is loaded), a shard or tokenizer path leading out of the checkpoint's folder — is one WeightsError naming the
file and the problem.
"""

from __future__ import annotations

import json
import logging
import re
import stat
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
from core.validation import MAX_SHOWN, shown

log = logging.getLogger(__name__)

Format = Literal["native", "diffusers", "sd1-single-file"]
FORMATS: tuple[str, ...] = get_args(Format)

PICKLE_SUFFIXES = (".ckpt", ".bin", ".pt", ".pth", ".pkl")
SHOWN_KEYS = 5
REMAP_BYTES = 64 * 2**20  # reopen a file's memory map after this much was read, so read pages leave RSS
MAX_JSON_BYTES = 16 * 2**20  # a diffusers config.json, scheduler_config.json or shard index larger is refused
PATH_KEYS = ("tokenizer",)  # config keys naming a file; one read from a checkpoint must stay inside its folder

# The safetensors dtypes a floating parameter or buffer is loaded from, and those an integer or bool one is; any
# other (complex, 4- and 6-bit floats, scale formats, wide unsigned integers) or a float for an integer and back
# is a dtype mismatch, never a silent cast.
FLOAT_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
}
INTEGER_DTYPES = {
    "BOOL": torch.bool,
    "U8": torch.uint8,
    "I8": torch.int8,
    "I16": torch.int16,
    "I32": torch.int32,
    "I64": torch.int64,
}
_DTYPE_NAMES = {dtype: name for name, dtype in {**FLOAT_DTYPES, **INTEGER_DTYPES}.items()}

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


def shown_text(text: str) -> str:
    """`text` within `MAX_SHOWN` characters (a message quoting a file's content stays short)."""
    return text if len(text) <= MAX_SHOWN else text[: MAX_SHOWN - 1] + "…"


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


def _is_pickle(head: bytes) -> bool:
    """Whether the first 9 bytes of a file that safetensors refused show a pickle: torch.save's zip archive, or
    pickle's PROTO opcode (0x80) with protocol 2–5 where a safetensors file would begin its JSON header (byte
    8) with `{` — so a damaged safetensors file whose length field happens to start with 0x80 is not one."""
    if head.startswith(b"PK\x03\x04"):
        return True
    return len(head) == 9 and head[0] == 0x80 and 2 <= head[1] <= 5 and head[8:] != b"{"


def _check_file(path: Path, what: str = "a .safetensors file") -> None:
    """A WeightsError unless `path` is a regular file: missing, a folder, a fifo or device (which would block
    or stream forever when read), or not even stat-able. `what`: the file expected, for the message."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise WeightsError(
            f"weights file not found: {path}", hint="check the `weights:` path in the registry"
        ) from None
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the name
        raise WeightsError(f"{path}: cannot be read ({exc})", hint="check the path and its permissions") from None
    if stat.S_ISDIR(mode):
        raise WeightsError(
            f"{path}: a folder where {what} is expected",
            hint="for a diffusers folder use format: auto or diffusers; else name the .safetensors file in it",
        )
    if not stat.S_ISREG(mode):
        raise WeightsError(
            f"{path}: not a regular file (a fifo, socket or device) where {what} is expected",
            hint="point `weights:` at the checkpoint's own files",
        )


def _open(path: Path, device: torch.device | str = "cpu") -> Any:
    """A safetensors handle for `path`, or a WeightsError saying what is wrong with the file."""
    refuse_pickle(path)
    _check_file(path)
    try:
        with path.open("rb") as f:  # safetensors reports an unreadable file as a missing one
            head = f.read(9)
    except OSError as exc:
        raise WeightsError(f"{path}: cannot be read ({exc.strerror or exc})", hint="check its permissions") from None
    try:
        return safe_open(str(path), framework="pt", device=str(device))
    except Exception as exc:  # SafetensorError (or OSError): the header does not parse or does not fit the file
        raise _not_safetensors(path, head, exc) from None


def _not_safetensors(path: Path, head: bytes, error: Exception) -> WeightsError:
    """The error for a file safetensors refused (`head`: its first 9 bytes): a pickle (by its structure), a
    truncated file, or another damaged one, with safetensors' reason."""
    if _is_pickle(head):
        return _pickle_error(path)
    reason = str(error).removeprefix("Error while deserializing header: ")
    if reason == _SIZE_MISMATCH:
        declared, size = _declared_size(path), path.stat().st_size
        if size < declared:
            return WeightsError(
                f"{path}: not a complete safetensors file: its header describes {declared} bytes, the file has {size}",
                hint="the file is truncated (an interrupted download?); re-download it",
            )
        reason = f"{size - declared} bytes follow the tensor data its header describes"
    elif reason in ("header too large", "invalid header length") and len(head) >= 8:
        length = int.from_bytes(head[:8], "little")
        reason += f" (its first 8 bytes give a {length}-byte JSON header; the file has {path.stat().st_size} bytes)"
    return WeightsError(
        f"{path}: not a valid safetensors file: {shown_text(reason)}",
        hint="the file is damaged or in another format; re-download it or re-export it with "
        "safetensors.torch.save_file",
    )


_SIZE_MISMATCH = "incomplete metadata, file not fully covered"  # safetensors' reason once the header is valid


def _declared_size(path: Path) -> int:
    """The size the header of `path` gives the file: 8 + header + data. For a header safetensors has parsed and
    checked (offsets contiguous and fitting each tensor), so it only disagrees with the file's size."""
    with path.open("rb") as f:
        length = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(length))
    ends = (entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__")
    return 8 + length + max(ends, default=0)


def _tensor(handle: Any, file: Path, key: str) -> torch.Tensor:
    """Tensor `key` of an open safetensors file, or a WeightsError naming the file and the tensor."""
    try:
        return handle.get_tensor(key)
    except Exception as exc:  # SafetensorError: a missing key, or a dtype torch cannot represent
        raise WeightsError(
            f"{file}: tensor {shown(key)} cannot be read ({shown_text(str(exc))})",
            hint="re-export the checkpoint with safetensors.torch.save_file from float, integer or bool tensors",
        ) from None


def load_state_dict(path: str | Path, *, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """Read every tensor of a `.safetensors` file. Tensors are memory-mapped on CPU."""
    path = Path(path)
    with _open(path, device) as f:
        return {key: _tensor(f, path, key) for key in f.keys()}


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

    `shape(key)` and `dtype(key)` come from the file header, so a whole checkpoint can be checked before any
    data is read. Each access returns a memory-mapped CPU tensor (or one on `device`); the file's map is
    reopened every `REMAP_BYTES` so pages already read can leave resident memory.
    """

    def __init__(self, sources: dict[str, TensorSource], *, device: torch.device | str = "cpu") -> None:
        self.sources = sources
        self.device = device
        self._handles: dict[Path, Any] = {}
        self._read_bytes = 0
        self._shapes: dict[str, tuple[int, ...]] = {}
        self._dtypes: dict[str, str] = {}
        for key, source in sources.items():
            handle = self._handle(source.file)
            try:
                header = handle.get_slice(source.key)
            except Exception:  # SafetensorError: a shard index names a tensor its shard lacks
                raise WeightsError(
                    f"{source.file}: has no tensor {shown(source.key)}",
                    hint="the shard index and its shards disagree; re-download the checkpoint",
                ) from None
            shape = tuple(header.get_shape())
            self._shapes[key] = shape[:2] if source.squeeze else shape
            self._dtypes[key] = header.get_dtype()

    def _handle(self, file: Path) -> Any:
        if file not in self._handles:
            self._handles[file] = _open(file, self.device)
        return self._handles[file]

    def shape(self, key: str) -> tuple[int, ...]:
        return self._shapes[key]

    def dtype(self, key: str) -> str:
        """The tensor's safetensors dtype name (`F32`, `BF16`, `I64`, `BOOL`, …)."""
        return self._dtypes[key]

    def __getitem__(self, key: str) -> torch.Tensor:
        source = self.sources[key]
        tensor = _tensor(self._handle(source.file), source.file, source.key)
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


def _dtype_name(state: Mapping[str, torch.Tensor], key: str) -> str:
    """The tensor's dtype as safetensors names it (`F32`, `I64`, …; torch's name for one it lacks)."""
    if isinstance(state, CheckpointState):
        return state.dtype(key)
    dtype = state[key].dtype
    return _DTYPE_NAMES.get(dtype, str(dtype).removeprefix("torch."))


def _dtype_fits(name: str, target: torch.Tensor) -> bool:
    """Whether a tensor of safetensors dtype `name` may be copied into `target`: a float into a float, an integer
    or bool into an integer or bool — never silently cast across."""
    return name in (FLOAT_DTYPES if target.is_floating_point() else INTEGER_DTYPES)


def _listing(names: list[str]) -> str:
    text = ", ".join(shown_text(name) for name in names[:SHOWN_KEYS])
    return text + (f", … ({len(names)} in all)" if len(names) > SHOWN_KEYS else f" ({len(names)})")


def _finite(tensor: torch.Tensor) -> bool:
    """No NaN or inf in a floating `tensor`. NaN and inf carry through a sum, so a finite sum (one fast pass, no
    allocation) proves it; only when the sum is not finite — or overflowed — is every element looked at."""
    return bool(tensor.sum().isfinite()) or bool(tensor.isfinite().all())


def _non_finite_error(
    state: Mapping[str, torch.Tensor], key: str, dtype: torch.dtype, component: str, source: str
) -> WeightsError:
    """The error for tensor `key`, which holds NaN or inf once loaded as `dtype`: damaged in the file, or values
    too large for `dtype`. Names the file and the tensor as the file names them."""
    file, name = (
        (state.sources[key].file, state.sources[key].key) if isinstance(state, CheckpointState) else (source, key)
    )
    if _finite(state[key].float()):
        return WeightsError(
            f"{component}: {file}: tensor {shown(name)} has values too large for {str(dtype).removeprefix('torch.')}",
            hint="load this model in float32 (--dtype float32)",
        )
    return WeightsError(
        f"{component}: {file}: tensor {shown(name)} holds NaN or infinite values",
        hint="the checkpoint is damaged or came from a diverged training run; re-download or re-export it",
    )


def load_into(
    module: torch.nn.Module,
    state: Mapping[str, torch.Tensor],
    *,
    component: str,
    source: str,
    device: torch.device | str | None = None,
) -> None:
    """Copy `state` into `module` strictly, converting each tensor to its parameter's device and dtype.

    Every key, shape and dtype is checked before anything is written (`check_fit`), leaving the module
    untouched on a mismatch. Tensors are then read one at a time, each checked for NaN and inf as it is
    written — a WeightsError names the first bad tensor (the module may then be partly written;
    `build_with_weights` discards it). A parameter or buffer on the meta
    device (see `build_with_weights`) is replaced by a new tensor on `device` (default CPU) with the meta
    tensor's dtype and strides.
    """
    check_fit(module, state, component=component, source=source)
    with torch.no_grad():
        for key, target in module.state_dict(keep_vars=True).items():
            if not target.is_meta:
                _fill(target, state, key, component, source)
                continue
            filled = torch.empty_strided(target.shape, target.stride(), dtype=target.dtype, device=device or "cpu")
            _fill(filled, state, key, component, source)
            owner_name, _, name = key.rpartition(".")
            owner = module.get_submodule(owner_name)
            if isinstance(target, torch.nn.Parameter):
                filled = torch.nn.Parameter(filled, requires_grad=target.requires_grad)
            setattr(owner, name, filled)


def check_fit(module: torch.nn.Module, state: Mapping[str, torch.Tensor], *, component: str, source: str) -> None:
    """A WeightsError unless `state` has exactly `module`'s keys, shapes and dtype kinds: it lists missing keys,
    unexpected keys, shape mismatches and dtype mismatches (an integer or bool tensor for a floating parameter,
    or the reverse; first few of each, with counts). Reads no tensor data from a `CheckpointState` (its
    headers say the shapes and dtypes), so `module` may live on the meta device."""
    own = module.state_dict(keep_vars=True)
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shared = sorted(set(own) & set(state))
    mismatched = [
        f"{k}: checkpoint {_shape(state, k)} vs model {tuple(own[k].shape)}"
        for k in shared
        if _shape(state, k) != tuple(own[k].shape)
    ]
    wrong_dtype = [
        f"{k}: checkpoint {_dtype_name(state, k)} vs model {str(own[k].dtype).removeprefix('torch.')}"
        for k in shared
        if not _dtype_fits(_dtype_name(state, k), own[k])
    ]
    problems = []
    if missing:
        problems.append(f"missing keys: {_listing(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_listing(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatches: {_listing(mismatched)}")
    if wrong_dtype:
        problems.append(f"dtype mismatches: {_listing(wrong_dtype)}")
    if problems:
        raise WeightsError(
            f"{component}: checkpoint {source} does not fit the model — " + "; ".join(problems),
            hint="check that the component's config (architecture) matches the checkpoint",
        )


def _fill(target: torch.Tensor, state: Mapping[str, torch.Tensor], key: str, component: str, source: str) -> None:
    """Copy tensor `key` of `state` into `target`, refusing NaN and inf in what was written."""
    target.copy_(state[key])
    if target.is_floating_point() and not _finite(target):
        raise _non_finite_error(state, key, target.dtype, component, source)


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
        if (path / "model_index.json").is_file() or (path / "config.json").exists():
            return "diffusers"
        if any((path / sub / "config.json").exists() for sub in DIFFUSERS_SUBFOLDER.values()):
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
    except (ValueError, RecursionError) as exc:
        raise WeightsError(f"{path}: the `config` metadata is not valid JSON ({shown_text(str(exc))})") from None
    if not isinstance(config, dict):
        raise WeightsError(f"{path}: the `config` metadata is not a JSON object")
    _confine_paths(config, path.parent, f"{path}: the `config` metadata")
    return config


def _inside(folder: Path, name: object, *, where: str, what: str) -> Path:
    """`folder / name` for a path read from a checkpoint (a shard index, a config, metadata): a WeightsError
    unless it is a relative path that stays in `folder`. Checked by name, not by resolving links, so a Hugging
    Face cache (whose files link to blobs elsewhere) still loads."""
    if not isinstance(name, str) or not name or "\0" in name:
        raise WeightsError(f"{where}: {what} must be a relative path, found {shown(name)}")
    relative = Path(name)
    if relative.is_absolute() or ".." in relative.parts:
        raise WeightsError(
            f"{where}: {what} {shown(name)} points outside {folder}",
            hint="a checkpoint may only name files inside its own folder; fix or remove that entry",
        )
    return folder / relative


def _confine_paths(config: dict[str, Any], folder: Path, where: str) -> None:
    """Resolve the config keys that name files (`PATH_KEYS`) against `folder`, refusing any that leave it."""
    for key in PATH_KEYS:
        if config.get(key) is not None:
            config[key] = str(_inside(folder, config[key], where=where, what=f"`{key}`"))


def _read_json(path: Path) -> dict[str, Any]:
    """The JSON object in `path` (UTF-8, at most `MAX_JSON_BYTES`), or a WeightsError naming the file and what
    is wrong with it."""
    _check_file(path, "a JSON file")
    try:
        if path.stat().st_size > MAX_JSON_BYTES:
            raise WeightsError(f"{path}: over {MAX_JSON_BYTES} bytes — not a config or index file")
        data = json.loads(path.read_bytes().decode("utf-8"))
    except OSError as exc:
        raise WeightsError(f"{path}: cannot be read ({exc.strerror or exc})", hint="check its permissions") from None
    except UnicodeDecodeError as exc:
        raise WeightsError(f"{path}: not UTF-8 text (byte {exc.start})", hint="re-download the file") from None
    except (ValueError, RecursionError) as exc:  # RecursionError: nested too deeply for the parser
        reason = "nested too deeply" if isinstance(exc, RecursionError) else shown_text(str(exc))
        raise WeightsError(f"{path}: not valid JSON ({reason})", hint="re-download the file") from None
    if not isinstance(data, dict):
        raise WeightsError(
            f"{path}: holds a JSON {type(data).__name__}, not an object ({{...}})", hint="re-download the file"
        )
    return data


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
        if (path / "model_index.json").is_file() or not (path / "config.json").exists():
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
    if not config_path.exists():
        raise WeightsError(
            f"{folder}: no config.json — a diffusers component folder needs it for the architecture",
            hint="copy config.json from the model's original repository into this folder",
        )
    raw = _read_json(config_path)
    found = raw.get("_class_name")
    architectures = raw.get("architectures")
    if found is None and isinstance(architectures, list) and architectures:
        found = architectures[0]
    expected = DIFFUSERS_CLASS[kind]
    if found is not None and found != expected:
        raise WeightsError(
            f"{config_path}: describes a {shown_text(str(found))}, but a {kind} here needs a {expected}",
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
                f"{config_path}: {key}={shown(value)} is a feature the {kind} plugin does not implement",
                hint=f"only {key}={neutral!r} is supported; this checkpoint is for a different architecture",
            )
        else:
            config[key] = value
    log.debug("%s: left out diffusers-only keys %s", config_path, ", ".join(dropped))
    _confine_paths(config, folder, str(config_path))
    scheduler_config = folder.parent / "scheduler" / "scheduler_config.json"
    if kind == "denoiser" and scheduler_config.exists():
        prediction_type = _read_json(scheduler_config).get("prediction_type")
        if prediction_type:
            config.setdefault("prediction_type", prediction_type)
    if kind == "text" and (folder.parent / "tokenizer").is_dir():
        config.setdefault("tokenizer", str(folder.parent / "tokenizer"))
    return config


def _diffusers_sources(folder: Path, kind: str) -> dict[str, TensorSource]:
    stem = DIFFUSERS_WEIGHTS_STEM[kind]
    candidates = [folder / f"{stem}.safetensors", *sorted(folder.glob(f"{stem}.*.safetensors"))]
    for file in candidates:
        if file.exists():
            with _open(file) as f:
                return {k: TensorSource(file, k) for k in f.keys()}
    index = folder / f"{stem}.safetensors.index.json"
    if index.exists():
        weight_map = _read_json(index).get("weight_map")
        if not isinstance(weight_map, dict):
            raise WeightsError(
                f"{index}: `weight_map` must map each tensor to its shard file, found {shown(weight_map)}",
                hint="re-download the index with its shards",
            )
        where = f"{index}: weight_map"
        return {
            key: TensorSource(_inside(folder, shard, where=where, what=f"the shard of {shown(key)}"), key)
            for key, shard in weight_map.items()
        }
    for pickle in (folder / f"{stem}.bin", folder / "pytorch_model.bin"):
        if pickle.exists():
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
    try:
        names, architecture = convert(shapes)
    except _Unreadable as exc:
        raise WeightsError(
            f"{path}: cannot read the {kind}'s architecture from this single-file checkpoint — {exc.listing(prefix)}",
            hint="the file is incomplete or not an SD 1.x checkpoint; use a complete SD 1.x checkpoint",
        ) from None
    sources = {ours: TensorSource(path, prefix + theirs, squeeze=squeeze) for ours, (theirs, squeeze) in names.items()}
    return CheckpointState(sources, device=device), architecture


class _Unreadable(Exception):
    """From the single-file readers: tensors an architecture is read from are missing or misshapen."""

    def __init__(self, missing: list[str], misshapen: list[str]) -> None:
        super().__init__(missing, misshapen)
        self.missing, self.misshapen = list(dict.fromkeys(missing)), list(dict.fromkeys(misshapen))

    def listing(self, prefix: str) -> str:
        """The problems, each key named as in the file (with `prefix`)."""
        problems = []
        if self.missing:
            problems.append(f"missing keys: {_listing([prefix + key for key in self.missing])}")
        if self.misshapen:
            problems.append(f"misshapen keys: {_listing([prefix + key for key in self.misshapen])}")
        return "; ".join(problems)


class _ShapeReader:
    """The tensor shapes an architecture is read from. `dim(key, axis, ndim)` is the size along `axis` of
    tensor `key`, which must have `ndim` dimensions; a missing or misshapen tensor reads as 0 and is recorded,
    so that `check` raises `_Unreadable` naming every problem at once."""

    def __init__(self, shapes: dict[str, tuple[int, ...]]) -> None:
        self.shapes = shapes
        self.missing: list[str] = []
        self.misshapen: list[str] = []

    def dim(self, key: str, axis: int, ndim: int) -> int:
        shape = self.shapes.get(key)
        if shape is None:
            self.missing.append(key)
        elif len(shape) != ndim:
            self.misshapen.append(f"{key}: {shape} where {ndim} dimensions are expected")
        else:
            return shape[axis]
        return 0

    def check(self) -> None:
        if self.missing or self.misshapen:
            raise _Unreadable(self.missing, self.misshapen)


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
    if m := re.match(r"input_blocks\.(\d{1,9})\.(\d)\.(.*)", key):
        i, slot, rest = int(m.group(1)), int(m.group(2)), m.group(3)
        level, j = divmod(i - 1, per_level + 1)
        if j == per_level:
            return f"down_blocks.{level}.downsamplers.0.conv.{rest.removeprefix('op.')}"
        if slot == 0:
            return f"down_blocks.{level}.resnets.{j}.{_rename_resnet(rest)}"
        return f"down_blocks.{level}.attentions.{j}.{rest}"
    if m := re.match(r"output_blocks\.(\d{1,9})\.(\d)\.(.*)", key):
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
    `.1`/`.2` is the attention or the upsampler (`.conv`). Raises `_Unreadable`.
    """
    reader = _ShapeReader(shapes)
    inputs = {int(m.group(1)) for k in shapes if (m := re.match(r"input_blocks\.(\d{1,9})\.", k))}
    downs = {int(m.group(1)) for k in shapes if (m := re.match(r"input_blocks\.(\d{1,9})\.0\.op\.", k))}
    levels = len(downs) + 1
    per_level = (len(inputs) - 1 - len(downs)) // levels  # layers_per_block
    if per_level < 1:  # no ResNet slot in a level: the names below cannot be read
        raise _Unreadable(["input_blocks.1.0.out_layers.3.weight"], [])
    names = {_ldm_unet_name(key, per_level): (key, False) for key in shapes}

    def channels(i: int) -> int:
        return reader.dim(f"input_blocks.{i}.0.out_layers.3.weight", 0, 4)

    first_slot = [1 + level * (per_level + 1) for level in range(levels)]
    attention = [f"input_blocks.{i}.1.proj_in.weight" in shapes for i in first_slot]
    up_attention = [f"output_blocks.{i * (per_level + 1)}.1.proj_in.weight" in shapes for i in range(levels)]
    proj_in = next((s for k, s in shapes.items() if k.endswith("proj_in.weight")), None)
    architecture: dict[str, Any] = {
        "in_channels": reader.dim("input_blocks.0.0.weight", 1, 4),
        "out_channels": reader.dim("out.2.weight", 0, 4),
        "block_out_channels": [channels(i) for i in first_slot],
        "layers_per_block": per_level,
        "down_block_types": ["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attention],
        "up_block_types": ["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in up_attention],
    }
    if proj_in is not None:
        architecture["use_linear_projection"] = len(proj_in) == 2
        to_k = next(
            (k for k in shapes if k.endswith("attn2.to_k.weight")),
            "middle_block.1.transformer_blocks.0.attn2.to_k.weight",
        )
        architecture["cross_attention_dim"] = reader.dim(to_k, 1, 2)
        layer = re.compile(r"middle_block\.1\.transformer_blocks\.(\d{1,9})\.")
        blocks = {m.group(1) for k in shapes if (m := layer.match(k))}
        architecture["transformer_layers_per_block"] = len(blocks) or 1
    reader.check()
    return names, architecture


def _ldm_vae(shapes: dict[str, tuple[int, ...]]) -> tuple[dict[str, tuple[str, bool]], dict[str, Any]]:
    """LDM VAE keys → ours (`down.i.block.j` → `down_blocks.i.resnets.j`, decoder `up` levels numbered from
    the bottom, `mid.attn_1.{norm,q,k,v,proj_out}` → `group_norm, to_q, …`, 1×1-conv kernels squeezed).
    Raises `_Unreadable`."""
    reader = _ShapeReader(shapes)
    levels = len({m.group(1) for k in shapes if (m := re.match(r"decoder\.up\.(\d{1,9})\.", k))})

    def up(match: re.Match[str]) -> int:  # LDM numbers decoder levels from the bottom, diffusers from the top
        return levels - 1 - int(match.group(1))

    attention = {"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"}
    names: dict[str, tuple[str, bool]] = {}
    for key in shapes:
        ours, squeeze = key, False
        ours = re.sub(r"^(encoder|decoder)\.norm_out\.", r"\1.conv_norm_out.", ours)
        ours = re.sub(r"\.down\.(\d{1,9})\.block\.", r".down_blocks.\1.resnets.", ours)
        ours = re.sub(r"\.down\.(\d{1,9})\.downsample\.", r".down_blocks.\1.downsamplers.0.", ours)
        ours = re.sub(r"\.up\.(\d{1,9})\.block\.", lambda m: f".up_blocks.{up(m)}.resnets.", ours)
        ours = re.sub(r"\.up\.(\d{1,9})\.upsample\.", lambda m: f".up_blocks.{up(m)}.upsamplers.0.", ours)
        ours = re.sub(r"\.mid\.block_(\d)\.", lambda m: f".mid_block.resnets.{int(m.group(1)) - 1}.", ours)
        ours = ours.replace(".nin_shortcut.", ".conv_shortcut.")
        if m := re.match(r"(encoder|decoder)\.mid\.attn_1\.(norm|q|k|v|proj_out)\.(weight|bias)$", key):
            ours = f"{m.group(1)}.mid_block.attentions.0.{attention[m.group(2)]}.{m.group(3)}"
            squeeze = m.group(2) != "norm" and len(shapes[key]) == 4 and shapes[key][2:] == (1, 1)
        names[ours] = (key, squeeze)
    encoder_levels = sorted({int(m.group(1)) for k in shapes if (m := re.match(r"encoder\.down\.(\d{1,9})\.", k))})
    per_level = len({m.group(1) for k in shapes if (m := re.match(r"encoder\.down\.0\.block\.(\d{1,9})\.", k))})
    architecture = {
        "in_channels": reader.dim("encoder.conv_in.weight", 1, 4),
        "out_channels": reader.dim("decoder.conv_out.weight", 0, 4),
        "block_out_channels": [
            reader.dim(f"encoder.down.{i}.block.0.conv2.weight", 0, 4) for i in encoder_levels or [0]
        ],
        "down_block_types": ["DownEncoderBlock2D"] * len(encoder_levels),
        "up_block_types": ["UpDecoderBlock2D"] * levels,
        "layers_per_block": per_level,
        "latent_channels": reader.dim("decoder.conv_in.weight", 1, 4),
        "use_quant_conv": "quant_conv.weight" in shapes,
        "use_post_quant_conv": "post_quant_conv.weight" in shapes,
        "mid_block_add_attention": "encoder.mid.attn_1.q.weight" in shapes,
    }
    reader.check()
    return names, architecture


def _ldm_text(shapes: dict[str, tuple[int, ...]]) -> tuple[dict[str, tuple[str, bool]], dict[str, Any]]:
    """`cond_stage_model.transformer.[text_model.]X` → transformers' `text_model.X`; position_ids dropped.
    Raises `_Unreadable` (naming keys as `text_model.X`, the usual layout in the file)."""
    names = _clip_text_names({k: (k, False) for k in shapes})
    reader = _ShapeReader({o: shapes[t] for o, (t, _) in names.items()})
    layers = {m.group(1) for k in reader.shapes if (m := re.match(r"text_model\.encoder\.layers\.(\d{1,9})\.", k))}
    architecture = {
        "vocab_size": reader.dim("text_model.embeddings.token_embedding.weight", 0, 2),
        "hidden_size": reader.dim("text_model.embeddings.token_embedding.weight", 1, 2),
        "num_hidden_layers": len(layers),
        "intermediate_size": reader.dim("text_model.encoder.layers.0.mlp.fc1.weight", 0, 2),
        "max_position_embeddings": reader.dim("text_model.embeddings.position_embedding.weight", 0, 2),
    }
    reader.check()
    return names, architecture
