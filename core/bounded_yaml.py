"""YAML with bounds: a registry file is untrusted input, so its expanded size, nesting and numbers have limits.

PyYAML's safe loader shares the node an alias points at, so a kilobyte "billion laughs" file loads fast and
then explodes in whatever walks it (validation, error messages). `load_bounded` counts, while composing, how
many nodes the document would have with every alias expanded, and its nesting depth, and refuses a document
over `MAX_NODES` or `MAX_DEPTH` with a `ValueError` naming the limit and the line; a number too long for
Python's int conversion is a `ValueError` too.
"""

from __future__ import annotations

from typing import Any

import yaml

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
