"""Opt-in speed-ups of a built pipeline: `performance:` in a registry pipeline, `--fast` on the CLI.

    channels_last  conv weights (and so every activation after the first conv) in NHWC, the layout oneDNN
                   and cuDNN convolve fastest; numerically the same computation
    prepack        on the CPU: conv and linear weights reordered once into oneDNN's layout instead of on
                   every call (`core.prepacked`); what inductor's freezing does, without compiling
    winograd       with prepack: wide 3×3 convolutions (≥ 256 channels in and out) by Winograd's F(2×2, 3×3),
                   4 multiplies per output instead of 9 (`core.winograd`); equal up to float rounding
    compile        torch.compile (inductor) the denoiser and the encoder's decode; on the CPU with weight
                   freezing (constant-folded, pre-packed weights); shapes are static, so a new image size or
                   batch compiles once more
    cuda_graphs    on CUDA, with compile: replay each denoiser call as one CUDA graph (no per-kernel launch
                   cost); ignored on the CPU

Everything here works on the interfaces only (`nn.Module` parts, `Encoder.decode`), never on a particular
model. Compiled code may differ from eager code by float rounding; so may the prepacked and Winograd
layers. The packing code (`core.prepacked`, `core.winograd`) is imported only when a part is optimised, so
reading a `performance:` block costs no more than this module.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

log = logging.getLogger(__name__)


class Performance(BaseModel):
    """The `performance:` block of a registry pipeline; all off by default."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    channels_last: bool = Field(False, description="NHWC conv weights and activations")
    prepack: bool = Field(
        False, description="CPU: conv and linear weights packed once for oneDNN (skipped under compile)"
    )
    winograd: bool = Field(False, description="with prepack: wide 3×3 convolutions by Winograd F(2×2, 3×3)")
    compile: bool = Field(False, description="torch.compile the denoiser and the decoder (first call compiles)")
    cuda_graphs: bool = Field(False, description="with compile, on CUDA: replay the denoiser as CUDA graphs")

    @model_validator(mode="after")
    def _check_requirements(self) -> Performance:
        for option, needs in (("winograd", "prepack"), ("cuda_graphs", "compile")):
            if getattr(self, option) and not getattr(self, needs):
                raise ValueError(f"{option} works through {needs}: set {needs}: true as well, or drop {option}")
        return self


def fast(device: torch.device | str) -> Performance:
    """What `--fast` turns on: on CUDA channels_last, compile and CUDA graphs; on the CPU channels_last,
    prepacked weights and Winograd convolutions, which need no compiling (compiling a big model is slow on a
    few CPU cores, and the first image would pay for it)."""
    if torch.device(device).type == "cuda":
        return Performance(channels_last=True, compile=True, cuda_graphs=True)
    return Performance(channels_last=True, prepack=True, winograd=True)


OPTIMISED_KINDS = ("denoiser", "encoder")  # the parts that run per step or per pixel; text runs once per prompt


def compile_options(device: torch.device, cuda_graphs: bool) -> dict[str, Any]:
    """inductor options: frozen weights on the CPU (inference only), CUDA graphs on request on CUDA."""
    if device.type == "cuda":
        return {"triton.cudagraphs": cuda_graphs}
    return {"freezing": True}


def optimise_part(kind: str, part: Any, performance: Performance, device: torch.device) -> Any:
    """Apply `performance` to one built part in place and return it: a denoiser is compiled as a whole
    module, an encoder through its `decode` (what generation runs). Other kinds come back unchanged."""
    if kind not in OPTIMISED_KINDS:
        return part
    if performance.channels_last and isinstance(part, torch.nn.Module):
        part.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # missing from torch's stubs
    if performance.prepack and not performance.compile and device.type == "cpu" and isinstance(part, torch.nn.Module):
        from core.prepacked import prepack  # here, not at the top: importing core must not load the packing code

        prepack(part, winograd=performance.winograd)
    if performance.compile:
        options = compile_options(device, performance.cuda_graphs)
        if kind == "denoiser" and isinstance(part, torch.nn.Module):
            part.compile(dynamic=False, options=options)
        elif kind == "encoder":
            part.decode = torch.compile(part.decode, dynamic=False, options=options)
    log.info("%s %s: %s", kind, type(part).__name__, performance)
    return part


def apply_performance(pipeline: Any, performance: Performance) -> Any:
    """Apply `performance` to a built pipeline's denoiser and encoder in place; returns the pipeline.
    (A registry pipeline gets its `performance:` block at build time; this is for pipelines put together
    by hand.)"""
    for kind in OPTIMISED_KINDS:
        optimise_part(kind, getattr(pipeline, kind), performance, pipeline.device)
    return pipeline
