"""Every hostile case runs under an alarm: a hang fails that test (with the case named) instead of the CI job."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from types import FrameType

import pytest

CASE_SECONDS = 120


@pytest.fixture(autouse=True)
def no_hang() -> Iterator[None]:
    def on_alarm(signum: int, frame: FrameType | None) -> None:
        pytest.fail(f"hung: still running after {CASE_SECONDS} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(CASE_SECONDS)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
