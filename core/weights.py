"""Checkpoint loading: safetensors only, memory-mapped, strict, in three formats.

Formats (`detect_format` picks one for `format: auto`):
- `native`: one `.safetensors` file whose keys are the component's own parameter names; it may state the
  architecture in its `config` metadata. Any model plugin's part loads from one.
- `diffusers`: a folder with `model_index.json` and one subfolder per part (+ `tokenizer/`, `scheduler/`) — or
  one such subfolder. Each holds `config.json` (the architecture) and `<stem>.safetensors` (also
  `<stem>.<variant>.safetensors` and a sharded `<stem>.safetensors.index.json`).
- `single-file`: an original checkpoint holding several parts in one file, each part's keys under its own
  prefix; the architecture is read from the tensor shapes.

What is model-specific in the last two — the subfolder and file stem, the class names and config keys, the key
prefix, how tensors are renamed and which shapes tell the architecture — is the plugin's: its `ComponentSpec`
carries a `core.CheckpointLayout`, and a plugin without one loads native files only. This module does the
generic part for every layout.

`read_component_weights(path, spec)` returns a lazy `CheckpointState` plus the architecture found (or None):
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
import os
import stat
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch.overrides import TorchFunctionMode

from core.checkpoint_layout import ANY_VALUE, CheckpointLayout, FileTensor, Unreadable
from core.component_spec import ComponentSpec
from core.devices import placement_dtype
from core.errors import WeightsError
from core.images import current_umask
from core.interfaces import MODEL_KINDS
from core.validation import MAX_SHOWN, shown

log = logging.getLogger(__name__)

Format = Literal["native", "diffusers", "single-file"]
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


def _tensor(handle: Any, file: Path, key: str, rows: tuple[int, int] | None = None) -> torch.Tensor:
    """Tensor `key` of an open safetensors file (only `rows` (start, stop) of dim 0 when given: a partial read),
    or a WeightsError naming the file and the tensor."""
    try:
        return handle.get_tensor(key) if rows is None else handle.get_slice(key)[rows[0] : rows[1]]
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
    """Write a state dict as safetensors (contiguous CPU copies, shared storage broken), with the permissions
    `open(path, "w")` would give (safetensors itself writes 0600)."""
    save_file({k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}, str(path))
    os.chmod(path, 0o666 & ~current_umask())


@dataclass(frozen=True)
class TensorSource:
    """Where one tensor of a `CheckpointState` lives, and how it is read (`core.FileTensor`: `squeeze` an
    (O, I, 1, 1) conv kernel as (O, I), only `rows` (start, stop) of dim 0, or `transpose` a 2-D tensor)."""

    file: Path
    key: str
    squeeze: bool = False
    rows: tuple[int, int] | None = None
    transpose: bool = False

    def shape(self, stored: tuple[int, ...]) -> tuple[int, ...] | None:
        """The shape this source reads from a stored tensor of shape `stored`; None when it cannot be read so
        (rows outside dim 0, transposing or squeezing a tensor of the wrong rank)."""
        shape = stored
        if self.squeeze:
            if len(shape) != 4 or shape[2:] != (1, 1):
                return None
            shape = shape[:2]
        if self.rows is not None:
            start, stop = self.rows
            if not shape or not 0 <= start < stop <= shape[0]:
                return None
            shape = (stop - start, *shape[1:])
        if self.transpose:
            if len(shape) != 2:
                return None
            shape = shape[::-1]
        return shape


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
            stored = tuple(header.get_shape())
            shape = source.shape(stored)
            if shape is None:
                raise WeightsError(
                    f"{source.file}: tensor {shown(source.key)} of shape {stored} cannot be read as our {shown(key)}",
                    hint="the checkpoint is damaged or of a different architecture",
                )
            self._shapes[key] = shape
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
        tensor = _tensor(self._handle(source.file), source.file, source.key, source.rows)
        self._read_bytes += tensor.nbytes
        if self._read_bytes > REMAP_BYTES:  # returned tensors keep their own reference to the map
            self._handles.clear()
            self._read_bytes = 0
        if source.squeeze:
            tensor = tensor.flatten(1)
        return tensor.t() if source.transpose else tensor

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


def detect_format(path: str | Path, layout: CheckpointLayout | None = None) -> Format:
    """`diffusers` for a folder with model_index.json or a component config.json (or, given a `layout`, with
    the part's subfolder holding one); for a file, `single-file` when its keys carry one of the layout's
    single-file prefixes (`CheckpointLayout.single_file_markers`), else `native`."""
    path = Path(path)
    if path.is_dir():
        if (path / "model_index.json").is_file() or (path / "config.json").exists():
            return "diffusers"
        if layout is not None and any((path / s / "config.json").exists() for s in layout.diffusers_subfolders):
            return "diffusers"
        raise WeightsError(
            f"{path}: a folder, but neither a diffusers pipeline (model_index.json) nor a component folder "
            "(config.json)",
            hint="point `weights:` at a diffusers folder, or at a .safetensors file",
        )
    with _open(path) as f:
        keys = list(f.keys())
    markers = layout.single_file_markers if layout is not None else ()
    if markers and any(key.startswith(markers) for key in keys):
        return "single-file"
    return "native"


def read_component_weights(
    path: str | Path, spec: ComponentSpec, format: str = "auto", *, device: torch.device | str = "cpu"
) -> tuple[CheckpointState, dict[str, Any] | None]:
    """The weights of one model part, built by the plugin `spec` declares, in the part's own key names, and
    the architecture the checkpoint states (a dict of Config keys), or None when it states none (a native
    file states it in its `config` metadata, as `core.training` writes it).

    `format`: `auto` (see `detect_format`) or one of FORMATS. A native file needs nothing from the plugin; a
    diffusers folder or a single file is read through the plugin's `spec.checkpoint_layout`, and is a
    WeightsError for a plugin that declares none (or none for that format). Nothing is read beyond headers and
    configs until the returned state is accessed.
    """
    path = Path(path)
    if spec.kind not in MODEL_KINDS:
        raise WeightsError(
            f"{path}: {spec.kind} components have no weights", hint=f"weights fit {', '.join(MODEL_KINDS)}"
        )
    if format != "auto" and format not in FORMATS:
        raise WeightsError(f"{path}: unknown weights format {format!r}", hint=f"use auto, {', '.join(FORMATS)}")
    layout = spec.checkpoint_layout
    fmt = detect_format(path, layout) if format == "auto" else format
    if fmt == "native":
        with _open(path) as f:
            keys, metadata = list(f.keys()), f.metadata() or {}
        return CheckpointState({k: TensorSource(path, k) for k in keys}, device=device), _stated_config(path, metadata)
    if fmt == "diffusers" and not path.is_dir():
        raise WeightsError(f"{path}: format diffusers needs a folder, got a file", hint="use format: auto")
    sources, architecture = _read_layout(path, spec, _layout_for(path, spec, fmt), fmt)
    return CheckpointState(sources, device=device), architecture


def _read_layout(
    path: Path, spec: ComponentSpec, layout: CheckpointLayout, fmt: str
) -> tuple[dict[str, TensorSource], dict[str, Any]]:
    """Where each tensor of the part lives and the architecture stated, through `layout` — part by part for a
    layout with `parts` (tensor names and architecture nested under each part's attribute)."""
    if not layout.parts:
        return _read_diffusers(path, spec, layout) if fmt == "diffusers" else _read_single_file(path, spec, layout)
    sources: dict[str, TensorSource] = {}
    architecture: dict[str, Any] = {}
    for name, part in layout.parts.items():
        part_sources, architecture[name] = _read_layout(path, spec, part, fmt)
        sources |= {f"{name}.{key}": source for key, source in part_sources.items()}
    return sources, architecture


def _layout_for(path: Path, spec: ComponentSpec, fmt: str) -> CheckpointLayout:
    """`spec`'s checkpoint layout, or a WeightsError when it has none for format `fmt`."""
    layout = spec.checkpoint_layout
    if layout is not None and (layout.reads_diffusers if fmt == "diffusers" else layout.reads_single_file):
        return layout
    raise WeightsError(
        f"{path}: the {spec.kind} plugin {spec.name!r} declares no checkpoint layout for the {fmt} format",
        hint="it loads native diffstack .safetensors files (its own parameter names); convert the checkpoint "
        "to one, or use a plugin whose ComponentSpec has a checkpoint_layout for this format",
    )


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


def read_json(path: Path) -> dict[str, Any]:
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


# ─── diffusers folders ───────────────────────────────────────────────────────────────────────────────────


def _read_diffusers(
    path: Path, spec: ComponentSpec, layout: CheckpointLayout
) -> tuple[dict[str, TensorSource], dict[str, Any]]:
    subfolder = str(layout.diffusers_subfolder)
    folder = path / subfolder
    if not folder.is_dir():
        if (path / "model_index.json").is_file() or not (path / "config.json").exists():
            raise WeightsError(
                f"{path}: diffusers folder has no {subfolder}/ subfolder for the {spec.kind}",
                hint=f"found: {', '.join(sorted(p.name for p in path.iterdir())) or 'nothing'}",
            )
        folder = path  # a component folder given directly
    architecture = _diffusers_config(folder, spec, layout)
    sources = _diffusers_sources(folder, layout.diffusers_weights_stem)
    if layout.diffusers_tensor_names is not None:
        names = layout.diffusers_tensor_names(list(sources))
        sources = {ours: sources[theirs] for ours, theirs in names.items()}
    return sources, architecture


def read_diffusers_config(folder: str | Path, spec: ComponentSpec) -> dict[str, Any]:
    """A diffusers component's `config.json` as a dict of the Config keys of the plugin `spec` declares.

    Checks the model class against the layout's `diffusers_classes`, drops metadata, None values and the
    layout's `diffusers_left_out` keys at their neutral values, and raises WeightsError for a feature the plugin
    lacks (a left-out key at another value); the layout's `config_from_diffusers` then translates the rest.
    Config keys naming files (`PATH_KEYS`) must stay inside `folder`.
    """
    folder = Path(folder)
    return _diffusers_config(folder, spec, _layout_for(folder, spec, "diffusers"))


def _diffusers_config(folder: Path, spec: ComponentSpec, layout: CheckpointLayout) -> dict[str, Any]:
    config_path = folder / "config.json"
    if not config_path.exists():
        raise WeightsError(
            f"{folder}: no config.json — a diffusers component folder needs it for the architecture",
            hint="copy config.json from the model's original repository into this folder",
        )
    raw = read_json(config_path)
    found = raw.get("_class_name")
    architectures = raw.get("architectures")
    if found is None and isinstance(architectures, list) and architectures:
        found = architectures[0]
    if found is not None and layout.diffusers_classes and found not in layout.diffusers_classes:
        raise WeightsError(
            f"{config_path}: describes a {shown_text(str(found))}, but a {spec.kind} here needs a "
            f"{' or '.join(layout.diffusers_classes)}",
            hint="this checkpoint is for a different architecture",
        )
    config: dict[str, Any] = {}
    dropped = []
    for key, value in raw.items():
        neutral = layout.diffusers_left_out.get(key, ...)
        if key.startswith("_") or value is None or neutral is ANY_VALUE or (neutral is not ... and value == neutral):
            dropped.append(key)
        elif neutral is not ...:
            raise WeightsError(
                f"{config_path}: {key}={shown(value)} is a feature the {spec.kind} plugin does not implement",
                hint=f"only {key}={neutral!r} is supported; this checkpoint is for a different architecture",
            )
        else:
            config[key] = value
    log.debug("%s: left out diffusers-only keys %s", config_path, ", ".join(dropped))
    _confine_paths(config, folder, str(config_path))
    return layout.config_from_diffusers(config, folder) if layout.config_from_diffusers is not None else config


def _diffusers_sources(folder: Path, stem: str) -> dict[str, TensorSource]:
    """Where each tensor of a diffusers component folder lives: `<stem>.safetensors`, a `<stem>.*.safetensors`
    variant, or the shards a `<stem>.safetensors.index.json` lists."""
    candidates = [folder / f"{stem}.safetensors", *sorted(folder.glob(f"{stem}.*.safetensors"))]
    for file in candidates:
        if file.exists():
            with _open(file) as f:
                return {k: TensorSource(file, k) for k in f.keys()}
    index = folder / f"{stem}.safetensors.index.json"
    if index.exists():
        weight_map = read_json(index).get("weight_map")
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


# ─── original single-file checkpoints ────────────────────────────────────────────────────────────────────


def _read_single_file(
    path: Path, spec: ComponentSpec, layout: CheckpointLayout
) -> tuple[dict[str, TensorSource], dict[str, Any]]:
    prefix = str(layout.single_file_prefix)
    with _open(path) as f:
        keys = list(f.keys())
        shapes = {k[len(prefix) :]: tuple(f.get_slice(k).get_shape()) for k in keys if k.startswith(prefix)}
    if not shapes:
        other = next(
            (
                f" (it has {p}*: {what})"
                for p, what in layout.single_file_lookalikes.items()
                if any(k.startswith(p) for k in keys)
            ),
            "",
        )
        raise WeightsError(
            f"{path}: no {prefix}* keys for the {spec.kind} in this single-file checkpoint{other}",
            hint="use a complete SD 1.x checkpoint, or name the component's own weights file",
        )
    assert layout.single_file_names is not None  # set with single_file_prefix (CheckpointLayout checks)
    try:
        names, architecture = layout.single_file_names(shapes)
    except Unreadable as exc:
        raise WeightsError(
            f"{path}: cannot read the {spec.kind}'s architecture from this single-file checkpoint — "
            f"{_unreadable_listing(exc, prefix)}",
            hint="the file is incomplete or not an SD 1.x checkpoint; use a complete SD 1.x checkpoint",
        ) from None
    sources = {
        ours: TensorSource(path, prefix + read.key, read.squeeze, read.rows, read.transpose)
        for ours, read in ((ours, FileTensor(*entry)) for ours, entry in names.items())
    }
    return sources, architecture


def _unreadable_listing(error: Unreadable, prefix: str) -> str:
    """The problems `error` names, each key named as in the file (with `prefix`)."""
    problems = []
    if error.missing:
        problems.append(f"missing keys: {_listing([prefix + key for key in error.missing])}")
    if error.misshapen:
        problems.append(f"misshapen keys: {_listing([prefix + key for key in error.misshapen])}")
    return "; ".join(problems)
