"""The README's first command: the embedded shapes-tiny model draws what it is asked for, out of the box.

Background, shape colour, shape and size are read back with the data set's pixel analyser, on four seeds.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

import core
from core.cli import main


def test_readme_command_draws_a_red_circle_on_blue(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DIFFSTACK_REGISTRY", raising=False)
    assert main(["generate", "a large red circle on a blue background", "--num-images", "4"]) == 0
    paths = capsys.readouterr().out.split()
    assert len(paths) == 4
    shapes = core.create("dataset", "shapes")
    readings = []
    for path in paths:
        pixels = torch.from_numpy(np.array(Image.open(path))).permute(2, 0, 1).float() / 127.5 - 1
        readings.append(shapes.analyse(pixels))
    assert all(r["background"] == "blue" for r in readings), readings
    assert all(r["color"] == "red" for r in readings), readings
    assert sum(r["shape"] == "circle" for r in readings) >= 3, readings
    assert all(r["size"] == "large" for r in readings), readings
