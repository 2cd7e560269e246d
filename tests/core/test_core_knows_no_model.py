"""core holds no model-specific checkpoint names (issue 14): the layouts, module names and key maps of a model
family live in its plugins (`core.CheckpointLayout`, `TrainableAutoencoder`, `StandIn`)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

CORE = Path(__file__).resolve().parents[2] / "core"
MODEL_NAMES = re.compile(
    r"down_blocks|up_blocks|quant_conv|text_model|diffusion_model|first_stage_model|cond_stage_model|conditioner\."
    r"|resblocks|in_proj"
)


def test_no_file_of_core_names_a_model_part():
    found = [
        f"{path.relative_to(CORE.parent)}:{number}: {line.strip()}"
        for path in sorted(CORE.rglob("*.py"))
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if MODEL_NAMES.search(line)
    ]
    assert found == []


SHAPES_MODEL = re.compile(r"^shapes$|\bshapes-[a-z]")
"""The shapes model's names as code would use them: its data set (`shapes`), its model and components
(`shapes-tiny`, `shapes-vae`, …). The English word "shapes" (tensor shapes) is neither."""
DEFAULT_MODEL = ("cli/train.py", "models/shapes-tiny")
"""The one mention allowed: `diffstack train`'s default --model-dir, where the embedded model's recipe lives."""


def strings_of_code(tree: ast.AST) -> list[ast.Constant]:
    """The string literals of `tree` that code uses: not its documentation (a string on its own as a statement)."""
    documentation = {
        id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
    }
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in documentation
    ]


def test_no_file_of_core_names_the_shapes_model_or_its_data_set():
    """Which model is trained, on which data set, comes from its recipe (models/shapes-tiny/recipe.yaml, issue
    14: "recipes live next to the model they train"), and which pipeline is built from the registry."""
    found = [
        f"{path.relative_to(CORE.parent)}:{node.lineno}: {node.value!r}"
        for path in sorted(CORE.rglob("*.py"))
        for node in strings_of_code(ast.parse(path.read_text(encoding="utf-8")))
        if SHAPES_MODEL.search(node.value) and (path.relative_to(CORE).as_posix(), node.value) != DEFAULT_MODEL
    ]
    assert found == []
