"""core is the plumbing: it never imports the `plugins` package (the built-ins are entry points like anyone's)."""

from __future__ import annotations

import ast
from pathlib import Path

CORE = Path(__file__).resolve().parents[2] / "core"


def test_no_module_of_core_imports_plugins():
    offenders = []
    for path in sorted(CORE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [
                f"{path.relative_to(CORE.parent)}:{node.lineno}" for n in names if n.split(".")[0] == "plugins"
            ]
    assert offenders == []
