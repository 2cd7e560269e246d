"""The registry file: search order, two-pass validation with every problem reported, lazy shared builds."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest
import torch

import core
from core import InputError, RegistryError, WeightsError
from core.cli import main
from core.registry import find_registry

PARTS = Path(__file__).with_name("registry_parts.py")

GOOD = """
version: 1
plugins: [registry_parts]
components:
  enc: {kind: encoder, plugin: part-encoder}
  den: {kind: denoiser, plugin: part-denoiser, config: {context_dim: 8}}
  txt: {kind: text, plugin: part-text}
pipelines:
  first:
    encoder: enc
    denoiser: den
    text: txt
    scheduler: {plugin: part-scheduler, config: {eta: 0.5}}
    sampler: {plugin: part-sampler}
    defaults: {height: 64, width: 64, steps: 20}
  second:
    encoder: enc
    denoiser: den
    text: txt
    scheduler: {plugin: part-scheduler}
    sampler: {plugin: part-sampler}
default_pipeline: first
"""

THREE_MISTAKES = """
version: 1
plugins: [registry_parts]
components:
  enc: {kind: encoder, plugin: part-encodr}
  den: {kind: denoiser, plugin: part-denoiser, config: {context_dim: wide}}
  txt: {kind: text, plugin: part-text}
pipelines:
  first:
    encoder: {plugin: part-encoder}
    denoiser: den
    text: text
    scheduler: {plugin: part-scheduler}
    sampler: {plugin: part-sampler}
"""


@pytest.fixture
def write_registry(tmp_path: Path):
    def write(text: str, name: str = "registry.yaml") -> Path:
        shutil.copy(PARTS, tmp_path / PARTS.name)
        path = tmp_path / name
        path.write_text(textwrap.dedent(text))
        return path

    return write


def test_valid_registry_loads_without_building_anything(write_registry):
    registry = core.load_registry(write_registry(GOOD))
    assert registry.pipeline_names == ["first", "second"]
    assert registry.component_names == ["enc", "den", "txt"]
    assert registry.default_pipeline == "first"
    assert registry.plugin_manager.hook_manager.get_plugin("registry_parts").BUILT == []


def test_three_independent_mistakes_are_all_reported_with_paths(write_registry):
    with pytest.raises(RegistryError) as caught:
        core.load_registry(write_registry(THREE_MISTAKES))
    problems = caught.value.problems
    assert len(problems) == 3, problems
    assert problems[0].startswith("components -> enc -> plugin: no encoder plugin named 'part-encodr'")
    assert "did you mean 'part-encoder'" in problems[0]
    assert problems[1].startswith("components -> den -> config -> context_dim: Input should be a valid integer")
    assert "'wide'" in problems[1]
    assert problems[2].startswith("pipelines -> first -> text: no component named 'text' (did you mean 'txt'?)")


def test_validate_command_prints_all_problems_and_exits_2(write_registry, capsys):
    path = write_registry(THREE_MISTAKES)
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "3 problems found" in err
    for fragment in (
        "components -> enc -> plugin",
        "components -> den -> config -> context_dim",
        "pipelines -> first -> text",
    ):
        assert fragment in err
    assert "Traceback" not in err


def test_validate_command_accepts_a_good_file(write_registry, capsys):
    assert main(["validate", str(write_registry(GOOD))]) == 0
    assert "3 components, 2 pipelines, default: first" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("version: 2\npipelines: {}\n", "version: Input should be 1"),
        ("version: 1\npipeline: {}\n", "pipeline: Extra inputs are not permitted"),
        ("version: 1\ncomponents: {x: {kind: encoder}}\n", "components -> x -> plugin: Field required"),
        ("version: 1\ncomponents: {x: {kind: vae, plugin: a}}\n", "components -> x -> kind: Input should be 'encoder'"),
        ("version: 1\nplugins: [no_such_module_xyz]\n", "plugins -> 0: plugin module 'no_such_module_xyz'"),
        ("version: 1\ndefault_pipeline: sd15\n", "default_pipeline: no pipeline named 'sd15'"),
    ],
)
def test_envelope_problems_name_their_path(write_registry, text, expected):
    with pytest.raises(RegistryError) as caught:
        core.load_registry(write_registry(text))
    assert any(problem.startswith(expected) for problem in caught.value.problems), caught.value.problems


def test_slot_naming_a_component_of_another_kind(write_registry):
    text = GOOD.replace(
        "    encoder: enc\n    denoiser: den\n    text: txt\n"
        "    scheduler: {plugin: part-scheduler, config: {eta: 0.5}}",
        "    encoder: den\n    denoiser: den\n    text: txt\n"
        "    scheduler: {plugin: part-scheduler, config: {eta: 0.5}}",
    )
    with pytest.raises(
        RegistryError,
        match="pipelines -> first -> encoder: component 'den' is a denoiser, not an encoder; encoder components: enc",
    ):
        core.load_registry(write_registry(text))


def test_invalid_yaml_names_the_line(write_registry):
    with pytest.raises(RegistryError, match=r"invalid YAML at line 3"):
        core.load_registry(write_registry("version: 1\ncomponents:\n  a: b: c\n"))
    with pytest.raises(RegistryError, match="top level must be a mapping"):
        core.load_registry(write_registry("- just\n- a list\n"))


def test_search_order(write_registry, tmp_path, monkeypatch):
    explicit = write_registry(GOOD, "explicit.yaml")
    from_env = write_registry(GOOD, "env.yaml")
    local = write_registry(GOOD)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DIFFSTACK_REGISTRY", str(from_env))
    assert find_registry(explicit) == explicit
    assert find_registry() == from_env
    monkeypatch.delenv("DIFFSTACK_REGISTRY")
    assert find_registry().resolve() == local.resolve()
    monkeypatch.chdir(tmp_path.parent)
    bundled = find_registry()
    assert bundled.name == "registry.yaml" and bundled.parent != tmp_path
    with pytest.raises(RegistryError, match="registry file not found"):
        find_registry(tmp_path / "missing.yaml")
    monkeypatch.setenv("DIFFSTACK_REGISTRY", str(tmp_path / "missing.yaml"))
    with pytest.raises(RegistryError, match=r"\$DIFFSTACK_REGISTRY"):
        find_registry()


def test_bundled_registry_validates():
    registry = core.load_registry(find_registry.__globals__["bundled_registry_path"]())
    assert registry.default_pipeline is None or registry.default_pipeline in registry.pipeline_names


def test_build_places_parts_and_shares_named_components(write_registry):
    registry = core.load_registry(write_registry(GOOD))
    first = registry.build(device="cpu", dtype="bfloat16")
    second = registry.build("second", device="cpu", dtype="bfloat16")
    assert first.name == "first" and first.defaults.steps == 20
    assert first.device == torch.device("cpu") and first.dtype == torch.bfloat16
    assert first.denoiser is second.denoiser and first.encoder is second.encoder
    assert first.scheduler is not second.scheduler
    assert first.scheduler.config.eta == 0.5
    assert next(first.denoiser.parameters()).dtype == torch.bfloat16
    assert not first.denoiser.training and not next(first.denoiser.parameters()).requires_grad
    float_pipe = registry.build("first", device="cpu")
    assert float_pipe.dtype == torch.float32 and float_pipe.denoiser is not first.denoiser
    built = registry.plugin_manager.hook_manager.get_plugin("registry_parts").BUILT
    assert sorted(built) == sorted(["encoder", "denoiser", "text"] * 2 + ["plain"] * 6)


def test_build_errors_are_specific(write_registry):
    registry = core.load_registry(write_registry(GOOD))
    with pytest.raises(RegistryError, match=r"no pipeline named 'frist' \(did you mean 'first'\?\)"):
        registry.build("frist", device="cpu")
    with pytest.raises(InputError, match="unknown dtype 'float8'"):
        registry.build(device="cpu", dtype="float8")
    with pytest.raises(InputError, match="unknown device"):
        registry.build(device="toaster")


def test_parts_that_do_not_fit_are_a_clear_error(write_registry):
    text = GOOD.replace("config: {context_dim: 8}", "config: {context_dim: 16, in_channels: 3}")
    registry = core.load_registry(write_registry(text))
    with pytest.raises(RegistryError) as caught:
        registry.build(device="cpu")
    assert "denoiser takes 3 latent channels but the encoder makes 4" in str(caught.value)
    assert "16-wide context but the text conditioner makes 8-wide" in str(caught.value)


def test_weights_variable_is_expanded_only_when_built(write_registry, tmp_path, monkeypatch):
    text = GOOD.replace(
        "den: {kind: denoiser, plugin: part-denoiser, config: {context_dim: 8}}",
        "den: {kind: denoiser, plugin: part-denoiser, "
        "weights: {path: '${TEST_WEIGHTS}/den.safetensors', format: native}}",
    )
    monkeypatch.delenv("TEST_WEIGHTS", raising=False)
    registry = core.load_registry(write_registry(text))
    with pytest.raises(RegistryError, match=r"uses \$\{TEST_WEIGHTS\}, which is not set"):
        registry.build(device="cpu")
    monkeypatch.setenv("TEST_WEIGHTS", str(tmp_path / "nowhere"))
    with pytest.raises(WeightsError, match="weights not found"):
        registry.build(device="cpu")


def test_native_weights_load_relative_to_the_registry(write_registry, tmp_path):
    reference = torch.nn.Linear(4, 4)
    (tmp_path / "weights").mkdir()
    core.weights.save_state_dict(
        {f"proj.{k}": v for k, v in reference.state_dict().items()}, tmp_path / "weights/den.safetensors"
    )
    text = GOOD.replace(
        "den: {kind: denoiser, plugin: part-denoiser, config: {context_dim: 8}}",
        "den: {kind: denoiser, plugin: part-denoiser, weights: weights/den.safetensors}",
    )
    pipe = core.load_registry(write_registry(text)).build(device="cpu")
    assert torch.equal(pipe.denoiser.proj.weight, reference.weight)


def test_inline_config_errors_in_pipelines_are_found(write_registry):
    text = GOOD.replace("{plugin: part-scheduler, config: {eta: 0.5}}", "{plugin: part-scheduler, config: {etta: 0.5}}")
    with pytest.raises(RegistryError) as caught:
        core.load_registry(write_registry(text))
    assert caught.value.problems == [
        "pipelines -> first -> scheduler -> config -> etta: Extra inputs are not permitted (got 0.5) "
        "(did you mean 'eta'?)"
    ]


def test_validate_deep_checks_names_and_shapes_without_reading_tensor_data(
    write_registry, tmp_path, capsys, monkeypatch
):
    (tmp_path / "weights").mkdir()
    text = GOOD.replace(
        "den: {kind: denoiser, plugin: part-denoiser, config: {context_dim: 8}}",
        "den: {kind: denoiser, plugin: part-denoiser, weights: weights/den.safetensors}",
    )
    path = write_registry(text)
    monkeypatch.setattr(core.weights.CheckpointState, "__getitem__", lambda *a: pytest.fail("tensor data was read"))
    for out_features, expected in ((4, 0), (5, 2)):
        state = {f"proj.{k}": v for k, v in torch.nn.Linear(4, out_features).state_dict().items()}
        core.weights.save_state_dict(state, tmp_path / "weights/den.safetensors")
        assert main(["validate", str(path)]) == 0  # without --deep no checkpoint is opened
        assert main(["validate", "--deep", str(path)]) == expected
    err = capsys.readouterr().err
    assert "component 'den': checkpoint" in err and "proj.weight: checkpoint (5, 4) vs model (4, 4)" in err


def test_the_former_single_file_format_name_still_reads_as_single_file() -> None:
    from core.registry_schema import WeightsRef

    assert WeightsRef(path="sd.safetensors", format="sd1-single-file").format == "single-file"
