"""diffstack's scheduler contract for every registered adapter, built as `diffstack check` builds it: the
plugin's ComponentSpec with its example config (diffusers' defaults + `EXAMPLE_CONFIGS`)."""

from __future__ import annotations

import diffstack_diffusers
import pytest
from diffstack_diffusers import ADAPTERS, DiffusersScheduler

from core.contracts.scheduler import SchedulerContract
from core.plugin_manager import PluginInfo, PluginManager


@pytest.fixture(scope="module")
def plugins() -> PluginManager:
    manager = PluginManager()
    manager.register(diffstack_diffusers, PluginInfo("diffusers", "diffstack_diffusers", "manual"))
    return manager


@pytest.fixture(params=sorted(ADAPTERS))
def component(request: pytest.FixtureRequest, plugins: PluginManager) -> DiffusersScheduler:
    spec = plugins.get("scheduler", request.param).spec
    return spec.build(spec.config(**spec.example_config))


class TestDiffusersSchedulerContract(SchedulerContract):
    """Every check, for every adapter in `ADAPTERS` (the README's table says 17/17 for each)."""
