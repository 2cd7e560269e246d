"""`CheckpointLayout`: how a model plugin's weights are laid out in checkpoints written by other libraries.

`core.weights` reads three formats. A `native` file (the part's own parameter names) needs nothing from the
plugin. A `diffusers` folder and an original `single-file` checkpoint name the tensors, the folders and the
architecture as the library that wrote them does; a plugin that can load them says how in a `CheckpointLayout`
attached to its `ComponentSpec` (`checkpoint_layout=`). `core.weights` keeps the generic work — safetensors
I/O, shard indexes, class-name checks, confinement of paths, strict loading and every error message — and asks
the layout only for names and for the architecture.

A layout function may raise `Unreadable` (usually through `ShapeReader.check`) when the tensors it reads an
architecture from are missing or misshapen; `core.weights` turns that into a WeightsError naming the file and
every such key.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from core.errors import PluginError

ANY_VALUE: Any = object()
"""A `CheckpointLayout.diffusers_left_out` value: the key is dropped whatever its value (metadata, or a setting
that only matters for training)."""

Shapes = dict[str, tuple[int, ...]]
"""Tensor shapes by name, as a single-file reader receives them (names without the layout's prefix)."""


class FileTensor(NamedTuple):
    """Which tensor of a single file fills one of our tensors, and how it is read.

    key: the file's name for it, without the layout's prefix; squeeze: an (O, I, 1, 1) conv kernel read as an
    (O, I) Linear weight; rows: (start, stop), only those rows of dim 0 (one of the query/key/value blocks of a
    fused (3·D, D) attention projection); transpose: a 2-D tensor read transposed (a (D, P) projection applied
    as x @ W, read as a (P, D) Linear weight). A plain `(key, squeeze)` tuple reads as `FileTensor(key, squeeze)`.
    """

    key: str
    squeeze: bool = False
    rows: tuple[int, int] | None = None
    transpose: bool = False


SingleFileNames = dict[str, FileTensor]
"""Our tensor name → the file's tensor (`FileTensor`) that fills it."""


@dataclass(frozen=True)
class CheckpointLayout:
    """Where a model part's weights and architecture live in foreign checkpoints, and how their names map to the
    part's own parameter and Config names. Every field is optional: a layout without the diffusers fields does
    not read diffusers folders, one without the single-file fields does not read single files.

    Diffusers folders (a pipeline folder with `model_index.json`, or one component folder):

    diffusers_subfolder: the part's subfolder of a pipeline folder (`unet`, `vae`, `text_encoder`); None: the
      part is not read from diffusers folders.
    diffusers_weights_stem: the weights file's name without `.safetensors` (`diffusion_pytorch_model` for
      diffusers models, `model` for transformers ones); `<stem>.<variant>.safetensors` and a sharded
      `<stem>.safetensors.index.json` are found from it.
    diffusers_classes: the class names `config.json` may state (`_class_name`, or transformers'
      `architectures[0]`); another one is refused as a different architecture. Empty: any class.
    diffusers_left_out: config keys the plugin's Config does not have, each with the value that means "feature
      off" — the key is dropped at that value and refused as a missing feature at any other — or `ANY_VALUE`
      to drop it whatever its value. Keys starting with `_` and None values are always dropped.
    config_from_diffusers: `(config, folder) -> config`: the rest of the translation into Config fields, given
      what is left of `config.json` and the component folder (renamed keys, or settings read from sibling
      folders of a pipeline, such as a tokenizer path; read JSON there with `core.weights.read_json`). None:
      the remaining keys are the Config's names already.
    diffusers_tensor_names: `(names in the file) -> {our name: name in the file}`; tensors left out of the
      result are not loaded (a constant buffer a library saved). None: the names are ours already.

    Original single-file checkpoints (several parts in one file, each under its own key prefix):

    single_file_prefix: the prefix of this part's keys in such a file, final dot included; None: the part is
      not read from single files.
    single_file_family: the prefixes of the parts of such a file (this part's may be among them); `format:
      auto` reads a file with keys under any of them (or under `single_file_prefix`) as a single file, so
      that one lacking this part is refused as such rather than read as a native file.
    single_file_lookalikes: prefix → what a file with keys under it holds instead of this part; quoted in the
      error when the part's own keys are missing (a related model the plugin does not implement).
    single_file_names: `(shapes) -> (names, architecture)`: from the shapes of the part's tensors (names
      without the prefix), our name for each tensor (`SingleFileNames`) and the Config fields the shapes tell;
      raises `Unreadable` when tensors it needs for that are missing or misshapen.

    A part assembled from models that checkpoints keep apart (SDXL's conditioner: two text encoders, two
    subfolders, two prefixes) sets only `parts`: attribute → that sub-model's own layout. Each is read as a
    part of its own; its tensors are named `attribute.<name>` and its architecture nests under `attribute`.
    """

    diffusers_subfolder: str | None = None
    diffusers_weights_stem: str = "diffusion_pytorch_model"
    diffusers_classes: tuple[str, ...] = ()
    diffusers_left_out: Mapping[str, Any] = field(default_factory=dict)
    config_from_diffusers: Callable[[dict[str, Any], Path], dict[str, Any]] | None = None
    diffusers_tensor_names: Callable[[list[str]], dict[str, str]] | None = None
    single_file_prefix: str | None = None
    single_file_family: tuple[str, ...] = ()
    single_file_lookalikes: Mapping[str, str] = field(default_factory=dict)
    single_file_names: Callable[[Shapes], tuple[SingleFileNames, dict[str, Any]]] | None = None
    parts: Mapping[str, CheckpointLayout] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if (self.single_file_prefix is None) != (self.single_file_names is None):
            raise PluginError(
                "a CheckpointLayout sets single_file_prefix and single_file_names together, or neither",
                hint="single_file_names reads the keys under single_file_prefix",
            )
        if self.parts and (self.diffusers_subfolder is not None or self.single_file_prefix is not None):
            raise PluginError(
                "a CheckpointLayout with parts sets no subfolder or prefix of its own",
                hint="each part's layout says where that part lives",
            )

    @property
    def reads_diffusers(self) -> bool:
        return self.diffusers_subfolder is not None or any(part.reads_diffusers for part in self.parts.values())

    @property
    def reads_single_file(self) -> bool:
        return self.single_file_prefix is not None or any(part.reads_single_file for part in self.parts.values())

    @property
    def single_file_markers(self) -> tuple[str, ...]:
        """The key prefixes that make `format: auto` read a file as a single file for this part."""
        own = (*([self.single_file_prefix] if self.single_file_prefix else []), *self.single_file_family)
        return tuple(dict.fromkeys([*own, *(m for part in self.parts.values() for m in part.single_file_markers)]))

    @property
    def diffusers_subfolders(self) -> tuple[str, ...]:
        """The subfolders of a diffusers pipeline folder this part is read from."""
        own = () if self.diffusers_subfolder is None else (self.diffusers_subfolder,)
        return (*own, *(s for part in self.parts.values() for s in part.diffusers_subfolders))


class Unreadable(Exception):
    """From a `single_file_names` function: tensors an architecture is read from are missing or misshapen.
    `missing`: their names; `misshapen`: one line each, `name: shape where N dimensions are expected`."""

    def __init__(self, missing: list[str], misshapen: list[str]) -> None:
        super().__init__(missing, misshapen)
        self.missing, self.misshapen = list(dict.fromkeys(missing)), list(dict.fromkeys(misshapen))


class ShapeReader:
    """The tensor shapes an architecture is read from. `dim(key, axis, ndim)` is the size along `axis` of
    tensor `key`, which must have `ndim` dimensions; a missing or misshapen tensor reads as 0 and is recorded,
    so that `check` raises `Unreadable` naming every problem at once."""

    def __init__(self, shapes: Shapes) -> None:
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
        """Raise `Unreadable` if any `dim` read a missing or misshapen tensor."""
        if self.missing or self.misshapen:
            raise Unreadable(self.missing, self.misshapen)
