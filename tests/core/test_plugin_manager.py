"""Plugin discovery: entry points under guards, provenance, clashes, strict mode, hook validation."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ConfigDict

import core
from core import ComponentSpec, PluginError, PluginManager
from core.errors import PluginWarning
from core.plugin_manager import LoadProblem

PLUGIN_SOURCE = """
from pydantic import BaseModel, ConfigDict
from core import ComponentSpec, hookimpl

class Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    size: int = 3

class Thing:
    def __init__(self, config):
        self.config = config

@hookimpl
def diffstack_components():
    return [ComponentSpec(kind="{kind}", name="{name}", factory=Thing, config=Config, description="a thing")]
"""


def plugin_source(kind: str = "scheduler", name: str = "acme") -> str:
    return PLUGIN_SOURCE.replace("{kind}", kind).replace("{name}", name)


def test_entry_point_plugin_is_discovered_with_its_package(install_distribution):
    install_distribution(
        "acme-schedulers", "1.2.0", entry_points={"acme": "acme_mod"}, modules={"acme_mod": plugin_source()}
    )
    manager = PluginManager.discover()
    record = manager.get("scheduler", "acme")
    assert record.plugin.distribution == "acme-schedulers"
    assert record.plugin.version == "1.2.0"
    assert record.plugin.source == "entry-point"
    assert "package acme-schedulers 1.2.0" in record.plugin.provider
    assert core.create("scheduler", "acme", size=5).config.size == 5


def test_broken_plugin_is_reported_and_skipped_while_others_load(install_distribution):
    install_distribution(
        "good-dist", "0.1", entry_points={"good": "good_mod"}, modules={"good_mod": plugin_source(name="good")}
    )
    install_distribution(
        "broken-dist",
        "9.9",
        entry_points={"broken": "broken_mod"},
        modules={"broken_mod": "raise ImportError('no numpy here')"},
    )
    with pytest.warns(PluginWarning, match="broken-dist 9.9"):
        manager = PluginManager.discover()
    assert manager.get("scheduler", "good")
    [problem] = manager.problems
    assert isinstance(problem, LoadProblem)
    assert (problem.name, problem.distribution, problem.version) == ("broken", "broken-dist", "9.9")
    assert "ImportError: no numpy here" in problem.error
    assert "broken" not in [p.name for p in manager.plugins()]


def test_strict_mode_makes_a_broken_plugin_fatal(install_distribution):
    install_distribution("broken-dist", "9.9", entry_points={"broken": "broken_mod"}, modules={"broken_mod": "1/0"})
    with pytest.raises(PluginError, match=r"'broken' from package broken-dist 9.9.*ZeroDivisionError"):
        PluginManager.discover(strict=True)


def test_plugin_whose_hook_returns_garbage_is_guarded(install_distribution):
    source = "from core import hookimpl\n@hookimpl\ndef diffstack_components():\n    return ['not a spec']\n"
    install_distribution("odd-dist", "1.0", entry_points={"odd": "odd_mod"}, modules={"odd_mod": source})
    manager = PluginManager.discover()
    assert [p.name for p in manager.problems] == ["odd"]
    assert "list of core.ComponentSpec" in manager.problems[0].error


CLASHING_SOURCE = """
from pydantic import BaseModel, ConfigDict
from core import ComponentSpec, hookimpl

class Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

class Thing:
    def __init__(self, config):
        self.config = config

@hookimpl
def diffstack_components():
    return [ComponentSpec("scheduler", "acme", Thing, Config), ComponentSpec("scheduler", "{other}", Thing, Config)]
"""


def install_clashing_pair(install_distribution) -> None:
    """Two packages that both provide scheduler/acme, and one other scheduler each (one, two)."""
    for dist, version, other in (("first-dist", "1.0", "one"), ("second-dist", "2.0", "two")):
        module = f"{other}_mod"
        source = CLASHING_SOURCE.replace("{other}", other)
        install_distribution(dist, version, entry_points={module: module}, modules={module: source})


def test_a_name_two_plugins_provide_is_disabled_and_everything_else_works(install_distribution):
    install_clashing_pair(install_distribution)
    with pytest.warns(PluginWarning, match="scheduler 'acme' is provided by 2 plugins") as caught:
        manager = PluginManager.discover()
        assert manager.get("scheduler", "one") and manager.get("scheduler", "two") and manager.get("scheduler", "ddim")
    assert len(caught) == 1
    with pytest.raises(PluginError) as failure:
        manager.get("scheduler", "acme")
    message = str(failure.value)
    assert "first-dist 1.0" in message and "second-dist 2.0" in message and "uninstall" in message
    assert [str(p) for p in manager.problems] == [str(caught[0].message)]
    assert "acme" not in manager.names("scheduler")


def test_strict_makes_a_name_clash_fatal(install_distribution):
    install_clashing_pair(install_distribution)
    manager = PluginManager.discover(strict=True)
    with pytest.raises(PluginError, match="scheduler 'acme' is provided by 2 plugins"):
        manager.components()


def test_unknown_name_suggests_the_closest_and_lists_all(install_distribution):
    install_distribution(
        "acme-schedulers", "1.2.0", entry_points={"acme": "acme_mod"}, modules={"acme_mod": plugin_source()}
    )
    with pytest.raises(PluginError, match=r"no scheduler plugin named 'acmee' \(did you mean 'acme'\?\)") as caught:
        PluginManager.discover().get("scheduler", "acmee")
    assert "acme" in caught.value.hint
    with pytest.raises(PluginError, match="unknown component kind 'schedular'"):
        PluginManager.discover().get("schedular", "acme")


def test_managers_share_no_state(install_distribution):
    bare = PluginManager()
    assert bare.plugins() == [] and bare.components() == {}
    install_distribution(
        "acme-schedulers", "1.2.0", entry_points={"acme": "acme_mod"}, modules={"acme_mod": plugin_source()}
    )
    assert PluginManager.discover().get("scheduler", "acme")
    assert bare.components() == {}


class Loose(BaseModel):
    size: int = 1


class Tight(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    size: int = 1


def test_component_spec_rejects_misuse():
    with pytest.raises(PluginError, match="accepts unknown keys"):
        ComponentSpec(kind="scheduler", name="x", factory=dict, config=Loose)
    with pytest.raises(PluginError, match="unknown kind 'sched'"):
        ComponentSpec(kind="sched", name="x", factory=dict, config=Tight)  # type: ignore[arg-type]
    with pytest.raises(PluginError, match="invalid name 'My Sched'"):
        ComponentSpec(kind="scheduler", name="My Sched", factory=dict, config=Tight)
    with pytest.raises(PluginError, match="not callable"):
        ComponentSpec(kind="scheduler", name="x", factory=3, config=Tight)  # type: ignore[arg-type]


def test_available_plugins_lists_every_kind(install_distribution):
    install_distribution(
        "acme-schedulers", "1.2.0", entry_points={"acme": "acme_mod"}, modules={"acme_mod": plugin_source()}
    )
    available = core.available_plugins()
    assert set(available) == set(core.KINDS)
    assert "acme" in available["scheduler"]


def test_installed_plugin_is_usable_from_a_registry_file(install_distribution, tmp_path):
    install_distribution("diffstack-toys", "0.0.1", entry_points={"toy": "toy_plugin"})
    install_distribution("broken-dist", "9.9", entry_points={"broken": "broken_mod"}, modules={"broken_mod": "1/0"})
    registry_file = tmp_path / "registry.yaml"
    registry_file.write_text(
        "version: 1\n"
        "pipelines:\n"
        "  toys:\n"
        "    encoder: {plugin: toy-encoder}\n"
        "    denoiser: {plugin: toy-denoiser, config: {context_dim: 16}}\n"
        "    text: {plugin: toy-text, config: {embedding_dim: 16}}\n"
        "    scheduler: {plugin: toy-scheduler}\n"
        "    sampler: {plugin: toy-sampler}\n"
    )
    registry = core.load_registry(registry_file)
    assert [p.name for p in registry.plugin_manager.problems] == ["broken"]
    pipe = registry.build(device="cpu")
    assert type(pipe.denoiser).__name__ == "ToyDenoiser" and type(pipe.sampler).__name__ == "ToySampler"
    assert registry.plugin_manager.get("denoiser", "toy-denoiser").plugin.distribution == "diffstack-toys"
