"""Fuzzing the untrusted text diffstack reads — registry files and PNG recipe chunks — with hypothesis, a bounded
number of examples per run: whatever the input, the only exceptions are diffstack's own errors."""

from __future__ import annotations

import copy
import string
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import core
from core import DiffstackError
from core.cli.generate import RECIPE_FIELDS
from core.recipe import parse_recipe
from core.registry import bundled_registry_path

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=-(10**400), max_value=10**400),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=30),
)  # fmt: skip
values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
)
BUNDLED = yaml.safe_load(bundled_registry_path().read_text())


def mutated(document: dict, path: list[str], value: object) -> dict:
    """`document` with the entry at `path` (keys, created as needed) set to `value`."""
    out = copy.deepcopy(document)
    node = out
    for key in path[:-1]:
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]
    node[path[-1]] = value
    return out


KEYS = st.sampled_from(["version", "extends", "plugins", "components", "pipelines", "default_pipeline", "x"])
PIPELINE_KEYS = st.sampled_from(["encoder", "scheduler", "sampler", "defaults", "limits", "weights", "performance"])


@FUZZ
@given(text=st.text(alphabet=string.printable + "&*!|>{}[]:-'\"\\é€", max_size=400))
def test_any_text_as_a_registry_file_is_a_registry_error_or_a_registry(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("fuzz") / "registry.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        core.load_registry(path)
    except DiffstackError:
        pass


@FUZZ
@given(key=KEYS, pipeline_key=PIPELINE_KEYS, value=values, deep=st.booleans())
def test_a_bundled_registry_with_one_value_changed_is_handled(tmp_path_factory, key, pipeline_key, value, deep):
    path_in = ["pipelines", "shapes-tiny", pipeline_key] if deep else [key]
    folder = tmp_path_factory.mktemp("fuzz")
    document = mutated(BUNDLED, path_in, value)
    text = yaml.safe_dump({**document, "extends": "bundled"} if deep else document, sort_keys=False)
    (folder / "registry.yaml").write_text(text)
    try:
        core.load_registry(folder / "registry.yaml")
    except DiffstackError:
        pass


GOOD_RECIPE = {
    "prompt": "a red circle", "negative_prompt": "", "seed": 3, "steps": 2, "guidance_scale": 5.0, "height": 64,
    "width": 64, "scheduler": "ddim", "scheduler_config": {}, "pipeline": "shapes-tiny", "num_images": 1,
    "strength": None, "diffstack_version": "0", "batch_seed": 3, "batch_size": 1, "batch_index": 0,
}  # fmt: skip


@FUZZ
@given(field=st.sampled_from([*GOOD_RECIPE, "grid", "registry", "extra"]), value=values)
def test_a_recipe_with_one_field_changed_parses_or_names_the_problem(field, value):
    try:
        recipe = parse_recipe({**GOOD_RECIPE, field: value}, "in.png")
    except DiffstackError as exc:
        assert str(exc).startswith("in.png: the recipe is not valid")
        return
    assert {name: getattr(recipe, name) for name in RECIPE_FIELDS}  # every field the CLI reads is there


def test_the_fuzzed_inputs_start_from_valid_ones(tmp_path: Path):
    (tmp_path / "registry.yaml").write_text(yaml.safe_dump(BUNDLED, sort_keys=False))
    assert core.load_registry(tmp_path / "registry.yaml").pipeline_names == ["shapes-tiny", "sd15", "sd21", "sdxl"]
    assert parse_recipe(GOOD_RECIPE, "in.png").seed == 3
