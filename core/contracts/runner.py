"""Running a contract suite without pytest — what `diffstack check KIND/NAME` does.

`run_contract(kind, make_component)` calls every check of `CONTRACTS[kind]` on a fresh component from
`make_component()` and returns one `CheckResult` per check, in the suite's order — or a single failed result,
`builds`, when `make_component()` fails at all. A check passes when it
returns, fails on `AssertionError` (the message says what was expected and found) or any other exception,
and passes with a note when it does not apply (`NotApplicable`).
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from core.containment import is_real_interrupt, summary
from core.contracts.base import Contract, NotApplicable
from core.contracts.dataset import DatasetContract
from core.contracts.denoiser import DenoiserContract
from core.contracts.encoder import EncoderContract
from core.contracts.sampler import SamplerContract
from core.contracts.scheduler import SchedulerContract
from core.contracts.text import TextConditionerContract
from core.errors import DiffstackError, InputError

CONTRACTS: dict[str, type[Contract]] = {
    "encoder": EncoderContract,
    "denoiser": DenoiserContract,
    "scheduler": SchedulerContract,
    "text": TextConditionerContract,
    "sampler": SamplerContract,
    "dataset": DatasetContract,
}


BUILDS_RULE = (
    "The plugin's factory, called with an instance of its Config, returns the component: diffstack builds every "
    "part as factory(config). A constructor taking keyword arguments needs to accept that config object too."
)
"""The rule of the one result `run_contract` gives when the component cannot be built at all."""


@dataclass(frozen=True)
class CheckResult:
    """One check's outcome. name: the check (its method name without `test_`); detail: why it failed,
    or a note on a pass (e.g. "not applicable: …"); empty for a plain pass; rule: what the check demands and
    how to satisfy it (the check's docstring)."""

    name: str
    passed: bool
    detail: str = ""
    rule: str = ""


def run_contract(
    kind: str, make_component: Callable[[], Any], *, contract: type[Contract] | None = None
) -> list[CheckResult]:
    """Run every check of the suite for `kind` (or of `contract`, e.g. a subclass) on fresh components."""
    if contract is None:
        if kind not in CONTRACTS:
            raise InputError(f"no contract suite for kind {kind!r}", hint=f"use one of: {', '.join(CONTRACTS)}")
        contract = CONTRACTS[kind]
    if sys.flags.optimize:
        raise DiffstackError("contract checks are assert-based and python -O removes asserts", hint="run without -O")
    try:
        make_component()
    except BaseException as exc:
        if is_real_interrupt(exc):
            raise
        return [CheckResult("builds", False, f"building the component failed: {summary(exc)}", BUILDS_RULE)]
    suite = contract()
    return [_run_check(suite, name, make_component) for name in contract.check_names()]


def _run_check(suite: Contract, method: str, make_component: Callable[[], Any]) -> CheckResult:
    result = _outcome(suite, method, make_component)
    return replace(result, rule=inspect.getdoc(getattr(suite, method)) or "")


def _outcome(suite: Contract, method: str, make_component: Callable[[], Any]) -> CheckResult:
    name = method.removeprefix("test_")
    try:
        component = make_component()
    except Exception as exc:
        return CheckResult(name, False, f"building the component failed: {type(exc).__name__}: {exc}")
    try:
        getattr(suite, method)(component)
    except NotApplicable as exc:
        return CheckResult(name, True, f"not applicable: {exc}")
    except AssertionError as exc:
        return CheckResult(name, False, str(exc) or "assertion failed")
    except Exception as exc:
        return CheckResult(name, False, f"{type(exc).__name__}: {exc}")
    return CheckResult(name, True)
