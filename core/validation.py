"""Turning pydantic validation errors into diffstack messages with their full path."""

from __future__ import annotations

from collections.abc import Iterable
from reprlib import Repr
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from core.errors import ConfigError
from core.registry_schema import REF_TAGS
from core.suggest import did_you_mean

Path = tuple[str | int, ...]


def path_text(path: Path) -> str:
    """`("pipelines", "sd15", "scheduler")` → `"pipelines -> sd15 -> scheduler"`."""
    return " -> ".join(str(p) for p in path)


MAX_SHOWN = 200
"""Characters of an offending value an error message shows."""


SHORT_REPR = Repr()
SHORT_REPR.maxlevel, SHORT_REPR.maxstring, SHORT_REPR.maxother = 3, MAX_SHOWN, MAX_SHOWN


def shown(value: Any) -> str:
    """`repr(value)` within `MAX_SHOWN` characters, never walking more than 3 levels of a nested value: a
    message stays short and quick whatever the input was."""
    text = SHORT_REPR.repr(value)
    return text if len(text) <= MAX_SHOWN else text[: MAX_SHOWN - 1] + "…"


def describe_errors(exc: ValidationError, prefix: Path = (), fields: Iterable[str] = ()) -> list[str]:
    """One line per error: `path -> field: message (got value)`, with a "did you mean" among `fields` (the
    model's own field names) for an unknown top-level key."""
    lines = []
    for error in exc.errors(include_url=False):
        loc = tuple(part for part in error["loc"] if part not in REF_TAGS)
        where = path_text(prefix + loc) or "(top level)"
        got = "" if error["type"] == "missing" else f" (got {shown(error['input'])})"
        guess = did_you_mean(str(loc[0]), fields) if error["type"] == "extra_forbidden" and len(loc) == 1 else ""
        lines.append(f"{where}: {error['msg']}{got}{guess}")
    return lines


Model = TypeVar("Model", bound=BaseModel)


def validate_config(model: type[Model], data: dict[str, Any], *, where: str) -> Model:
    """Validate `data` against a plugin's Config, raising ConfigError that lists every bad field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = describe_errors(exc, fields=model.model_fields)
        raise ConfigError(
            f"invalid config for {where}:\n" + "\n".join(f"  - {p}" for p in problems),
            hint=f"fields of {model.__qualname__}: {', '.join(model.model_fields)}",
        ) from None
