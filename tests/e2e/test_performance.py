"""The opt-in fast path (`performance:` in the registry, `--fast`): the same images as the eager path, its
own instances of the optimised parts, and clear errors for a bad `performance:` block."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import core
from core import prepacked
from core.performance import Performance, fast
from core.prepacked import PrepackedForward

PROMPT = "a small green square on a white background"


def images(pipe: core.Pipeline) -> torch.Tensor:
    return pipe(PROMPT, seed=3, num_images=2, progress=False).pixels


def with_performance(registry: Path, block: str) -> Path:
    """A copy of the tiny registry whose pipeline has `block` as its performance block."""
    text = registry.read_text().replace(
        "    sampler: {plugin: cfg}\n", f"    sampler: {{plugin: cfg}}\n    performance: {block}\n"
    )
    out = registry.parent / f"registry-{abs(hash(block))}.yaml"
    out.write_text(text)
    return out


def test_cpu_fast_path_gives_the_eager_images(tiny_registry: Path, tiny_pipeline: core.Pipeline):
    fast = core.load_registry(
        with_performance(tiny_registry, "{channels_last: true, prepack: true, winograd: true}")
    ).build(device="cpu")
    assert fast.denoiser.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert isinstance(fast.encoder.decoder.conv_out.forward, PrepackedForward) == prepacked.available()
    assert not tiny_pipeline.denoiser.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(images(fast), images(tiny_pipeline), atol=1e-4, rtol=0)  # other conv kernels: rounding


@pytest.mark.slow
def test_compiled_pipeline_gives_the_eager_images(tiny_registry: Path, tiny_pipeline: core.Pipeline):
    fast = core.load_registry(tiny_registry).build(
        device="cpu", performance=Performance(channels_last=True, compile=True)
    )
    torch.testing.assert_close(images(fast), images(tiny_pipeline), atol=1e-4, rtol=0)


def test_fast_means_compile_and_cuda_graphs_on_cuda_and_no_compiling_on_the_cpu():
    assert fast("cuda") == Performance(channels_last=True, compile=True, cuda_graphs=True)
    assert fast("cpu") == Performance(channels_last=True, prepack=True, winograd=True)


def test_optimised_parts_are_not_shared_with_plain_builds(tiny_registry: Path):
    registry = core.load_registry(tiny_registry)
    plain = registry.build(device="cpu")
    fast = registry.build(device="cpu", performance=Performance(channels_last=True))
    again = registry.build(device="cpu", performance=Performance(channels_last=True))
    assert fast.denoiser is not plain.denoiser and fast.encoder is not plain.encoder
    assert again.denoiser is fast.denoiser  # built once per settings
    assert fast.text is plain.text  # the text part is not optimised, so it is shared
    assert not plain.denoiser.conv_in.weight.is_contiguous(memory_format=torch.channels_last)


def test_unknown_performance_option_is_named(tiny_registry: Path):
    with pytest.raises(core.RegistryError) as caught:
        core.load_registry(with_performance(tiny_registry, "{compiled: true}"))
    assert "pipelines -> tiny -> performance -> compiled" in str(caught.value)


@pytest.mark.parametrize("block, needs", [("{winograd: true}", "prepack"), ("{cuda_graphs: true}", "compile")])
def test_an_option_without_the_one_it_works_through_is_an_error(tiny_registry: Path, block: str, needs: str):
    with pytest.raises(core.RegistryError) as caught:
        core.load_registry(with_performance(tiny_registry, block))
    assert "pipelines -> tiny -> performance" in str(caught.value) and f"set {needs}: true" in str(caught.value)
