"""core holds no model-specific checkpoint names (issue 14): the layouts, module names and key maps of a model
family live in its plugins (`core.CheckpointLayout`, `TrainableAutoencoder`, `StandIn`)."""

from __future__ import annotations

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
