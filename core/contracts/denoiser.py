"""Contract suite for `core.Denoiser`: shapes, timestep forms, batch independence, weights round-trip, errors.

A denoiser declaring `added_inputs` gets a random (B, *shape) tensor for each in every check, and its
declaration, its `micro_conditioning` and a call missing an added input are checked too.

Modules are put in eval mode and called under `torch.inference_mode()`, as pipelines do. The weights
round-trip saves the state with `core.weights.save_state_dict`, perturbs a deep copy and loads the file back
with `core.weights.load_state_dict` + `load_into`: the copy must then give bit-identical output.
"""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path
from typing import Any, ClassVar, get_args

import torch

from core.conditioning import added_inputs, micro_conditioning
from core.contracts.base import (
    Contract,
    NotApplicable,
    assert_close,
    assert_equal,
    assert_finite,
    evaluated,
    expect_raises,
    randn,
)
from core.errors import DiffstackError
from core.interfaces import PredictionType
from core.weights import load_into, load_state_dict, save_state_dict


class DenoiserContract(Contract):
    """Checks for a `core.Denoiser`. Override the sizes or `timestep` (in [0, num_train_timesteps))."""

    kind = "denoiser"
    batch_size: ClassVar[int] = 2
    sample_size: ClassVar[tuple[int, int]] = (8, 8)
    context_length: ClassVar[int] = 5
    timestep: ClassVar[int] = 500

    def inputs(self, component: Any, batch: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """A (sample, context) pair of `batch` items in float32."""
        sample = randn(batch, component.in_channels, *self.sample_size, seed=seed)  # (B, C, h, w)
        context = randn(batch, self.context_length, component.context_dim, seed=seed + 1)  # (B, L, D)
        return sample, context

    @staticmethod
    def added(component: Any, batch: int, seed: int = 0) -> dict[str, torch.Tensor]:
        """A random (batch, *shape) float32 tensor for each added input the denoiser declares."""
        shapes = added_inputs(component)
        return {name: randn(batch, *shape, seed=seed + 2 + i) for i, (name, shape) in enumerate(shapes.items())}

    def predict(
        self, component: Any, sample: torch.Tensor, timestep: Any, context: torch.Tensor, **added: torch.Tensor
    ) -> torch.Tensor:
        """The denoiser's output, with its added inputs (random ones for the batch unless given)."""
        given = {name: value[: len(sample)] for name, value in self.added(component, 3).items()} | added
        with torch.inference_mode():
            return evaluated(component)(sample, timestep, context, **given)

    def test_attributes(self, component: Any) -> None:
        """`in_channels`, `context_dim` are ints >= 1; `prediction_type` is "epsilon", "v_prediction" or "sample"."""
        for name in ("in_channels", "context_dim"):
            value = getattr(component, name, None)
            assert isinstance(value, int) and value >= 1, f"{name} must be an int >= 1, got {value!r}"
        choices = get_args(PredictionType)
        prediction_type = getattr(component, "prediction_type", None)
        assert prediction_type in choices, f"prediction_type must be one of {choices}, got {prediction_type!r}"

    def test_output_shape_and_dtype(self, component: Any) -> None:
        """The output is a finite tensor with the shape (B, in_channels, h, w) and dtype of the sample."""
        sample, context = self.inputs(component, self.batch_size)
        out = self.predict(component, sample, self.timestep, context)
        assert isinstance(out, torch.Tensor), f"the denoiser returned {type(out).__name__}, expected a tensor"
        got, expected = (tuple(out.shape), out.dtype), (tuple(sample.shape), sample.dtype)
        assert got == expected, f"output is {got}, expected the sample's {expected}"
        assert_finite(out, "output")

    def test_timestep_forms_agree(self, component: Any) -> None:
        """A timestep as float, 0-d or (B,) long or float tensor gives the int's output within atol 1e-5, rtol 1e-4.
        Read every form as a step in [0, num_train_timesteps); do not rescale floats as if they were in [0, 1]."""
        sample, context = self.inputs(component, self.batch_size)
        t, batch = self.timestep, self.batch_size
        forms = {
            "int": t,
            "float": float(t),
            "0-d long tensor": torch.tensor(t),
            "0-d float tensor": torch.tensor(float(t)),
            "(B,) long tensor": torch.full((batch,), t),
            "(B,) float tensor": torch.full((batch,), float(t)),
        }
        reference = self.predict(component, sample, t, context)
        for name, timestep in forms.items():
            assert_close(
                self.predict(component, sample, timestep, context),
                reference,
                f"timestep as {name} against a Python int",
                atol=1e-5,
                rtol=1e-4,
            )

    def test_batch_independence(self, component: Any) -> None:
        """Each item of a batch of 3 with its own (B,) timestep predicts as on its own, within atol 1e-5, rtol 1e-4.
        Use timestep i for item i and mix nothing across the batch (batch statistics, means over dim 0)."""
        sample, context = self.inputs(component, 3)
        timesteps = torch.tensor([self.timestep // 4, self.timestep, self.timestep + self.timestep // 2])
        added = self.added(component, 3)
        batch = self.predict(component, sample, timesteps, context, **added)
        for i in range(3):
            one = {name: value[i : i + 1] for name, value in added.items()}
            single = self.predict(component, sample[i : i + 1], timesteps[i : i + 1], context[i : i + 1], **one)
            assert_close(
                batch[i : i + 1], single, f"item {i} of a batch of 3 against its single run", atol=1e-5, rtol=1e-4
            )

    def test_safetensors_round_trip(self, component: Any) -> None:
        """A safetensors save of `state_dict()`, loaded into a perturbed copy, restores bitwise-identical output.
        Every parameter must be in `state_dict()`; not applicable when the denoiser is not a `torch.nn.Module`."""
        if not isinstance(component, torch.nn.Module):
            raise NotApplicable("the denoiser is not a torch.nn.Module, so it has no weights to save")
        sample, context = self.inputs(component, self.batch_size)
        expected = self.predict(component, sample, self.timestep, context)
        restored = copy.deepcopy(component)
        with torch.no_grad():  # move every parameter and every saved floating tensor (buffers included)
            for tensor in [*restored.parameters(), *restored.state_dict().values()]:
                if tensor.is_floating_point():
                    tensor.add_(0.5)
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "denoiser.safetensors"
            save_state_dict(component.state_dict(), path)
            load_into(restored, load_state_dict(path), component="denoiser", source=str(path))
        assert_equal(
            self.predict(restored, sample, self.timestep, context),
            expected,
            "output after a safetensors save / load into a perturbed copy",
        )

    def test_wrong_context_width_is_a_diffstack_error(self, component: Any) -> None:
        """A context (B, L, context_dim + 1) raises a `core.DiffstackError` (e.g. `core.InputError`).
        Check context.shape[-1] against `context_dim` before use rather than let torch fail on the shapes."""
        sample, _ = self.inputs(component, self.batch_size)
        context = randn(self.batch_size, self.context_length, component.context_dim + 1, seed=5)
        with expect_raises(DiffstackError, f"context of width {component.context_dim + 1} (context_dim + 1)"):
            self.predict(component, sample, self.timestep, context)

    def test_added_inputs_declared(self, component: Any) -> None:
        """`added_inputs`, when present, maps names to per-sample shapes (tuples of ints >= 1); `micro_conditioning`
        (height, width), when present, returns a tensor of the declared shape for each name, only declared ones."""
        declared = getattr(component, "added_inputs", None) or {}
        assert isinstance(declared, dict) and all(
            isinstance(name, str) and isinstance(shape, tuple) and all(isinstance(n, int) and n >= 1 for n in shape)
            for name, shape in declared.items()
        ), f"added_inputs must map names to tuples of ints >= 1, got {declared!r}"
        derived = micro_conditioning(component, 64, 96)
        for name, value in derived.items():
            assert name in declared, f"micro_conditioning gives {name!r}, which added_inputs does not declare"
            got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            assert got == declared[name], f"micro_conditioning's {name!r} is {got}, expected {declared[name]}"

    def test_missing_added_input_is_a_diffstack_error(self, component: Any) -> None:
        """A call without one of the declared added inputs raises a `core.DiffstackError` naming it.
        Not applicable to a denoiser that declares none."""
        declared = added_inputs(component)
        if not declared:
            raise NotApplicable("the denoiser declares no added inputs")
        sample, context = self.inputs(component, self.batch_size)
        name = next(iter(declared))
        others = {k: v for k, v in self.added(component, self.batch_size).items() if k != name}
        with expect_raises(DiffstackError, f"a call without the added input {name!r}"), torch.inference_mode():
            evaluated(component)(sample, self.timestep, context, **others)
