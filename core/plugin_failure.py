"""Naming the plugin behind an exception a pipeline run raised, so a user sees whose bug it is.

A run calls five parts, and each calls the others (the sampler calls the scheduler and the denoiser), so the
culprit is read off the traceback: the innermost frame whose `self` is one of the run's parts. Exceptions
from the caller's own step callback pass through untouched (`CallbackFailed` carries them past the sampler);
a `diffstack_step_end` hook that raises is named by the plugin manager (`PluginManager.call_each`).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from core.containment import summary
from core.errors import DiffstackError, PluginError

Part = tuple[str, object]
"""(plugin name, the object the pipeline built from it), keyed by kind."""


class CallbackFailed(Exception):
    """Carries an exception raised by the caller's step callback out of the sampler."""

    def __init__(self, error: Exception) -> None:
        super().__init__(error)
        self.error = error


def culprit(exc: BaseException, parts: Mapping[str, Part]) -> tuple[str, str] | None:
    """(kind, plugin name) of the innermost traceback frame whose `self` is one of `parts`, or None."""
    found = None
    frame = exc.__traceback__
    while frame is not None:
        owner = frame.tb_frame.f_locals.get("self")
        found = next(((kind, name) for kind, (name, part) in parts.items() if part is owner), found)
        frame = frame.tb_next
    return found


def attributed(exc: BaseException, pipeline: str, parts: Mapping[str, Part]) -> DiffstackError:
    """The diffstack error to raise for `exc` (any exception, `SystemExit` included), escaped from a run of
    `pipeline`: a PluginError naming the part whose code raised it, or a DiffstackError saying memory ran out."""
    if isinstance(exc, (MemoryError, torch.OutOfMemoryError)):
        return DiffstackError(
            f"pipeline {pipeline!r} ran out of memory: {summary(exc)}",
            hint="generate fewer images at once (--num-images), smaller (--height/--width), or in float16",
        )
    found = culprit(exc, parts)
    where = f"pipeline {pipeline!r}" if found is None else f"{found[0]} plugin {found[1]!r} of pipeline {pipeline!r}"
    check = "" if found is None else f"`diffstack check {found[0]}/{found[1]} [--registry FILE]` runs its contract; "
    return PluginError(
        f"{where} raised {summary(exc)}",
        hint=f"a bug in the plugin or an input it cannot handle; {check}`diffstack --debug …` shows the traceback",
    )
