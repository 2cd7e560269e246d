"""`StandIn`: a component declares which class of another library it can replace, e.g. diffusers'
`DDIMScheduler`, so a diffusers folder's `scheduler_config.json` becomes the right diffstack scheduler
(`core.scheduler_from_diffusers`) without core knowing any scheduler by name."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class StandIn:
    """This component replaces `class_name` of another library.

    note: when it is an approximation, one line saying what differs (logged when it is used);
    dropped: that class's config keys whose meaning the stand-in cannot keep (dropped, with the note);
    defaults: that class's defaults that differ from the component's own Config defaults (applied first).
    """

    class_name: str
    note: str | None = None
    dropped: frozenset[str] = frozenset()
    defaults: Mapping[str, Any] = field(default_factory=dict)
