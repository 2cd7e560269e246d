"""Swapping a pipeline's update rule (`--scheduler NAME`, `pipe(scheduler=NAME)`) without losing its settings.

The settings a pipeline *declares* for its scheduler (the config fields its registry entry or PNG recipe set:
noise schedule, spacing, `prediction_type`, `clip_sample`, thresholding, …) describe the model, so they carry
over to the new rule wherever it has a field of the same name. The new rule's other fields keep its own
defaults. A declared setting the new rule lacks, or a value it refuses (e.g. `solver_order: 4` for a rule
that allows at most 3), is dropped and named in one line, which the pipeline warns with (`core.errors.SwapWarning`).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError

from core.validation import validate_config


def carried_config(target: type[BaseModel], declared: dict[str, Any], *, rule: str) -> tuple[BaseModel, str | None]:
    """`target` (the new rule's Config) with every `declared` setting it has and accepts → (config, note).

    `note` is None when everything carried, else one line naming each dropped setting and why.
    """
    lacking = [key for key in declared if key not in target.model_fields]
    carried = {key: value for key, value in declared.items() if key in target.model_fields}
    refused: dict[str, str] = {}
    while True:
        try:
            config = target.model_validate(carried)
            break
        except ValidationError as exc:
            bad = {str(error["loc"][0]): error["msg"] for error in exc.errors(include_url=False) if error["loc"]}
            bad = {key: message for key, message in bad.items() if key in carried}
            if not bad:  # the rule refuses its own defaults: a plugin bug, reported as a config error
                validate_config(target, carried, where=f"scheduler {rule!r}")
            for key, message in bad.items():
                refused[key] = f"{key}={carried.pop(key)!r} ({message[:1].lower()}{message[1:]})"
    dropped = [f"{key}={declared[key]!r} (no such setting)" for key in lacking] + [
        f"{setting}, its default used" for setting in refused.values()
    ]
    if not dropped:
        return config, None
    return config, f"scheduler swap to {rule!r}: dropped the pipeline's {'; '.join(dropped)}"
