"""Plugin code runs contained: nothing it raises escapes as anything but a diffstack error.

A plugin's import, hooks, factories and parts may raise anything, `SystemExit` and `KeyboardInterrupt`
included (a `sys.exit(0)` in a plugin must not end `diffstack generate` with exit 0 and no image). Where
diffstack calls plugin code it lets a `DiffstackError` through and turns every other exception into a
`PluginError` naming the plugin and the phase (`contained`, or `is_plugin_failure` where the caller reports
the failure itself). One exception passes: a real Ctrl-C. The CLI counts SIGINTs while it runs
(`tracking_interrupts`), so a `KeyboardInterrupt` without a SIGINT behind it is the plugin's own; a library
caller that does not track interrupts keeps every `KeyboardInterrupt` as it is.

A pipeline run calls five parts that call each other (the sampler calls the scheduler and the denoiser), so
its failures are attributed afterwards (`attributed`): the culprit is the innermost traceback frame whose
`self` is one of the run's parts. The caller's own step callback is not plugin code: `CallbackFailed` carries
its exceptions past the sampler, untouched.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from types import FrameType

import torch
from pydantic import ValidationError

from core.errors import DiffstackError, PluginError
from core.validation import describe_errors

_sigints: int | None = None
"""SIGINTs and SIGTERMs received while `tracking_interrupts` is active; None when nobody tracks them."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that the same clean-up runs (no temp file is left behind)."""


@contextmanager
def tracking_interrupts() -> Iterator[None]:
    """Count real SIGINTs (Ctrl-C) while the block runs, each raising KeyboardInterrupt as usual, and turn
    SIGTERM into `Terminated`."""
    global _sigints
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_signal(signum: int, frame: FrameType | None) -> None:
        global _sigints
        _sigints = (_sigints or 0) + 1
        raise Terminated if signum == signal.SIGTERM else KeyboardInterrupt

    previous = {number: signal.signal(number, on_signal) for number in (signal.SIGINT, signal.SIGTERM)}
    _sigints = 0
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        _sigints = None


def is_real_interrupt(exc: BaseException) -> bool:
    """A KeyboardInterrupt with a SIGINT behind it, or any KeyboardInterrupt while nobody tracks SIGINTs."""
    return isinstance(exc, KeyboardInterrupt) and _sigints != 0


def is_plugin_failure(exc: BaseException) -> bool:
    """Whether `exc`, raised inside plugin code, is that plugin's failure: anything but a DiffstackError (already
    a clear message) and a real Ctrl-C."""
    return not isinstance(exc, DiffstackError) and not is_real_interrupt(exc)


def summary(exc: BaseException) -> str:
    """`Type: first line of the message` (300 characters at most); `SystemExit: sys.exit(0)` for an exit; every
    field of a pydantic ValidationError."""
    if isinstance(exc, SystemExit):
        return f"SystemExit: sys.exit({exc.code!r})"
    if isinstance(exc, ValidationError):  # its first line only says how many errors: show them
        return f"ValidationError of {exc.title}: {'; '.join(describe_errors(exc))}"[:600]
    detail = (str(exc).splitlines() or [""])[0][:300]
    return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__


@contextmanager
def contained(what: str, *, hint: str | None = None) -> Iterator[None]:
    """Run plugin code; a failure (`is_plugin_failure`) leaves as `PluginError("{what} raised …")`."""
    try:
        yield
    except BaseException as exc:
        if not is_plugin_failure(exc):
            raise
        raise PluginError(f"{what} raised {summary(exc)}", hint=hint) from exc


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
