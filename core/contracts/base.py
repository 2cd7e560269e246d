"""What every contract suite is built from: the `Contract` base class and small pytest-free check helpers.

A contract is a plain class whose checks are methods named `test_*` taking `(self, component)`. pytest
runs them when a `Test*` class subclasses the contract and provides a `component` fixture; the runner
(`core.contracts.run_contract`) calls them directly. A failed check raises `AssertionError` with a message
that says what was expected and what was found; a check that does not apply to the component raises
`NotApplicable` (a `unittest.SkipTest`, so pytest reports it as skipped without importing pytest here).
"""

from __future__ import annotations

import logging
import unittest
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

import torch


class NotApplicable(unittest.SkipTest):
    """Raised by a check that does not apply to this component; the reason says why."""


class Contract:
    """Base of the contract suites. `kind` is the component kind the suite checks."""

    kind: ClassVar[str]

    @classmethod
    def check_names(cls) -> list[str]:
        """The names of the `test_*` checks, base classes' first, each in definition order."""
        names: list[str] = []
        for klass in reversed(cls.__mro__):
            for name, value in vars(klass).items():
                if name.startswith("test_") and callable(value) and name not in names:
                    names.append(name)
        return names


def generator(seed: int) -> torch.Generator:
    """A CPU generator seeded with `seed`."""
    return torch.Generator().manual_seed(seed)


def randn(*shape: int, seed: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A deterministic standard-normal CPU tensor."""
    return torch.randn(shape, generator=generator(seed), dtype=dtype)


def evaluated(component: Any) -> Any:
    """The component itself, switched to eval mode if it is a torch module (as pipelines do)."""
    if isinstance(component, torch.nn.Module):
        component.eval()
    return component


def module_dtype(component: Any) -> torch.dtype:
    """The floating dtype of a module's first floating parameter, else float32."""
    if isinstance(component, torch.nn.Module):
        for tensor in [*component.parameters(), *component.buffers()]:
            if tensor.is_floating_point():
                return tensor.dtype
    return torch.float32


def assert_close(actual: torch.Tensor, expected: torch.Tensor, what: str, *, atol: float, rtol: float = 0.0) -> None:
    """AssertionError naming `what`, the shapes and the largest difference unless the tensors match."""
    if actual.shape != expected.shape:
        raise AssertionError(f"{what}: shape {tuple(actual.shape)} differs from {tuple(expected.shape)}")
    actual, expected = actual.detach().double().cpu(), expected.detach().double().cpu()
    if not torch.allclose(actual, expected, atol=atol, rtol=rtol, equal_nan=False):
        diff = (actual - expected).abs().nan_to_num(float("inf"))
        raise AssertionError(
            f"{what}: largest difference {diff.max().item():.3g} (tolerance atol={atol:g}, rtol={rtol:g}) "
            f"at index {tuple(int(i) for i in torch.unravel_index(diff.argmax(), diff.shape))}"
        )


def assert_equal(actual: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    """AssertionError unless the tensors are bitwise equal (same shape, same values)."""
    assert_close(actual, expected, what, atol=0.0, rtol=0.0)


def assert_finite(tensor: torch.Tensor, what: str) -> None:
    """AssertionError if the tensor holds NaN or infinity."""
    if not bool(torch.isfinite(tensor).all()):
        raise AssertionError(f"{what}: contains NaN or infinity")


@contextmanager
def expect_raises(error: type[BaseException], what: str) -> Iterator[None]:
    """Fail unless the block raises `error` (or a subclass); name any other exception in the message."""
    try:
        yield
    except error:
        return
    except Exception as exc:
        raise AssertionError(
            f"{what}: expected {error.__module__}.{error.__qualname__}, got {type(exc).__name__}: {exc}"
        ) from exc
    raise AssertionError(f"{what}: expected {error.__module__}.{error.__qualname__}, nothing was raised")


class _Records(logging.Handler):
    def __init__(self, messages: list[str]) -> None:
        super().__init__(logging.WARNING)
        self.messages = messages

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextmanager
def capture_warnings() -> Iterator[list[str]]:
    """Collect, in a list, every `warnings.warn` message and every logging record at WARNING or above."""
    messages: list[str] = []
    handler = _Records(messages)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield messages
        messages.extend(str(w.message) for w in caught)
    finally:
        root.removeHandler(handler)
