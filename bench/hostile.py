"""`python -m bench.hostile [CHECKOUT]`: hostile command lines against a diffstack checkout, each in a fresh process.

The cases are the command-line ones of tests/hostile: registry files, limits, tampered PNG recipes, misbehaving
plugins, output targets. Each runs `diffstack ...` with CHECKOUT (default: this one) first on PYTHONPATH, under a
60 s timeout, and is *clean* when nothing hangs, no traceback is printed, the exit code is neither 0 nor 130 (or
is 0 with an image written, for a plugin that must merely be skipped) and no output folder was created. Prints
each unclean case, then {category: [clean, unclean]}. Running it on two checkouts (e.g. a `git worktree` of an
older commit) gives issue 17's before/after numbers. Takes ~2 minutes on two cores (longer where cases hang).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, PngImagePlugin

HERE = Path(__file__).resolve().parents[1]
PROMPT = "a large red circle on a blue background"
LAUGHS = (
    "version: 1\na: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
    + "".join(f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi", strict=True))
    + "components: *i\n"
)
RECIPE = {
    "prompt": PROMPT, "negative_prompt": "", "seed": 3, "steps": 2, "guidance_scale": 5.0, "height": 64,
    "width": 64, "scheduler": "ddim", "scheduler_config": {}, "pipeline": "shapes-tiny", "num_images": 1,
    "strength": None, "diffstack_version": "0", "batch_seed": 3, "batch_size": 1, "batch_index": 0,
}  # fmt: skip
MODELS = HERE / "models" / "shapes-tiny"
PLUGIN_REGISTRY = f"""version: 1
plugins: [{{module}}]
pipelines:
  mine:
    encoder: {{{{plugin: vae-kl, weights: {MODELS}/encoder.safetensors}}}}
    denoiser: {{{{plugin: unet2d-condition, weights: {MODELS}/denoiser.safetensors}}}}
    text: {{{{plugin: clip-text, weights: {MODELS}/text.safetensors}}}}
    scheduler: {{{{plugin: ddim, config: {{{{clip_sample: false, beta_schedule: scaled_linear}}}}}}}}
    sampler: {{{{plugin: {{sampler}}}}}}
    defaults: {{{{height: 64, width: 64, steps: 2}}}}
"""
"""Explicit weights paths rather than `extends: bundled`, so older checkouts read it too."""
STEP_HOOK = "from core import hookimpl\n@hookimpl\ndef diffstack_step_end(event):\n    {statement}\n"
EXITING_FACTORY = """import sys
from pydantic import BaseModel, ConfigDict
from core import ComponentSpec, hookimpl
class Config(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
def build(config):
    sys.exit(0)
@hookimpl
def diffstack_components():
    return [ComponentSpec("sampler", "quitter", build, Config)]
"""


@dataclass
class Case:
    category: str
    argv: list[str]
    extra_path: str = ""
    image_expected: bool = False


def write(path: Path, content: str | bytes) -> str:
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return str(path)


def recipe_png(path: Path, recipe: object) -> str:
    info = PngImagePlugin.PngInfo()
    info.add_text("diffstack", recipe if isinstance(recipe, str) else json.dumps(recipe))
    Image.new("RGB", (64, 64)).save(path, pnginfo=info)
    return str(path)


def cases(tmp: Path) -> Iterator[Case]:
    out = str(tmp / "out")
    registries = {
        "bomb": LAUGHS, "deep": "version: 1\ncomponents: " + "[" * 5000 + "]" * 5000, "binary": b"\x89PNG\r\n\x00\xff",
        "huge-int": "version: 1\ndefault_pipeline: " + "9" * 5000, "escape": "version: 1\nplugins: ['../outside']\n",
    }  # fmt: skip
    for name, content in registries.items():
        yield Case("registry", ["validate", write(tmp / f"{name}.yaml", content)])
    yield Case("registry", ["list", "pipelines", "--registry", str(tmp / "bomb.yaml")])
    too_much = [
        ["--num-images", "1000000"], ["--height", "100000", "--width", "100000"], ["--width", "100000"],
        ["--seed", str(2**64)], ["--seed", "-1"], ["--seed", str(2**64 - 1), "--num-images", "2"],
    ]  # fmt: skip
    for extra in too_much:
        yield Case("limits", ["generate", PROMPT, "--out", out, *extra])
    tampered: list[object] = [
        {"seed": "3"}, {"seed": 3.5}, {"seed": 2**70}, {"guidance_scale": "5"}, {"pipeline": 7}, {"scheduler": 7},
        {"batch_index": 5}, {"batch_index": "0"}, {"height": 100000, "width": 100000},
        {"num_images": 10**6, "batch_size": 10**6}, "{not json", "[1, 2]",
    ]  # fmt: skip
    for i, change in enumerate(tampered):
        recipe = change if isinstance(change, str) else {**RECIPE, **change}
        yield Case("recipe", ["generate", "--from-png", recipe_png(tmp / f"recipe-{i}.png", recipe), "--out", out])
    modules = {
        "exits": ("import sys\nsys.exit(0)\n", "cfg", "validate"),
        "quitter_factory": (EXITING_FACTORY, "quitter", "generate"),
        **{f"step_{i}": (STEP_HOOK.format(statement=s), "cfg", "generate")
           for i, s in enumerate(("raise ValueError('x')", "import sys; sys.exit(0)", "raise KeyboardInterrupt"))},
    }  # fmt: skip
    for module, (source, sampler, command) in modules.items():
        write(tmp / f"{module}.py", source)
        registry = write(tmp / f"{module}.yaml", PLUGIN_REGISTRY.format(module=module, sampler=sampler))
        argv = ["validate", registry] if command == "validate" else ["generate", PROMPT, "--registry", registry]
        yield Case("plugins", argv + (["--out", out] if command == "generate" else []))
    site = tmp / "site"
    info = site / "quitter-0.1.dist-info"
    info.mkdir(parents=True)
    write(site / "quitter_mod.py", "import sys\nsys.exit(0)\n")
    write(info / "METADATA", "Metadata-Version: 2.1\nName: quitter\nVersion: 0.1\n")
    write(info / "entry_points.txt", "[diffstack]\nquitter = quitter_mod\n")
    yield Case("plugins", ["generate", PROMPT, "--steps", "2", "--out", out], str(site), image_expected=True)
    write(tmp / "taken.png", b"mine")
    yield Case("writing", ["generate", PROMPT, "--steps", "2", "--out", str(tmp / "taken.png")])
    (tmp / "folder.png").mkdir()
    yield Case("writing", ["generate", PROMPT, "--steps", "2", "--out", str(tmp / "folder.png"), "--overwrite"])


def is_clean(case: Case, code: int | None, err: str, out: Path) -> bool:
    if code is None or "Traceback" in err:
        return False
    if case.image_expected and code == 0:
        return any(out.glob("*.png"))
    return code not in (0, 130) and not out.exists()


def main() -> None:
    checkout = sys.argv[1] if len(sys.argv) > 1 else str(HERE)
    cli = "import sys; from core.cli import main; sys.exit(main())"
    tally: dict[str, list[int]] = {}
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        for case in cases(tmp):
            path = os.pathsep.join(p for p in (checkout, case.extra_path) if p)
            env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path}
            try:
                done = subprocess.run([sys.executable, "-c", cli, *case.argv], capture_output=True, text=True,
                                      timeout=60, env=env, cwd=tmp)  # fmt: skip
                code, err = done.returncode, done.stderr
            except subprocess.TimeoutExpired:
                code, err = None, "(hung)"
            clean = is_clean(case, code, err, tmp / "out")
            tally.setdefault(case.category, [0, 0])[0 if clean else 1] += 1
            if not clean:
                last = (err.strip().splitlines() or [""])[-1][:120]
                print(f"unclean {case.category}: {' '.join(case.argv)[:120]} → exit {code}: {last}")
            shutil.rmtree(tmp / "out", ignore_errors=True)
    print(json.dumps(tally))


if __name__ == "__main__":
    main()
