"""Conditioning beyond one tensor: the added inputs SDXL- and SD3-style denoisers take besides the context.

A classic denoiser is called `denoiser(sample, t, context)`. One that needs more declares `added_inputs`, a
mapping name → per-sample shape, and is called `denoiser(sample, t, context, **added)` with exactly those
names, each a (B, *shape) tensor aligned with the batch of `sample` — under classifier-free guidance the
unconditional half's values come first, as the context's do. Two sources fill them:

- the text conditioner, when it returns a `core.Conditioning` (context plus added tensors such as `pooled`,
  (B, P), a pooled text embedding) and declares them in `added_outputs` (name → per-sample shape);
- the denoiser itself, through an optional `micro_conditioning(height, width)` → name → 1-D tensor: values it
  derives from the image size in pixels (SDXL's size and crop "time ids", (6,)), the same for every sample
  and for both halves of guidance.

A name both give is taken from the text conditioner; `missing_inputs` says, before anything runs, which
declared inputs no source fills or fills with the wrong shape.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from core.interfaces import Conditioning

SIZE_PROBE = 64
"""The image side (pixels) `missing_inputs` asks `micro_conditioning` about: only the names and shapes count."""


def added_inputs(denoiser: Any) -> dict[str, tuple[int, ...]]:
    """The denoiser's declared added inputs (name → per-sample shape); {} for a classic denoiser."""
    return _declared(denoiser, "added_inputs")


def added_outputs(text: Any) -> dict[str, tuple[int, ...]]:
    """The text conditioner's declared added outputs (name → per-sample shape); {} for one returning a tensor."""
    return _declared(text, "added_outputs")


def _declared(component: Any, attribute: str) -> dict[str, tuple[int, ...]]:
    """The optional name → per-sample shape mapping `component` declares as `attribute`, shapes as tuples."""
    return {name: tuple(shape) for name, shape in dict(getattr(component, attribute, None) or {}).items()}


def micro_conditioning(denoiser: Any, height: int, width: int) -> dict[str, torch.Tensor]:
    """The denoiser's own added inputs for images of `height` × `width` pixels (name → 1-D tensor); {} when it
    derives none."""
    derive = getattr(denoiser, "micro_conditioning", None)
    return dict(derive(height, width)) if callable(derive) else {}


def as_conditioning(embeddings: torch.Tensor | Conditioning) -> Conditioning:
    """A text conditioner's output as a `Conditioning` (a bare tensor is its context)."""
    return embeddings if isinstance(embeddings, Conditioning) else Conditioning(embeddings)


def missing_inputs(denoiser: Any, text: Any) -> list[str]:
    """One line per added input the denoiser declares that neither the text conditioner nor the denoiser's
    micro-conditioning provides, or provides with another per-sample shape."""
    given = {name: tuple(v.shape) for name, v in micro_conditioning(denoiser, SIZE_PROBE, SIZE_PROBE).items()}
    given |= added_outputs(text)
    problems = []
    for name, shape in added_inputs(denoiser).items():
        if name not in given:
            problems.append(
                f"the denoiser takes the added input {name!r} {shape}, which the text conditioner does not give"
                + (" (a pooled text embedding)" if name == "pooled" else "")
            )
        elif given[name] != shape:
            problems.append(f"the denoiser takes {name!r} of per-sample shape {shape}, but it is given {given[name]}")
    return problems


def added_for(denoiser: Any, embeddings: Conditioning, height: int, width: int) -> dict[str, torch.Tensor]:
    """The added inputs of a run on `embeddings` (context (B, L, D)): each name the denoiser declares, as a
    (B, *shape) tensor on the context's device and dtype, from `embeddings.added` or the micro-conditioning."""
    context = embeddings.context
    derived = micro_conditioning(denoiser, height, width)
    added = {}
    for name in added_inputs(denoiser):
        if name in embeddings.added:
            value = embeddings.added[name]
        else:
            value = derived[name].expand(len(context), *derived[name].shape)
        added[name] = value.to(context.device, context.dtype)
    return added


def guidance_batch(
    added: Mapping[str, torch.Tensor], uncond_added: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """The added inputs of a classifier-free-guidance batch: unconditional rows, then conditional ones. A name
    `uncond_added` lacks takes the conditional value for both halves (micro-conditioning usually is)."""
    return {name: torch.cat([uncond_added.get(name, value), value]) for name, value in added.items()}
