"""Contract suite for `core.TextConditioner`: output shape, empty / over-long / unicode prompts, determinism.

A truncation warning may come through `warnings.warn` or a logging record at WARNING or above; both are
captured. Modules are put in eval mode and called under `torch.inference_mode()`, as pipelines do. A conditioner
returning a `core.Conditioning` is held to the same checks for its context and for each added output it declares
(`added_outputs`).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from core.conditioning import added_outputs
from core.contracts.base import (
    Contract,
    assert_close,
    assert_equal,
    assert_finite,
    capture_warnings,
    evaluated,
    module_dtype,
)
from core.interfaces import Conditioning

UNICODE_PROMPTS = ["café crème brûlée", "東京の夜景、雨", "🚀🎨✨ a rocket 👩‍🚀", "Ünïcödé ∑ ≠ ∞ — “quotes”"]


class TextConditionerContract(Contract):
    """Checks for a `core.TextConditioner`. Override `prompts` if needed."""

    kind = "text"
    prompts: ClassVar[list[str]] = ["a red circle on a blue background", "a cat", "two small green squares"]

    @staticmethod
    def embed(component: Any, prompts: list[str]) -> torch.Tensor:
        with torch.inference_mode():
            return evaluated(component)(prompts)

    @staticmethod
    def outputs(component: Any, embeddings: Any) -> dict[str, Any]:
        """The context and each added output, by name (`context` first): what every check looks at."""
        if isinstance(embeddings, Conditioning):
            return {"context": embeddings.context, **embeddings.added}
        assert not added_outputs(component), (
            f"added_outputs declares {sorted(added_outputs(component))} but the conditioner returned a bare "
            f"{type(embeddings).__name__}; return a core.Conditioning holding them"
        )
        return {"context": embeddings}

    def assert_embeddings(self, component: Any, embeddings: Any, batch: int, what: str) -> None:
        outputs = self.outputs(component, embeddings)
        shapes = {"context": (component.max_length, component.embedding_dim), **added_outputs(component)}
        assert set(outputs) == set(shapes), f"{what}: outputs {sorted(outputs)}, declared {sorted(shapes)}"
        for name, value in outputs.items():
            expected, part = (batch, *shapes[name]), f"{what}, {name}"
            assert isinstance(value, torch.Tensor), f"{part}: got {type(value).__name__}, expected a tensor"
            shape, dtype = tuple(value.shape), value.dtype
            assert shape == expected, f"{part}: shape {shape}, expected {expected}"
            assert dtype == module_dtype(component), (
                f"{part}: dtype {dtype}, expected the module's {module_dtype(component)}"
            )
            assert_finite(value, part)

    def test_attributes(self, component: Any) -> None:
        """`max_length` and `embedding_dim` are ints >= 1; `added_outputs`, when present, maps names other than
        `context` to per-sample shapes (tuples of ints >= 1)."""
        for name in ("max_length", "embedding_dim"):
            value = getattr(component, name, None)
            assert isinstance(value, int) and value >= 1, f"{name} must be an int >= 1, got {value!r}"
        declared = getattr(component, "added_outputs", None) or {}
        assert isinstance(declared, dict) and all(
            isinstance(name, str) and name != "context" and isinstance(shape, tuple)
            and all(isinstance(n, int) and n >= 1 for n in shape)
            for name, shape in declared.items()
        ), f"added_outputs must map names to tuples of ints >= 1, got {declared!r}"  # fmt: skip

    def test_output_shape(self, component: Any) -> None:
        """B prompts give finite embeddings (B, max_length, embedding_dim) in the module's dtype.
        Pad every prompt to `max_length`, not to the longest prompt of the batch."""
        self.assert_embeddings(component, self.embed(component, self.prompts), len(self.prompts), "embeddings")

    def test_empty_prompt(self, component: Any) -> None:
        """The empty prompt gives finite embeddings (1, max_length, embedding_dim) in the module's dtype.
        Checked alone and in a batch with another prompt; it must not raise."""
        self.assert_embeddings(component, self.embed(component, [""]), 1, "embedding of ''")
        self.assert_embeddings(component, self.embed(component, ["", self.prompts[0]]), 2, "embeddings of ['', …]")

    def test_long_prompt_truncated_with_warning(self, component: Any) -> None:
        """A prompt of 4·max_length words gives embeddings (1, max_length, embedding_dim) and a warning.
        Truncate to `max_length` tokens and say so with `warnings.warn` or a logging warning; never raise."""
        prompt = " ".join(["word"] * (4 * component.max_length))
        with capture_warnings() as messages:
            embeddings = self.embed(component, [prompt])
        self.assert_embeddings(component, embeddings, 1, f"embedding of a {4 * component.max_length}-word prompt")
        assert messages, (
            f"a prompt of {4 * component.max_length} words (max_length {component.max_length}) was truncated "
            "silently; warn with warnings.warn or a logging warning"
        )

    def test_unicode_and_emoji(self, component: Any) -> None:
        """Prompts with accents, CJK, emoji and math symbols give finite embeddings (B, max_length, embedding_dim).
        Their dtype is the module's. The tokenizer must take any Unicode text; an ASCII-only one fails here."""
        embeddings = self.embed(component, UNICODE_PROMPTS)
        self.assert_embeddings(component, embeddings, len(UNICODE_PROMPTS), f"embeddings of {UNICODE_PROMPTS}")

    def test_deterministic(self, component: Any) -> None:
        """Two calls on the same prompts give bitwise-equal embeddings (and added outputs).
        No sampling and no state kept between calls; modules run in eval mode."""
        first = self.outputs(component, self.embed(component, self.prompts))
        second = self.outputs(component, self.embed(component, self.prompts))
        for name, value in first.items():
            assert_equal(second[name], value, f"{name} of two identical calls")

    def test_batch_independence(self, component: Any) -> None:
        """Each prompt's embedding in a batch matches its single-prompt run within atol 1e-5, rtol 1e-4.
        Pad to `max_length`, not to the longest prompt, and mix nothing across the batch."""
        batch = self.outputs(component, self.embed(component, self.prompts))
        for i, prompt in enumerate(self.prompts):
            single = self.outputs(component, self.embed(component, [prompt]))
            for name, value in batch.items():
                assert_close(
                    value[i : i + 1],
                    single[name],
                    f"{name} of prompt {i} ({prompt!r}) in a batch against its single run",
                    atol=1e-5,
                    rtol=1e-4,
                )
