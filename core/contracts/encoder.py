"""Contract suite for `core.Encoder`: latent shapes, decode range, determinism, reproducibility, size errors.

Images are (B, 3, H, W) in [-1, 1] with a non-square H × W = 2f × 3f, so swapped axes show.
Modules are put in eval mode and called under `torch.inference_mode()`, as pipelines do.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch

from core.contracts.base import (
    Contract,
    NotApplicable,
    assert_close,
    assert_equal,
    assert_finite,
    evaluated,
    expect_raises,
    generator,
)
from core.errors import InputError


class EncoderContract(Contract):
    """Checks for a `core.Encoder`. Override `batch_size` or `size_in_factors` (H/f, W/f) if needed."""

    kind = "encoder"
    batch_size: ClassVar[int] = 2
    size_in_factors: ClassVar[tuple[int, int]] = (2, 3)

    def images(self, component: Any, batch: int, *, extra: tuple[int, int] = (0, 0), seed: int = 0) -> torch.Tensor:
        """(batch, 3, H, W) images in [-1, 1]; `extra` pixels are added to H and W."""
        f = component.downsample_factor
        height, width = self.size_in_factors[0] * f + extra[0], self.size_in_factors[1] * f + extra[1]
        return torch.rand((batch, 3, height, width), generator=generator(seed)) * 2 - 1

    @staticmethod
    def encode(component: Any, images: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        with torch.inference_mode():
            return evaluated(component).encode(images, **kwargs)

    @staticmethod
    def decode(component: Any, latents: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return evaluated(component).decode(latents)

    def test_attributes(self, component: Any) -> None:
        """`latent_channels` and `downsample_factor` are ints >= 1; `scaling_factor` is a finite number > 0."""
        for name in ("latent_channels", "downsample_factor"):
            value = getattr(component, name, None)
            assert isinstance(value, int) and value >= 1, f"{name} must be an int >= 1, got {value!r}"
        scale = getattr(component, "scaling_factor", None)
        assert isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0, (
            f"scaling_factor must be a finite number > 0, got {scale!r}"
        )

    def test_encode_shape(self, component: Any) -> None:
        """encode of (B, 3, H, W) images gives finite latents (B, latent_channels, H/f, W/f) in the images' dtype.
        f is `downsample_factor`; checked with sample=False and with sample=True (and a generator), float32 input."""
        images = self.images(component, self.batch_size)
        b, _, height, width = images.shape
        f = component.downsample_factor
        expected = ((b, component.latent_channels, height // f, width // f), images.dtype)
        for sample in (False, True):
            latents = self.encode(component, images, sample=sample, generator=generator(0))
            got = (tuple(latents.shape), latents.dtype)
            assert got == expected, f"encode(sample={sample}) of {tuple(images.shape)} gave {got}, expected {expected}"
            assert_finite(latents, f"encode(sample={sample})")

    def test_decode_keeps_shape(self, component: Any) -> None:
        """decode(encode(x, sample=False)) has the shape (B, 3, H, W) and dtype of x."""
        images = self.images(component, self.batch_size)
        decoded = self.decode(component, self.encode(component, images, sample=False))
        got, expected = (tuple(decoded.shape), decoded.dtype), (tuple(images.shape), images.dtype)
        assert got == expected, f"decode(encode(x)) of {expected} gave {got}"

    def test_decode_range(self, component: Any) -> None:
        """decode gives finite images in [-1, 1], from encoded latents and from 3·randn latents (far out of range).
        Clamp the decoder output to [-1, 1]."""
        images = self.images(component, self.batch_size)
        latents = self.encode(component, images, sample=False)
        far = 3 * torch.randn(latents.shape, generator=generator(1))  # latents well outside the usual range
        for what, z in (("decode(encode(x))", latents), ("decode(3·randn)", far)):
            decoded = self.decode(component, z)
            assert_finite(decoded, what)
            low, high = decoded.min().item(), decoded.max().item()
            assert -1.0 <= low and high <= 1.0, f"{what} spans [{low:.4f}, {high:.4f}], images must lie in [-1, 1]"

    def test_mode_is_deterministic(self, component: Any) -> None:
        """Two encode(x, sample=False) calls give bitwise-equal latents.
        sample=False returns the posterior mode; it draws no noise."""
        images = self.images(component, self.batch_size)
        assert_equal(
            self.encode(component, images, sample=False),
            self.encode(component, images, sample=False),
            "two encode(sample=False) calls",
        )

    def test_sampling_reproducible_with_generator(self, component: Any) -> None:
        """Two encode(x, sample=True) calls with generators of the same seed give bitwise-equal latents.
        Draw the posterior noise from the `generator` argument, not from the global RNG."""
        images = self.images(component, self.batch_size)
        assert_equal(
            self.encode(component, images, sample=True, generator=generator(3)),
            self.encode(component, images, sample=True, generator=generator(3)),
            "two encode(sample=True) calls with generators of the same seed",
        )

    def test_batch_independence(self, component: Any) -> None:
        """Each item of a batch of 3 encodes (sample=False) and decodes as on its own, within atol 1e-5, rtol 1e-4.
        Nothing may mix items across the batch (batch statistics, means over dim 0)."""
        images = self.images(component, 3)
        latents = self.encode(component, images, sample=False)
        decoded = self.decode(component, latents)
        for i in range(3):
            assert_close(
                latents[i : i + 1],
                self.encode(component, images[i : i + 1], sample=False),
                f"encode: item {i} of a batch of 3 against its single run",
                atol=1e-5,
                rtol=1e-4,
            )
            assert_close(
                decoded[i : i + 1],
                self.decode(component, latents[i : i + 1]),
                f"decode: item {i} of a batch of 3 against its single run",
                atol=1e-5,
                rtol=1e-4,
            )

    def test_size_not_a_multiple_is_an_input_error(self, component: Any) -> None:
        """encode of an image whose H or W is not a multiple of `downsample_factor` raises `core.InputError`.
        Check the size before the network runs rather than let torch fail; not applicable when the factor is 1."""
        if component.downsample_factor == 1:
            raise NotApplicable("downsample_factor is 1, so every size is a multiple of it")
        for extra in ((1, 0), (0, 1)):
            images = self.images(component, 1, extra=extra)
            with expect_raises(
                InputError,
                f"encode of a {images.shape[2]}×{images.shape[3]} image (factor {component.downsample_factor})",
            ):
                self.encode(component, images, sample=False)
