"""pytest plugin of diffstack (entry point `pytest11: diffstack`), loaded automatically once installed.

- registers the `contract` marker and puts it on every test that comes from a contract suite, so
  `pytest -m contract` runs just the conformance checks;
- provides the `diffstack_plugins` fixture: a freshly discovered `core.PluginManager` (built-ins and
  installed plugins), e.g. to build a component by name inside a `component` fixture.

The suites themselves need no pytest: their failures carry explicit messages, and a check that does not
apply raises `unittest.SkipTest`, which pytest reports as a skip.
"""

from __future__ import annotations

import pytest

from core.contracts.base import Contract
from core.plugin_manager import PluginManager


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "contract: a check from a diffstack contract suite (core.contracts)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        cls = getattr(item, "cls", None)
        if cls is not None and issubclass(cls, Contract):
            item.add_marker(pytest.mark.contract)


@pytest.fixture
def diffstack_plugins() -> PluginManager:
    """A fresh `PluginManager` with the built-in and installed plugins loaded."""
    return PluginManager.discover()
