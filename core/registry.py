"""The registry: a YAML file declaring components and pipelines (docs/architecture.md, "The registry").

`load_registry()` finds the file (explicit path → `$DIFFSTACK_REGISTRY` → `./registry.yaml` → the bundled
one), validates it in two passes — the envelope, then every `config` against its plugin's Config — and
raises one RegistryError listing *all* problems with their paths. `Registry.build()` then instantiates
the parts of a pipeline lazily, shares named components between pipelines, loads their weights and places
them on the device.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import torch
from pydantic import ValidationError

from core import weights
from core.bounded_yaml import read_bounded
from core.component_spec import ComponentSpec
from core.containment import contained
from core.devices import placement_dtype, resolve_device, resolve_dtype
from core.errors import DiffstackError, InputError, PluginError, RegistryError, WeightsError
from core.interfaces import INTERFACES, MODEL_KINDS, PIPELINE_KINDS, missing_members
from core.performance import OPTIMISED_KINDS, Performance, optimise_part
from core.pipeline import Pipeline
from core.plugin_manager import PluginManager
from core.registry_schema import ComponentDecl, InlineComponent, PipelineDecl, RegistryEnvelope, WeightsRef
from core.suggest import did_you_mean
from core.validation import describe_errors, validate_config

ENV_VAR = "DIFFSTACK_REGISTRY"
ACCEPTED_WEIGHTS = (
    "a diffusers folder (model_index.json with unet/, vae/, text_encoder/, tokenizer/), an original SD 1.x "
    "single-file .safetensors, or a diffstack .safetensors of the component"
)
MAX_REGISTRY_BYTES = 1 << 20
"""A registry file is a few KB; anything over 1 MiB is another file named by mistake."""
VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def bundled_registry_path() -> Path:
    """The registry shipped with diffstack: inside the installed package, or at the root of a checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "bundled" / "registry.yaml", here.parent / "registry.yaml"):
        if candidate.is_file():
            return candidate
    raise RegistryError("the bundled registry.yaml is missing from this installation", hint="reinstall diffstack")


def find_registry(path: str | Path | None = None) -> Path:
    """Explicit path → `$DIFFSTACK_REGISTRY` → `./registry.yaml` → the bundled registry."""
    for candidate, origin in ((path, "given path"), (os.environ.get(ENV_VAR) or None, f"${ENV_VAR}")):
        if candidate is not None:
            resolved = Path(candidate).expanduser()
            if not resolved.is_file():
                raise RegistryError(
                    f"registry file not found: {resolved} ({origin})", hint="check the path or create the file"
                )
            return resolved
    local = Path.cwd() / "registry.yaml"
    return local if local.is_file() else bundled_registry_path()


def load_registry(
    path: str | Path | None = None, *, strict: bool = False, plugin_manager: PluginManager | None = None
) -> Registry:
    """Read, validate and return a registry. Raises RegistryError listing every problem found.

    plugin_manager: the manager to resolve plugin names with (default: built-ins + installed entry points,
    with `strict` deciding whether a broken installed plugin is fatal).
    """
    file = find_registry(path).resolve()
    raw, plugin_dirs, origins = _inherited(file, _read_yaml(file), ())
    manager = plugin_manager if plugin_manager is not None else PluginManager.discover(strict=strict)
    return _Validator(file, raw, manager, plugin_dirs, origins).registry()


Origins = dict[tuple[str, str], Path]
"""(section, entry name) → the file that declares it, for the entries a registry inherits."""


def _inherited(
    file: Path, raw: dict[str, Any], seen: tuple[Path, ...]
) -> tuple[dict[str, Any], dict[str, Path], Origins]:
    """`raw` merged over the registry it `extends` (recursively) → (merged raw, folder of each `plugins:` module,
    the file each inherited entry comes from).

    The file's own components and pipelines replace inherited ones of the same name, its `plugins` add to
    theirs, its `default_pipeline` (when set) wins; relative weights paths of inherited entries are anchored
    to the folder of the file that declares them.
    """
    listed = raw.get("plugins")
    own_plugins: list[Any] = listed if isinstance(listed, list) else []
    plugin_dirs = {module: file.parent for module in own_plugins if isinstance(module, str)}
    extends = raw.get("extends")
    if extends is None:
        return raw, plugin_dirs, {}
    if not isinstance(extends, str) or not extends:
        raise RegistryError(
            f"{file}: extends: expected `bundled` or a registry file path, got {extends!r}",
            hint="write `extends: bundled` to build on the registry shipped with diffstack",
        )
    base = bundled_registry_path().resolve() if extends == "bundled" else (file.parent / extends).expanduser().resolve()
    if not base.is_file():
        raise RegistryError(
            f"{file}: extends: registry file not found: {base}",
            hint="`extends: bundled`, or a path relative to this file",
        )
    if base == file or base in seen:
        chain = " -> ".join(str(f) for f in (*seen, file, base))
        raise RegistryError(
            f"{file}: extends: the registries extend each other in a cycle: {chain}",
            hint="remove `extends:` from one of them",
        )
    inherited, base_dirs, origins = _inherited(base, _read_yaml(base), (*seen, file))
    merged = {**inherited, **{key: value for key, value in raw.items() if key not in ("components", "pipelines")}}
    for section in ("components", "pipelines"):
        theirs, ours = inherited.get(section) or {}, raw.get(section) or {}
        if not isinstance(theirs, dict):
            raise RegistryError(f"{base}: `{section}` must be a mapping (inherited by {file})")
        anchored = {name: _anchored(block, base.parent) for name, block in theirs.items()}
        merged[section] = {**anchored, **ours} if isinstance(ours, dict) else ours
        declared_here = ours if isinstance(ours, dict) else {}
        origins |= {(section, name): origins.get((section, name), base) for name in theirs if name not in declared_here}
    base_plugins = inherited.get("plugins")
    listed_first = base_plugins if isinstance(base_plugins, list) else []
    merged["plugins"] = [*listed_first, *(module for module in own_plugins if module not in listed_first)]
    merged["default_pipeline"] = raw.get("default_pipeline") or inherited.get("default_pipeline")
    return merged, {**base_dirs, **plugin_dirs}, origins


def _anchored(block: Any, folder: Path) -> Any:
    """An inherited component or pipeline block with its relative weights paths made absolute against `folder`
    (those of a pipeline's inline slot blocks too). Paths starting with `$` or `~`, and absolute ones, stay."""
    if not isinstance(block, dict):
        return block
    anchored = {key: _anchored(value, folder) if key in PIPELINE_KINDS else value for key, value in block.items()}
    weights_ref = block.get("weights")
    raw_path = weights_ref.get("path") if isinstance(weights_ref, dict) else weights_ref
    if isinstance(raw_path, str) and raw_path and raw_path[0] not in "$~" and not Path(raw_path).is_absolute():
        path = str(folder / raw_path)
        anchored["weights"] = {**weights_ref, "path": path} if isinstance(weights_ref, dict) else path
    return anchored


def _read_yaml(file: Path) -> dict[str, Any]:
    """The top-level mapping of registry `file`, parsed within `core.bounded_yaml`'s limits."""
    return read_bounded(
        file, what="a registry file", keys="`version`, `components` and `pipelines` (start with `version: 1`)",
        error=RegistryError, max_bytes=MAX_REGISTRY_BYTES,
        hint="point --registry at the YAML registry file; a registry is a small file of a few hundred values",
    )  # fmt: skip


class _Validator:
    """The two validation passes over one parsed registry file, collecting every problem."""

    def __init__(
        self, file: Path, raw: dict[str, Any], manager: PluginManager, plugin_dirs: dict[str, Path], origins: Origins
    ) -> None:
        self.file = file
        self.raw = raw
        self.manager = manager
        self.plugin_dirs = plugin_dirs
        self.origins = origins
        self.failed_modules: list[str] = []
        self.problems: list[str] = []

    def registry(self) -> Registry:
        envelope = self._envelope()
        for index, module in enumerate(envelope.plugins):
            try:
                self.manager.load_module(module, base_dir=self.plugin_dirs.get(module, self.file.parent))
            except PluginError as exc:
                self.problems.append(f"plugins -> {index}: {exc.message}")
                self.failed_modules.append(module)
        components = {
            name: decl for name, block in envelope.components.items() if (decl := self._component(name, block))
        }
        pipelines = {
            name: pipeline
            for name, block in envelope.pipelines.items()
            if (pipeline := self._pipeline(name, block, components))
        }
        default = self._default(envelope)
        if self.problems:
            count = len(self.problems)
            raise RegistryError(
                f"{self.file}: {count} problem{'s' if count > 1 else ''} found",
                [self._located(problem) for problem in self.problems],
                hint=f"fix the entries above, then re-check with `diffstack validate {self.file}`",
            )
        return Registry(self.file, components, pipelines, default, self.manager)

    def _located(self, problem: str) -> str:
        """`problem`, with the file it is in when it is about an inherited entry (`extends:`)."""
        section, _, rest = problem.partition(" -> ")
        origin = self.origins.get((section, rest.split(" -> ")[0].split(":")[0]))
        return problem if origin is None else f"{problem} (in {origin}, inherited through extends:)"

    def _envelope(self) -> RegistryEnvelope:
        try:
            return RegistryEnvelope.model_validate(self.raw)
        except ValidationError as exc:
            self.problems.extend(describe_errors(exc, fields=RegistryEnvelope.model_fields))
        usable = {
            key: value
            for key, value in self.raw.items()
            if key in RegistryEnvelope.model_fields and _field_ok(key, value)
        }
        return RegistryEnvelope.model_validate({**usable, "version": 1})

    def _component(self, name: str, block: Any) -> ComponentDecl | None:
        try:
            decl = ComponentDecl.model_validate(block)
        except ValidationError as exc:
            self.problems.extend(describe_errors(exc, ("components", name), ComponentDecl.model_fields))
            return None
        return decl if self._plugin_block(decl.kind, decl, ("components", name)) else None

    def _pipeline(self, name: str, block: Any, components: dict[str, ComponentDecl]) -> PipelineDecl | None:
        try:
            decl = PipelineDecl.model_validate(block)
        except ValidationError as exc:
            self.problems.extend(describe_errors(exc, ("pipelines", name), PipelineDecl.model_fields))
            return None
        ok = True
        for slot in PIPELINE_KINDS:
            ref = getattr(decl, slot)
            where = ("pipelines", name, slot)
            if isinstance(ref, InlineComponent):
                ok = self._plugin_block(slot, ref, where) and ok
            elif ref not in components:
                ok = False
                declared = self.raw.get("components")
                if isinstance(declared, dict) and ref in declared:
                    continue
                same_kind = [n for n, c in components.items() if c.kind == slot]
                self.problems.append(
                    f"{_path(where)}: no component named {ref!r}{did_you_mean(ref, components)}; "
                    f"{slot} components: {', '.join(same_kind) or '(none)'}"
                )
            elif components[ref].kind != slot:
                ok = False
                same_kind = [n for n, c in components.items() if c.kind == slot]
                self.problems.append(
                    f"{_path(where)}: component {ref!r} is {article(components[ref].kind)}, not {article(slot)}; "
                    f"{slot} components: {', '.join(same_kind) or '(none)'}"
                )
        return decl if ok else None

    def _plugin_block(self, kind: str, block: InlineComponent, where: tuple[str, ...]) -> bool:
        try:
            spec = self.manager.get(kind, block.plugin).spec
        except PluginError as exc:
            failed = ", ".join(repr(module) for module in self.failed_modules)
            maybe = f"; the `plugins:` module {failed} that failed above may provide it" if failed else ""
            self.problems.append(f"{_path(where + ('plugin',))}: {exc.message}; {exc.hint}{maybe}")
            return False
        try:
            spec.config.model_validate(block.config)
        except ValidationError as exc:
            self.problems.extend(describe_errors(exc, where + ("config",), spec.config.model_fields))
            return False
        return True

    def _default(self, envelope: RegistryEnvelope) -> str | None:
        default = envelope.default_pipeline
        if default is None:
            return next(iter(envelope.pipelines)) if len(envelope.pipelines) == 1 else None
        if default not in envelope.pipelines:
            self.problems.append(
                f"default_pipeline: no pipeline named {default!r}{did_you_mean(default, envelope.pipelines)}; "
                f"pipelines: {', '.join(envelope.pipelines) or '(none)'}"
            )
        return default


def merged_config(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """`override` over `base`, nested mappings merged key by key (a registry's `config:` over the architecture a
    checkpoint states, e.g. one setting of one of SDXL's two text towers)."""
    merged = dict(base)
    for key, value in override.items():
        below = merged.get(key)
        nested = isinstance(value, Mapping) and isinstance(below, Mapping)
        merged[key] = merged_config(below, value) if nested else value  # type: ignore[arg-type]
    return merged


def _field_ok(key: str, value: Any) -> bool:
    try:
        RegistryEnvelope.model_validate({"version": 1, key: value})
    except ValidationError:
        return False
    return True


Declaration = TypeVar("Declaration")


def _lookup(table: Mapping[str, Declaration], name: str, what: str, path: Path) -> Declaration:
    """`table[name]`, or a RegistryError with a "did you mean" and every name of that kind."""
    if name not in table:
        raise RegistryError(
            f"{path}: no {what} named {name!r}{did_you_mean(name, table)}",
            hint=f"{what}s: {', '.join(table) or '(none)'}",
        )
    return table[name]


def article(word: str) -> str:
    """`word` with its indefinite article: "an encoder", "a text"."""
    return f"{'an' if word[:1] in 'aeiou' else 'a'} {word}"


def _path(where: tuple[str, ...]) -> str:
    return " -> ".join(where)


class Registry:
    """A validated registry file. Build pipelines with `build(name)`; components are made on first use."""

    def __init__(
        self,
        path: Path,
        components: dict[str, ComponentDecl],
        pipelines: dict[str, PipelineDecl],
        default_pipeline: str | None,
        plugin_manager: PluginManager,
    ) -> None:
        self.path = path
        self.default_pipeline = default_pipeline
        self.plugin_manager = plugin_manager
        self._components = components
        self._pipelines = pipelines
        self._built: dict[tuple[Any, ...], Any] = {}

    @property
    def pipeline_names(self) -> list[str]:
        return list(self._pipelines)

    @property
    def component_names(self) -> list[str]:
        return list(self._components)

    def pipeline_declaration(self, name: str) -> PipelineDecl:
        """The validated declaration of pipeline `name`."""
        return _lookup(self._pipelines, name, "pipeline", self.path)

    def component_declaration(self, name: str) -> ComponentDecl:
        """The validated declaration of component `name`."""
        return _lookup(self._components, name, "component", self.path)

    def _where(self, pipeline: str, slot: str) -> str:
        """How messages name the part in `slot` of `pipeline`: `component 'x'` for a named one (shared between
        pipelines), `pipeline 'p' -> slot` for an inline block."""
        ref = getattr(self.pipeline_declaration(pipeline), slot)
        return f"component {ref!r}" if isinstance(ref, str) else f"pipeline {pipeline!r} -> {slot}"

    def _plugins_of(self, pipeline: str) -> dict[str, str]:
        """The plugin name of each part of `pipeline`, by kind."""
        return {kind: self.block(pipeline, kind).plugin for kind in PIPELINE_KINDS}

    def block(self, pipeline: str, slot: str) -> InlineComponent:
        """The component block that fills `slot` of `pipeline`: its inline block, or the named component's."""
        ref = getattr(self.pipeline_declaration(pipeline), slot)
        return self.component_declaration(ref) if isinstance(ref, str) else ref

    def build(
        self,
        name: str | None = None,
        *,
        device: torch.device | str = "auto",
        dtype: torch.dtype | str | None = None,
        performance: Performance | None = None,
    ) -> Pipeline:
        """Build pipeline `name` (default: `default_pipeline`) on `device` in `dtype` (None: fp16 on CUDA, else
        fp32), with the declaration's `performance` settings unless `performance` is given (`--fast`:
        `core.performance.fast`)."""
        name = self._named(name)
        decl = self.pipeline_declaration(name)
        target = resolve_device(device)
        precision = resolve_dtype(dtype, target)
        speed = decl.performance if performance is None else performance
        parts = {slot: self._part(name, decl, slot, target, precision, speed) for slot in PIPELINE_KINDS}
        parts["scheduler"] = self._reading_predictions(name, parts["scheduler"], parts["denoiser"])
        return Pipeline(
            name,
            **parts,
            device=target,
            dtype=precision,
            defaults=decl.defaults,
            limits=decl.limits,
            plugin_manager=self.plugin_manager,
            plugins=self._plugins_of(name),
            fewest_steps=dict(decl.fewest_steps),
        )

    def outline(self, name: str | None = None) -> Pipeline:
        """Pipeline `name` (default: `default_pipeline`) as its weights make it, with no tensor data read: each
        model part built on the meta device from its registry config over the architecture its checkpoint states
        (configs and headers). It resolves and checks a call's settings (`Pipeline.settings`) as the built
        pipeline does, at no memory cost, and cannot generate (`diffstack batch --engine ray` reads the jobs with
        it while the actors hold the weights)."""
        name = self._named(name)
        decl = self.pipeline_declaration(name)
        parts = {}
        for slot in PIPELINE_KINDS:
            block = self.block(name, slot)
            fill = decl.weights if slot in MODEL_KINDS else None
            spec = self.plugin_manager.get(slot, block.plugin).spec
            where = self._where(name, slot)
            chosen = block.weights or fill
            stated = {} if chosen is None else self._read_weights(self._resolve_path(chosen.path, where), spec,
                                                                   chosen.format)[1]  # fmt: skip
            parts[slot] = self._meta_part(slot, block, stated, where)
        parts["scheduler"] = self._reading_predictions(name, parts["scheduler"], parts["denoiser"])
        return Pipeline(
            name, **parts, device=torch.device("meta"), dtype=torch.float32, defaults=decl.defaults,
            limits=decl.limits, plugin_manager=self.plugin_manager, plugins=self._plugins_of(name),
            fewest_steps=dict(decl.fewest_steps),
        )  # fmt: skip

    def _named(self, name: str | None) -> str:
        """`name`, or the registry's `default_pipeline` when None (a RegistryError when it has none)."""
        if name is not None:
            return name
        if self.default_pipeline is None:
            raise RegistryError(
                f"{self.path}: no pipeline named and the registry has no `default_pipeline`",
                hint=f"name one of: {', '.join(self._pipelines) or '(none)'}",
            )
        return self.default_pipeline

    def _meta_part(self, kind: str, block: InlineComponent, architecture: dict[str, Any], where: str) -> Any:
        """The part `block` declares, its config over `architecture`, built without weights (a model part on the
        meta device, nothing allocated)."""
        spec = self.plugin_manager.get(kind, block.plugin).spec
        declared = merged_config(architecture, block.config)
        config = validate_config(spec.config, declared, where=f"{where} ({kind} {block.plugin!r})")
        if kind not in MODEL_KINDS:
            return self._build_checked(kind, block, config, where)
        with torch.device("meta"), weights.SkipInitOnMeta():
            return self._build_checked(kind, block, config, where)

    def build_component(
        self, name: str, *, device: torch.device | str = "auto", dtype: torch.dtype | str | None = None
    ) -> Any:
        """Build (or reuse) the named component on `device` in `dtype`."""
        decl = self.component_declaration(name)
        target = resolve_device(device)
        precision = resolve_dtype(dtype, target)
        key = ("component", name, decl.weights, target, precision)
        return self._cached(
            key, lambda: self._instantiate(decl.kind, decl, decl.weights, f"component {name!r}", target, precision)
        )

    def _part(
        self, pipeline: str, decl: PipelineDecl, slot: str, device: torch.device, dtype: torch.dtype, speed: Performance
    ) -> Any:
        """The part in `slot`, built once per (declaration, device, dtype, performance): an optimised model part
        is never shared with a pipeline that asked for other settings."""
        ref = getattr(decl, slot)
        block = self.block(pipeline, slot)
        fill = decl.weights if slot in MODEL_KINDS else None
        chosen = block.weights or fill
        where = self._where(pipeline, slot)
        if isinstance(ref, str):
            key: tuple[Any, ...] = ("component", ref, chosen, device, dtype)
        else:
            key = ("inline", pipeline, slot, device, dtype)

        def plain() -> Any:
            return self._instantiate(slot, block, chosen, where, device, dtype)

        if speed == Performance() or slot not in OPTIMISED_KINDS:
            return self._cached(key, plain)
        return self._cached((*key, speed), lambda: optimise_part(slot, plain(), speed, device))

    def _cached(self, key: tuple[Any, ...], build: Callable[[], Any]) -> Any:
        """The part cached under `key`, built by `build()` on first use."""
        if key not in self._built:
            self._built[key] = build()
        return self._built[key]

    def _instantiate(
        self,
        kind: str,
        block: InlineComponent,
        weights_ref: WeightsRef | None,
        where: str,
        device: torch.device,
        dtype: torch.dtype,
    ) -> Any:
        spec = self.plugin_manager.get(kind, block.plugin).spec
        state: weights.CheckpointState | None = None
        architecture: dict[str, Any] = {}
        source = ""
        if weights_ref is not None:
            path = self._resolve_path(weights_ref.path, where)
            source = str(path)
            state, architecture = self._read_weights(path, spec, weights_ref.format)
        merged = merged_config(architecture, block.config)
        config = validate_config(spec.config, merged, where=f"{where} ({kind} {block.plugin!r})")

        def build() -> Any:
            component = self._build_checked(kind, block, config, where)
            if state is not None and not isinstance(component, torch.nn.Module):
                raise WeightsError(f"{where}: {kind} plugin {block.plugin!r} has no parameters to load weights into")
            return component

        if state is None:
            component = build()
            if isinstance(component, torch.nn.Module):
                component.to(device=device, dtype=placement_dtype(component, dtype))
        else:
            component = weights.build_with_weights(
                build, state, component=where, source=source, device=device, dtype=dtype
            )
        if isinstance(component, torch.nn.Module):
            component.eval().requires_grad_(False)
        return component

    def check_parts(self) -> list[str]:
        """Build every declared part once, with its declared config over the architecture its weights state (when
        they can be read now; headers and configs only) and no weights (model parts on the meta device, so
        nothing is allocated), and return one problem line per part that fails to build or lacks
        part of its interface; then, per pipeline whose parts all built, one line if they do not fit together or
        its `defaults` break a rule a call would be held to (`Pipeline.settings`)."""
        blocks: list[tuple[str, InlineComponent, str, WeightsRef | None]] = [
            (decl.kind, decl, f"component {name!r}", decl.weights) for name, decl in self._components.items()
        ]
        for name, pipeline in self._pipelines.items():
            for slot in PIPELINE_KINDS:
                ref = getattr(pipeline, slot)
                if isinstance(ref, InlineComponent):
                    fill = pipeline.weights if slot in MODEL_KINDS else None
                    blocks.append((slot, ref, self._where(name, slot), ref.weights or fill))
        problems, built = [], {}
        for kind, block, where, weights_ref in blocks:
            spec = self.plugin_manager.get(kind, block.plugin).spec
            try:
                built[where] = self._meta_part(kind, block, self._stated_architecture(spec, weights_ref, where), where)
            except DiffstackError as exc:
                problems.append(exc.message)
        for name in self._pipelines:
            wheres = {slot: self._where(name, slot) for slot in PIPELINE_KINDS}
            if all(where in built for where in wheres.values()):
                problems.extend(self._check_pipeline(name, {slot: built[where] for slot, where in wheres.items()}))
        return problems

    def check_weights(self) -> tuple[list[str], list[str]]:
        """Open every declared checkpoint's header and check its names and shapes against the architecture it
        states, built on the meta device: no tensor data is read. → (problem lines, skipped parts: weights
        paths with an unset `${VAR}`)."""
        refs: dict[tuple[str, WeightsRef], tuple[str, InlineComponent]] = {}
        for name, decl in self._components.items():
            if decl.kind in MODEL_KINDS and decl.weights is not None:
                refs[(f"component {name!r}", decl.weights)] = (decl.kind, decl)
        for name, pipeline in self._pipelines.items():
            for slot in MODEL_KINDS:
                block = self.block(name, slot)
                chosen = block.weights or pipeline.weights
                if chosen is not None:
                    refs[(self._where(name, slot), chosen)] = (slot, block)
        problems, skipped = [], []
        for (where, weights_ref), (kind, block) in refs.items():
            unset = [name for name in VARIABLE.findall(weights_ref.path) if not os.environ.get(name)]
            if unset:
                skipped.append(f"{where}: ${{{unset[0]}}} is not set")
                continue
            try:
                self._check_weights_of(kind, block, weights_ref, where)
            except DiffstackError as exc:
                problems.append(exc.message)
        return problems, skipped

    def _stated_architecture(self, spec: ComponentSpec, weights_ref: WeightsRef | None, where: str) -> dict[str, Any]:
        """The architecture the part's checkpoint states (its configs and tensor headers; no tensor data), so that
        parts whose registry block leaves the architecture to the weights are checked as they will be built; {}
        when there are no weights or they cannot be read now (an unset `${VAR}`; `validate --deep` reports the
        rest)."""
        if weights_ref is None or any(not os.environ.get(v) for v in VARIABLE.findall(weights_ref.path)):
            return {}
        try:
            return self._read_weights(self._resolve_path(weights_ref.path, where), spec, weights_ref.format)[1]
        except DiffstackError:
            return {}

    def _check_weights_of(self, kind: str, block: InlineComponent, weights_ref: WeightsRef, where: str) -> None:
        """WeightsError unless the checkpoint at `weights_ref` fits `block`'s part exactly (names and shapes)."""
        path = self._resolve_path(weights_ref.path, where)
        spec = self.plugin_manager.get(kind, block.plugin).spec
        state, architecture = self._read_weights(path, spec, weights_ref.format)
        config = validate_config(
            spec.config, merged_config(architecture, block.config), where=f"{where} ({kind} {block.plugin!r})"
        )
        with torch.device("meta"), weights.SkipInitOnMeta():
            module = self._build_checked(kind, block, config, where)
        if not isinstance(module, torch.nn.Module):
            raise WeightsError(f"{where}: {kind} plugin {block.plugin!r} has no parameters to load weights into")
        weights.check_fit(module, state, component=where, source=str(path))

    def _reading_predictions(self, pipeline: str, scheduler: Any, denoiser: Any) -> Any:
        """`scheduler`, or — when the registry sets no `prediction_type` for it and the denoiser predicts another
        kind (a diffusers folder states v-prediction for the U-Net) — the same plugin reading the denoiser's."""
        block = self.block(pipeline, "scheduler")
        predicts = getattr(denoiser, "prediction_type", None)
        if "prediction_type" in block.config or getattr(scheduler.config, "prediction_type", predicts) == predicts:
            return scheduler
        spec = self.plugin_manager.get("scheduler", block.plugin).spec
        declared = scheduler.config.model_dump(mode="json", exclude_unset=True)
        where = self._where(pipeline, "scheduler")
        config = validate_config(spec.config, {**declared, "prediction_type": predicts}, where=where)
        return self._build_checked("scheduler", block, config, where)

    def _check_pipeline(self, name: str, parts: dict[str, Any]) -> list[str]:
        """Problems of pipeline `name` built from `parts` (on the meta device): parts that do not fit, or
        `defaults` that a call relying on them would be refused for."""
        decl = self.pipeline_declaration(name)
        installed = self.plugin_manager.names("scheduler")
        unknown = [rule for rule in decl.fewest_steps if rule not in installed]
        if unknown:
            named = ", ".join(repr(rule) + did_you_mean(rule, installed) for rule in unknown)
            return [f"pipeline {name!r}: fewest_steps names no installed scheduler: {named}"]
        try:
            parts = {**parts, "scheduler": self._reading_predictions(name, parts["scheduler"], parts["denoiser"])}
            pipe = Pipeline(
                name, **parts, device=torch.device("meta"), dtype=torch.float32, defaults=decl.defaults,
                limits=decl.limits, plugin_manager=self.plugin_manager,
                plugins=self._plugins_of(name),
            )  # fmt: skip
            # a pipeline may leave the size to every call (no default, no `sample_size`): a placeholder then
            placeholder = None if getattr(pipe.denoiser, "sample_size", None) else pipe.encoder.downsample_factor
            height, width = (placeholder if getattr(decl.defaults, f) is None else None for f in ("height", "width"))
            pipe.settings("", height=height, width=width)
        except DiffstackError as exc:
            return [f"pipeline {name!r}: {exc.message}" if isinstance(exc, InputError) else exc.message]
        return []

    def _build_checked(self, kind: str, block: InlineComponent, config: Any, where: str) -> Any:
        """`block`'s plugin built with `config`; PluginError when its factory raises or returns something that
        lacks part of `kind`'s interface."""
        spec = self.plugin_manager.get(kind, block.plugin).spec
        check = f"diffstack check {kind}/{block.plugin} --registry {self.path}"
        with contained(f"{where}: {kind} plugin {block.plugin!r}, building it,", hint=f"`{check}` runs its contract"):
            component = spec.build(config)
        missing = missing_members(component, kind)  # type: ignore[arg-type]
        if missing:
            raise PluginError(
                f"{where}: {kind} plugin {block.plugin!r} returned a {type(component).__name__}, which lacks "
                f"{', '.join(missing)} of core.{INTERFACES[kind].__name__}",  # type: ignore[index]
                hint="its factory must return an object with every attribute and method of the interface "
                "(docs/architecture.md, 'The five interfaces')",
            )
        return component

    def _resolve_path(self, raw: str, where: str) -> Path:
        def expand(match: re.Match[str]) -> str:
            variable = match.group(1)
            value = os.environ.get(variable)
            if not value:
                raise RegistryError(
                    f"{where}: weights path {raw!r} uses ${{{variable}}}, which is not set",
                    hint=f"export {variable}=/path/to/checkpoint — {ACCEPTED_WEIGHTS}",
                )
            return value

        path = Path(VARIABLE.sub(expand, raw)).expanduser()
        path = path if path.is_absolute() else self.path.parent / path
        if not path.exists():
            raise WeightsError(
                f"{where}: weights not found: {path} (from {raw!r})", hint=f"accepted: {ACCEPTED_WEIGHTS}"
            )
        return path

    def _read_weights(
        self, path: Path, spec: ComponentSpec, fmt: str
    ) -> tuple[weights.CheckpointState, dict[str, Any]]:
        """The checkpoint at `path` for a part built by `spec`'s plugin: from the first `diffstack_load_weights`
        hook that reads it, else `core.weights` in the layout the plugin declares (`spec.checkpoint_layout`)."""
        for state in self.plugin_manager.call_each("diffstack_load_weights", path=path, kind=spec.kind, format=fmt):
            if state is not None:
                return state, {}
        state, architecture = weights.read_component_weights(path, spec, fmt)
        return state, architecture or {}
