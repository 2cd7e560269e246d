"""`ComponentSpec`: what a plugin declares it provides — a kind, a name, a factory and a pydantic Config."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from core.checkpoint_layout import CheckpointLayout
from core.errors import PluginError
from core.interfaces import KINDS, Kind
from core.stand_in import StandIn

NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")


@dataclass(frozen=True)
class ComponentSpec:
    """One buildable component.

    kind: one of `core.KINDS`; name: lower-case, unique per kind (`[a-z0-9][a-z0-9_.-]*`);
    factory: called as `factory(config_instance)` and returns the component;
    config: a pydantic model with `extra="forbid"`, the single source of defaults and choices;
    example_config: a small valid config (a dict) that `diffstack check` and the contract suites build,
    so checking a big model never instantiates its full-size default;
    description: one line for `diffstack list components`;
    checkpoint_layout: for a model part, how its weights are laid out in diffusers folders and original
    single-file checkpoints (`core.CheckpointLayout`); None: it loads native diffstack .safetensors files only;
    stands_in_for: classes of other libraries this component replaces (`core.StandIn`), e.g. a scheduler's
    diffusers class, read by `core.scheduler_from_diffusers`.
    """

    kind: Kind
    name: str
    factory: Callable[[Any], Any]
    config: type[BaseModel]
    example_config: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    checkpoint_layout: CheckpointLayout | None = None
    stands_in_for: tuple[StandIn, ...] = ()

    def __post_init__(self) -> None:
        where = f"component {self.kind}/{self.name}"
        if self.kind not in KINDS:
            raise PluginError(f"{where}: unknown kind {self.kind!r}", hint=f"use one of {', '.join(KINDS)}")
        if not isinstance(self.name, str) or not NAME_PATTERN.match(self.name):
            raise PluginError(
                f"{where}: invalid name {self.name!r}",
                hint="use lower-case letters, digits, '-', '_' or '.', starting with a letter or digit",
            )
        if not callable(self.factory):
            raise PluginError(f"{where}: factory {self.factory!r} is not callable")
        if not (isinstance(self.config, type) and issubclass(self.config, BaseModel)):
            raise PluginError(f"{where}: config must be a pydantic BaseModel class, got {self.config!r}")
        if self.checkpoint_layout is not None and not isinstance(self.checkpoint_layout, CheckpointLayout):
            raise PluginError(
                f"{where}: checkpoint_layout must be a core.CheckpointLayout, "
                f"got {type(self.checkpoint_layout).__name__}"
            )
        if not all(isinstance(stand_in, StandIn) for stand_in in self.stands_in_for):
            raise PluginError(f"{where}: stands_in_for must be a tuple of core.StandIn")
        if self.config.model_config.get("extra") != "forbid":
            raise PluginError(
                f"{where}: config model {self.config.__qualname__} accepts unknown keys",
                hint='set model_config = ConfigDict(extra="forbid", frozen=True) so typos in registry files are caught',
            )

    def build(self, config: BaseModel) -> Any:
        """Call the factory on an already validated config instance."""
        return self.factory(config)
