"""`scheduler_from_diffusers`: a diffusers `scheduler_config.json` → the equivalent diffstack scheduler.

Config keys are diffusers' own names (docs/architecture.md), so most map one to one. Keys diffusers has and diffstack
does not are accepted at the value where they change nothing (`INERT`) and refused otherwise; keys neither
knows are reported in one warning. Which scheduler a diffusers class becomes is each scheduler plugin's own
declaration (`ComponentSpec.stands_in_for`, `core.StandIn`): `lms` also stands in for `PNDMScheduler`, with a
logged note. The scheduler is built through the plugin manager, like any other component.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from core.errors import ConfigError
from core.plugin_manager import PluginManager

log = logging.getLogger(__name__)

CONFIG_NAME = "scheduler_config.json"

# diffusers keys diffstack has no field for, at the value where they change nothing
INERT: dict[str, Any] = {
    "algorithm_type": "dpmsolver++",
    "clip_sample": False,
    "final_sigmas_type": "zero",
    "flow_shift": 1.0,
    "interpolation_type": "linear",
    "lambda_min_clipped": -math.inf,
    "rescale_betas_zero_snr": False,
    "sigma_max": None,
    "sigma_min": None,
    "thresholding": False,
    "time_shift_type": "exponential",
    "timestep_type": "discrete",
    "use_beta_sigmas": False,
    "use_dynamic_shifting": False,
    "use_exponential_sigmas": False,
    "use_flow_sigmas": False,
    "use_karras_sigmas": False,
    "use_lu_lambdas": False,
    "variance_type": None,
}


def scheduler_from_diffusers(
    config_or_path: dict[str, Any] | str | Path, *, plugins: PluginManager | None = None
) -> Any:
    """Build the diffstack scheduler a diffusers scheduler config describes.

    config_or_path: the config as a dict, a `scheduler_config.json`, a folder holding one, or a diffusers
    model folder (its `scheduler/` subfolder is used). plugins: the manager to build with (default: a fresh
    `PluginManager.discover()`). Raises `core.ConfigError` for an unknown class or an unsupported value.
    """
    config, source = _read(config_or_path)
    class_name = config.get("_class_name")
    manager = plugins or PluginManager.discover()
    stand_ins = {
        stand_in.class_name: (name, stand_in)
        for name in manager.names("scheduler")
        for stand_in in manager.get("scheduler", name).spec.stands_in_for
    }
    if class_name not in stand_ins:
        raise ConfigError(
            f"{source}: _class_name {class_name!r} is not a scheduler diffstack can build",
            hint=f"supported (the schedulers' `stands_in_for`): {', '.join(sorted(stand_ins))}",
        )
    name, stand_in = stand_ins[class_name]
    spec = manager.get("scheduler", name).spec
    values = dict(stand_in.defaults)
    unknown, unsupported = [], []
    for key, value in config.items():
        if key.startswith("_") or key in stand_in.dropped:
            continue
        if key in spec.config.model_fields:
            values[key] = value
        elif key not in INERT:
            unknown.append(key)
        elif value != INERT[key]:
            unsupported.append(f"{key}={value!r} (diffstack's {name!r} supports only {INERT[key]!r})")
    if unsupported:
        raise ConfigError(f"{source}: {class_name} options diffstack does not support: " + "; ".join(unsupported))
    if stand_in.note is not None:
        log.warning("%s: %s", source, stand_in.note)
    if unknown:
        log.warning("%s: ignoring keys %s has no use for: %s", source, class_name, ", ".join(sorted(unknown)))
    try:
        validated = spec.config.model_validate(values)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"{source}: {class_name} config is invalid for diffstack's {name!r}: {problems}") from None
    return spec.build(validated)


def _read(config_or_path: dict[str, Any] | str | Path) -> tuple[dict[str, Any], str]:
    """The config dict and a name for it in messages."""
    if isinstance(config_or_path, dict):
        return config_or_path, "scheduler config"
    path = Path(config_or_path)
    for candidate in (path, path / CONFIG_NAME, path / "scheduler" / CONFIG_NAME):
        if candidate.is_file():
            try:
                config = json.loads(candidate.read_text(encoding="utf-8"))
            except (OSError, ValueError, RecursionError) as exc:
                raise ConfigError(f"{candidate}: not a readable JSON file: {str(exc)[:200]}") from None
            if not isinstance(config, dict):
                raise ConfigError(f"{candidate}: holds a JSON {type(config).__name__}, not an object")
            return config, str(candidate)
    raise ConfigError(
        f"{path}: no {CONFIG_NAME} found",
        hint=f"pass the file, the folder holding it, or a diffusers model folder with scheduler/{CONFIG_NAME}",
    )
