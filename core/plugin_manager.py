"""`PluginManager`: discovers plugins, guards their loading, and owns the table of components.

Discovery order: built-ins (the `diffstack` distribution's own entry points in the `diffstack` group: core
never imports the `plugins` package), then other installed distributions' entry points in that group, then
modules named under `plugins:` in a registry file. Each entry point loads
under its own guard: a broken one is recorded in `problems` (name, distribution, version, exception) and
skipped, unless `strict=True`, which makes it fatal. All state lives in the instance.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import re
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

import pluggy

from core import hookspecs
from core.component_spec import ComponentSpec
from core.containment import contained, is_real_interrupt, summary
from core.errors import DiffstackError, PluginError, PluginWarning, UnknownComponentError
from core.interfaces import KINDS
from core.suggest import did_you_mean

ENTRY_POINT_GROUP = "diffstack"
MODULE_NAME = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
"""A `plugins:` entry: a dotted module name, so a file can come only from the registry's own folder."""
Source = Literal["builtin", "entry-point", "registry", "manual"]


@dataclass(frozen=True)
class PluginInfo:
    """Where a registered plugin came from. `distribution`/`version` are None for non-installed modules."""

    name: str
    module: str
    source: Source
    distribution: str | None = None
    version: str | None = None

    @property
    def provider(self) -> str:
        """Human-readable origin, e.g. `plugin 'heun' (module heun_scheduler, package diffstack-heun 0.1)`."""
        package = f", package {self.distribution} {self.version}" if self.distribution else ""
        return f"plugin {self.name!r} (module {self.module}{package})"


@dataclass(frozen=True)
class LoadProblem:
    """A plugin that could not be loaded and was skipped."""

    name: str
    distribution: str | None
    version: str | None
    error: str

    def __str__(self) -> str:
        package = f" from package {self.distribution} {self.version}" if self.distribution else ""
        return f"plugin {self.name!r}{package} failed to load and was skipped: {self.error}"


@dataclass(frozen=True)
class NameClash:
    """Two or more plugins provide the same kind/name: that one component is disabled, the rest keep working."""

    kind: str
    name: str
    providers: tuple[str, ...]

    def __str__(self) -> str:
        return (
            f"{self.kind} {self.name!r} is provided by {len(self.providers)} plugins: {' and '.join(self.providers)}; "
            f"it is disabled until only one provides it (uninstall or rename the others)"
        )


@dataclass(frozen=True)
class ComponentRecord:
    """A component spec together with the plugin that provides it."""

    spec: ComponentSpec
    plugin: PluginInfo


class PluginManager:
    """Owns a pluggy manager, the provenance of every plugin, and the (kind, name) → component table."""

    def __init__(self, *, strict: bool = False) -> None:
        self.strict = strict
        self.hook_manager = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self.hook_manager.add_hookspecs(hookspecs)
        self.problems: list[LoadProblem | NameClash] = []
        self._info: dict[str, PluginInfo] = {}
        self._table: dict[tuple[str, str], ComponentRecord] | None = None

    @classmethod
    def discover(cls, *, strict: bool = False, entry_points: bool = True) -> PluginManager:
        """A manager with the built-ins and (unless `entry_points=False`) every installed plugin loaded."""
        manager = cls(strict=strict)
        manager.load_builtins()
        if entry_points:
            manager.load_entry_points()
        return manager

    @property
    def hook(self) -> Any:
        """The pluggy hook relay, e.g. `manager.hook.diffstack_step_end(event=...)`."""
        return self.hook_manager.hook

    def register(self, plugin: object, info: PluginInfo) -> None:
        """Register a module or object implementing diffstack hooks."""
        if info.name in self._info:
            raise PluginError(
                f"two plugins are named {info.name!r}: {self._info[info.name].provider} and {info.provider}",
                hint="uninstall one of them or rename its entry point",
            )
        try:
            self.hook_manager.register(plugin, name=info.name)
        except (pluggy.PluginValidationError, ValueError) as exc:
            raise PluginError(f"{info.provider} does not implement the diffstack hooks correctly: {exc}") from None
        self._info[info.name] = info
        self._table = None

    def load_builtins(self) -> None:
        """Register the plugins diffstack ships: the entry points of its own distribution, found like anyone's.
        A failure here is diffstack's own bug, so it is not guarded."""
        own = [
            ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP) if _distribution(ep) == "diffstack"
        ]
        if not own:
            raise PluginError(
                "diffstack's built-in plugins are not registered: this diffstack is not installed",
                hint='install it (`pip install -e ".[test]"` in a checkout), which records its entry points',
            )
        for entry_point in own:
            self.register(entry_point.load(), PluginInfo(entry_point.name, entry_point.value, "builtin"))

    def load_entry_points(self) -> None:
        """Register every installed `diffstack` entry point, each under its own guard."""
        for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            dist_name = _distribution(entry_point)
            if dist_name == "diffstack":
                continue  # the built-ins, registered first
            version = entry_point.dist.version if entry_point.dist is not None else None
            info = PluginInfo(entry_point.name, entry_point.value, "entry-point", dist_name, version)
            if info.name in self._info and self._info[info.name].module == info.module:
                continue
            try:
                plugin = entry_point.load()
                self.register(plugin, info)
                self._check_components(info.name)
            except BaseException as exc:
                if is_real_interrupt(exc):
                    raise
                self._record_failure(info, exc)

    def load_module(self, name: str, *, base_dir: Path | None = None) -> None:
        """Register a module named in a registry file: `name.py` next to the registry, or an importable name."""
        if not MODULE_NAME.fullmatch(name):
            raise PluginError(
                f"plugins: {name!r} is not a module name",
                hint="name a module (`my_rules`, `pkg.rules`): `my_rules.py` next to the registry file, or installed",
            )
        info = PluginInfo(name, name, "registry")
        if info.name in self._info:
            return
        try:
            local = base_dir / f"{name}.py" if base_dir is not None else None
            if local is not None and local.is_file():
                module = _import_file(name, local)
                info = PluginInfo(name, str(local), "registry")
            else:
                module = importlib.import_module(name)
            self.register(module, info)
            self._check_components(info.name)
        except PluginError:
            raise
        except BaseException as exc:
            if is_real_interrupt(exc):
                raise
            nearby = [path.stem for path in base_dir.glob("*.py")] if base_dir is not None else []
            looked = f"no {base_dir / f'{name}.py'}, so it was imported by name" if base_dir is not None else ""
            failed_by_name = isinstance(exc, ModuleNotFoundError) and exc.name == name
            raise PluginError(
                f"plugin module {name!r} listed under `plugins:` failed to import: {summary(exc)}"
                + (f" ({looked}){did_you_mean(name, nearby)}" if failed_by_name and looked else ""),
                hint=f"make {name!r} importable (installed, or {name}.py next to the registry file)",
            ) from exc

    def call_each(self, hook: str, **arguments: Any) -> Iterator[Any]:
        """Call the implementations of `hook` one by one, in pluggy's order (the last registered first), yielding
        each result; each call is `contained`, so a failure is a PluginError naming the plugin and the hook."""
        for impl in reversed(getattr(self.hook, hook).get_hookimpls()):
            with contained(f"{self._info[impl.plugin_name].provider} in {hook}()"):
                result = impl.function(**{name: arguments[name] for name in impl.argnames})
            yield result

    def plugins(self) -> list[PluginInfo]:
        """Every registered plugin, in registration order."""
        return list(self._info.values())

    def components(self) -> dict[tuple[str, str], ComponentRecord]:
        """The (kind, name) → ComponentRecord table, built on first use. A kind/name that several plugins
        provide is left out of it and recorded as a `NameClash` (fatal under `strict`)."""
        if self._table is None:
            claims: dict[tuple[str, str], list[ComponentRecord]] = {}
            for plugin_name in self._info:
                for spec in self._specs_of(plugin_name):
                    claims.setdefault((spec.kind, spec.name), []).append(ComponentRecord(spec, self._info[plugin_name]))
            for (kind, name), records in claims.items():
                if len(records) > 1:
                    self._report(NameClash(kind, name, tuple(r.plugin.provider for r in records)))
            self._table = {key: records[0] for key, records in claims.items() if len(records) == 1}
        return self._table

    def names(self, kind: str) -> list[str]:
        """Sorted component names of one kind."""
        return sorted(name for k, name in self.components() if k == kind)

    def get(self, kind: str, name: str) -> ComponentRecord:
        """The component `kind/name`, or a PluginError with a "did you mean" and the list of what exists."""
        if kind not in KINDS:
            raise UnknownComponentError(f"unknown component kind {kind!r}", hint=f"use one of: {', '.join(KINDS)}")
        record = self.components().get((kind, name))
        clash = next((p for p in self.problems if isinstance(p, NameClash) and (p.kind, p.name) == (kind, name)), None)
        if clash is not None:
            raise PluginError(str(clash), hint="uninstall one of the packages named above")
        if record is None:
            existing = self.names(kind)
            raise UnknownComponentError(
                f"no {kind} plugin named {name!r}{did_you_mean(name, existing)}",
                hint=f"available {kind}s: {', '.join(existing) or '(none)'}",
            )
        return record

    def _specs_of(self, plugin_name: str) -> list[ComponentSpec]:
        plugin = self.hook_manager.get_plugin(plugin_name)
        impl = getattr(plugin, "diffstack_components", None)
        if impl is None:
            return []
        provider = self._info[plugin_name].provider
        with contained(f"{provider}: diffstack_components()"):
            specs = impl()
        if not isinstance(specs, (list, tuple)) or not all(isinstance(s, ComponentSpec) for s in specs):
            raise PluginError(f"{provider}: diffstack_components() must return a list of core.ComponentSpec")
        return list(specs)

    def _check_components(self, plugin_name: str) -> None:
        """Validate one newly registered plugin's specs now, so a broken one is caught by its guard."""
        try:
            self._specs_of(plugin_name)
        except BaseException:
            self.hook_manager.unregister(name=plugin_name)
            del self._info[plugin_name]
            raise

    def _record_failure(self, info: PluginInfo, exc: BaseException) -> None:
        error = exc.message if isinstance(exc, DiffstackError) else summary(exc)
        problem = LoadProblem(info.name, info.distribution, info.version, error)
        if self.strict:
            raise PluginError(str(problem).replace(" and was skipped", ""), hint="fix or uninstall it") from exc
        self._report(problem)

    def _report(self, problem: LoadProblem | NameClash) -> None:
        """Record a problem (once) and warn about it: a `PluginWarning`, shown once per process by Python's
        default filter; under `strict` a PluginError instead."""
        if self.strict:
            raise PluginError(str(problem), hint="fix or uninstall the plugins named above")
        if problem not in self.problems:
            self.problems.append(problem)
            warnings.warn(str(problem), PluginWarning, stacklevel=2)


def _distribution(entry_point: importlib.metadata.EntryPoint) -> str | None:
    """The name of the distribution that declares `entry_point`, if known."""
    return entry_point.dist.metadata["Name"] if entry_point.dist is not None else None


def _import_file(name: str, path: Path) -> ModuleType:
    module_name = f"diffstack_registry_plugin_{name}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise PluginError(f"cannot import plugin file {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module
