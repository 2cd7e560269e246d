"""YAML with bounds: a registry file is untrusted input, so its expanded size, nesting and numbers have limits.

PyYAML's safe loader shares the node an alias points at, so a kilobyte "billion laughs" file loads fast and
then explodes in whatever walks it (validation, error messages). `load_bounded` counts, while composing, how
many nodes the document would have with every alias expanded, and its nesting depth, and refuses a document
over `MAX_NODES` or `MAX_DEPTH` with a `ValueError` naming the limit and the line; a number too long for
Python's int conversion is a `ValueError` too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from core.errors import DiffstackError

MAX_NODES = 100_000
"""Scalars, sequences and mappings of the document with aliases expanded: a registry has a few hundred."""
MAX_DEPTH = 32
"""Nesting depth of mappings and sequences: a registry is about 5 deep."""


class BoundedLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` that stops past `MAX_NODES` expanded nodes or `MAX_DEPTH` levels of nesting."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.depth = 0
        self.expanded: dict[int, int] = {}  # id(node) → its node count with aliases expanded

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        mark = self.peek_event().start_mark
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                raise ValueError(f"nested more than {MAX_DEPTH} levels deep at line {mark.line + 1}")
            node = super().compose_node(parent, index)
        finally:
            self.depth -= 1
        if id(node) not in self.expanded:  # not an alias: count it with its children
            children = node.value if isinstance(node, yaml.SequenceNode) else []
            if isinstance(node, yaml.MappingNode):
                children = [part for pair in node.value for part in pair]
            self.expanded[id(node)] = 1 + sum(self.expanded[id(child)] for child in children)
        if self.expanded[id(node)] > MAX_NODES:
            raise ValueError(f"expands to more than {MAX_NODES} values (aliases, *name) at line {mark.line + 1}")
        return node


def load_bounded(text: str) -> Any:
    """The single YAML document in `text`, or `yaml.YAMLError` / `ValueError` (a limit, or a huge number)."""
    loader = BoundedLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def read_bounded(
    file: Path, *, what: str, keys: str, error: type[DiffstackError], max_bytes: int, hint: str
) -> dict[str, Any]:
    """The top-level mapping of YAML `file` (`what` it is: "a registry file"; `keys`: what its top level holds),
    read within `max_bytes` and `load_bounded`'s limits; anything wrong with it — too large, missing,
    unreadable, not UTF-8, invalid YAML, past a limit, not a mapping — is one `error` naming the file."""
    try:
        size = file.stat().st_size
        if size > max_bytes:
            raise error(f"{file}: {size} bytes is not {what} (the limit is {max_bytes})", hint=hint)
        raw = load_bounded(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise error(f"{file}: not found: no {what.removeprefix('a ')} here", hint=hint) from None
    except UnicodeDecodeError as exc:
        raise error(f"{file}: not UTF-8 text (byte {exc.start}): {what} is YAML", hint=hint) from None
    except (ValueError, RecursionError) as exc:
        raise error(f"{file}: refused: {str(exc)[:300]}", hint=hint) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise error(f"{file}: invalid YAML{where}: {problem}") from None
    except OSError as exc:
        raise error(f"{file}: cannot read {what} ({exc.strerror})") from None
    if not isinstance(raw, dict):
        raise error(f"{file}: the top level must be a mapping with {keys}", hint=hint)
    return raw
