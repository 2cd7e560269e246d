"""An exception from inside a plugin during a run becomes a diffstack error naming that plugin; the caller's
own callback exceptions pass through as they are; the CLI prints one line, no traceback."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from core import PluginError
from core.cli import main
from plugins.ddim import DDIM


class ExplodingDDIM(DDIM):
    """DDIM whose third step fails inside inherited code, as a third-party bug would."""

    def _update(self, i, model_output, sample, noise):
        if i == 2:
            raise ValueError("shapes (2,4) and (3,) not aligned")
        return super()._update(i, model_output, sample, noise)


class ExplodingDenoiser(torch.nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.in_channels, self.context_dim = inner.in_channels, inner.context_dim

    def forward(self, sample, timestep, context):
        return self.inner(sample, timestep, context)[:, :1].expand(-1, 5, -1, -1).reshape(-1, 3)  # a plugin bug


def broken(pipe, **parts):
    plugins = {**pipe.plugins, **{kind: f"broken-{kind}" for kind in parts}}
    return dataclasses.replace(pipe, plugins=plugins, **parts)


def test_a_scheduler_bug_is_a_plugin_error_naming_the_scheduler(tiny_pipeline):
    pipe = broken(tiny_pipeline, scheduler=ExplodingDDIM(tiny_pipeline.scheduler.config))
    with pytest.raises(PluginError) as caught:
        pipe("a red circle", seed=1)
    message = str(caught.value)
    assert message.startswith(
        "scheduler plugin 'broken-scheduler' of pipeline 'tiny' raised ValueError: shapes (2,4) and (3,) not aligned"
    )
    assert "diffstack check scheduler/broken-scheduler" in message
    assert isinstance(caught.value.__cause__, ValueError)


def test_a_denoiser_bug_called_by_the_sampler_names_the_denoiser(tiny_pipeline):
    pipe = broken(tiny_pipeline, denoiser=ExplodingDenoiser(tiny_pipeline.denoiser))
    with pytest.raises(PluginError, match=r"^denoiser plugin 'broken-denoiser' of pipeline 'tiny' raised"):
        pipe("a red circle", seed=1)


def test_the_callers_own_callback_exception_passes_through(tiny_pipeline):
    class Mine(Exception):
        pass

    def callback(event):
        raise Mine("stop here")

    with pytest.raises(Mine, match="stop here"):
        tiny_pipeline("a red circle", seed=1, callback=callback)


def test_generate_prints_one_error_line_for_a_plugin_bug(tiny_registry, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    original = DDIM._update

    def exploding(self, i, *args):
        if i == 2:
            raise ValueError("shapes (2,4) and (3,) not aligned")
        return original(self, i, *args)

    monkeypatch.setattr(DDIM, "_update", exploding)
    code = main(["generate", "a red circle", "--registry", str(tiny_registry), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("error: scheduler plugin 'ddim' of pipeline 'tiny' raised ValueError"), err
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_a_scheduler_whose_constructor_fails_for_a_run_is_named(tiny_pipeline):
    class RefusesCopies(DDIM):
        built = 0

        def __init__(self, config):
            type(self).built += 1
            if type(self).built > 1:
                raise TypeError("__init__() got an unexpected keyword argument")
            super().__init__(config)

    pipe = broken(tiny_pipeline, scheduler=RefusesCopies(tiny_pipeline.scheduler.config))
    expected = r"^scheduler plugin 'broken-scheduler' of pipeline 'tiny', building it, raised TypeError"
    with pytest.raises(PluginError, match=expected):
        pipe("a red circle", seed=1)
