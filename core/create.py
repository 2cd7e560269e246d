"""One component without a registry: `core.create(kind, name, **config)`, and `core.available_plugins()`."""

from __future__ import annotations

from typing import Any

from core.containment import contained
from core.interfaces import KINDS
from core.plugin_manager import PluginManager
from core.validation import validate_config


def create(kind: str, name: str, /, *, plugin_manager: PluginManager | None = None, **config: Any) -> Any:
    """Build component `kind/name` from its plugin's Config defaults overridden by `config`.

    Example: `core.create("scheduler", "ddim", eta=0.5)`. Raises PluginError for an unknown kind or name
    (with "did you mean"), ConfigError naming every invalid field, and PluginError when the plugin's factory
    fails (whatever it raises, `core.containment`).
    """
    manager = plugin_manager if plugin_manager is not None else PluginManager.discover()
    record = manager.get(kind, name)
    validated = validate_config(record.spec.config, config, where=f"{kind} {name!r}")
    with contained(f"{record.plugin.provider}, building {kind} {name!r},"):
        return record.spec.build(validated)


def available_plugins(plugin_manager: PluginManager | None = None) -> dict[str, list[str]]:
    """`{kind: [component names]}` for every kind, from built-ins and installed plugins."""
    manager = plugin_manager if plugin_manager is not None else PluginManager.discover()
    return {kind: manager.names(kind) for kind in KINDS}
