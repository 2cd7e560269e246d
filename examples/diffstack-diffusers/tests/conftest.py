"""The tiny Stable Diffusion model and its diffstack registry (`tiny_sd.py`), built once per session."""

from __future__ import annotations

import diffusers
import pytest
import tiny_sd as helpers

import core


@pytest.fixture(scope="session")
def tiny_sd(tmp_path_factory: pytest.TempPathFactory) -> tuple[diffusers.StableDiffusionPipeline, core.Registry]:
    return helpers.tiny_sd(tmp_path_factory.mktemp("sd"))
