"""The scheduler lab: what an update rule is worth on a pipeline, measured at each budget of denoiser calls.

For every scheduler × NFE (number of function evaluations: the denoiser calls a run may make), on the same
captions, seeds and guidance:

- **solver error** — RMS distance of the final latents, and of the decoded images in 1/255 units, to a
  reference solution of the same probability-flow ODE from the same noise: `REFERENCE_RULE` at
  `REFERENCE_STEPS` (the most its timesteps stay distinct at), whose own convergence is measured against half
  as many steps. Every run goes from t = T − 1 to t = 0 (`linspace` spacing, no offset, for rules whose config
  has these settings; `leading` and `trailing` move one end with the step count), so all rules at all budgets
  integrate the same ODE between the same two points. Then most rules jump from t = 0 to σ = 0 (the x̂0 of
  their last step); a rule with `final_sigmas_type` (DPM-Solver's) would jump from its last regular timestep,
  t = T/n, which costs first order whatever its own order — the lab runs it with `sigma_min`, ending at t = 0,
  and compares it with the reference's state there (`Cell.endpoint`). Stochastic rules (they draw noise in
  `step`) solve an SDE instead: they are scored by quality only;
- **quality** — the data set's pixel analyser on each image (background, colour, shape, size, all three), per
  group of captions (seen and held-out combinations), as `diffstack eval` scores a pipeline;
- **cost** — denoiser calls actually made (a second-order rule spends two per step; one call covers both halves
  of guidance) and wall time per image.

The steps a rule gets for a budget are NFE ÷ its `order` (at least 1); the calls it then makes are counted,
so the plots put each rule where its real cost is. `LabResult.orders()` fits the empirical order of each
deterministic rule: the slope of log(error) against log(calls) over its largest budgets. The reference runs
are the lab's largest cost; given a `cache` folder they are kept there per (model weights, captions, seed,
guidance), so a second look at other rules on the same captions skips them.

A trained network's prediction need not be smooth in t at the scale of one timestep, and then no rule gains
its full order on it. So the lab also fits each deterministic rule's order on the exact ODE of Gaussian data
with the pipeline's noise schedule (`core.gaussian_ode`, `exact_order`): a rule below its theoretical order
there is wrong; one below it only on the model is limited by the model.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from core.contracts.scheduler import is_stochastic
from core.errors import DiffstackError, InputError
from core.gaussian_ode import GaussianDataDenoiser
from core.generation import Settings
from core.interfaces import StepEvent
from core.pipeline import Pipeline
from core.training.evaluate import right_on
from core.weights import load_state_dict, save_state_dict

REFERENCE_RULE, REFERENCE_STEPS = "dpmpp-2m", 500
SAME_ENDS = {"timestep_spacing": "linspace", "steps_offset": 0, "final_sigmas_type": "sigma_min"}
"""Scheduler settings every lab run uses where the rule's config has them: all runs go from T − 1 to 0."""
ENDPOINTS = {"x0": {"final_sigmas_type": "zero"}, "sigma_min": {"final_sigmas_type": "sigma_min"}}
"""Where a run ends — x̂0 (σ = 0), or the state at t = 0 — and the reference's settings for each."""
PARTS = ("latents", "pixels")  # what a cached reference keeps per endpoint
QUALITY_BAR = 0.8
"""The share of images right on all three a rule must reach to count as drawing the prompt (the model card's)."""
ORDER_FIT_POINTS = 4
"""How many of a rule's largest budgets the empirical-order fit uses (its asymptotic range)."""
EXACT_SETTINGS = {"clip_sample": False, "thresholding": False}
"""Scheduler settings of the exact-ODE fit where the rule's config has them: clipping x̂0 would change the ODE."""
KARRAS = {"use_karras_sigmas": True}
"""Karras et al.'s σ spacing (ρ = 7), fitted too for a rule that offers it: its steps in λ = log(a/σ) all shrink
as the steps grow, where `linspace` timesteps on a 1000-step schedule keep the last ones at ≥ ½·log 2 — the
range in which a multistep exponential integrator (DPM-Solver++) shows its order."""
EXACT_NFE = (40, 80, 160, 320)
"""The budgets of the exact-ODE fit: where the last `linspace` steps in λ = log(a/σ), the largest, have become
small enough for every rule's asymptotic range."""


@dataclass(frozen=True)
class Captions:
    """The lab's prompts: caption i, its group (`seen`, `held-out`) and the attributes its image should show."""

    texts: list[str]
    groups: list[str]
    truths: list[dict[str, str]]


@dataclass(frozen=True)
class Cell:
    """One scheduler at one budget. `endpoint`: where its runs end (a key of `ENDPOINTS`), the reference state
    it is compared with; `latent_rms`/`image_rms` are None for a stochastic rule; `accuracy` maps group →
    attribute → fraction right ({} without an analyser)."""

    scheduler: str
    nfe: int
    steps: int
    calls: int
    seconds_per_image: float
    stochastic: bool
    endpoint: str
    latent_rms: float | None
    image_rms: float | None
    accuracy: dict[str, dict[str, float]] = field(default_factory=dict)


@dataclass(frozen=True)
class Order:
    """The fitted slope of log(error) on log(calls) (the rule's empirical order is −slope) and the calls fitted."""

    order: float
    calls: tuple[int, ...]


@dataclass(frozen=True)
class LabResult:
    """Everything one lab run measured, with what it was run on."""

    pipeline: str
    guidance_scale: float
    seed: int
    captions: Captions
    reference: str
    reference_convergence: float
    cells: list[Cell]
    images: dict[tuple[str, int], torch.Tensor]
    """(scheduler, nfe) → the first caption's image (3, H, W) in [-1, 1], for the contact sheet."""
    exact_orders: dict[str, Order] = field(default_factory=dict)
    """Per deterministic rule, its empirical order on the exact ODE of Gaussian data (`exact_order`); a rule
    offering Karras σ spacing also as "<rule>+karras" (`KARRAS`)."""
    exact_unfitted: dict[str, str] = field(default_factory=dict)
    """Per deterministic rule whose exact-ODE runs failed (a rule limited to fewer steps), the error."""

    def fewest_steps(self, bar: float = QUALITY_BAR) -> dict[str, int]:
        """Per rule, the steps of its smallest budget from which every larger one has at least `bar` of all
        captions right on all three — a registry's `fewest_steps` block; rules never reaching it are left out."""
        weights = {group: captions_in / len(self.captions.groups)
                   for group, captions_in in Counter(self.captions.groups).items()}  # fmt: skip
        fewest: dict[str, int] = {}
        for name in dict.fromkeys(c.scheduler for c in self.cells):
            for cell in sorted((c for c in self.cells if c.scheduler == name), key=lambda c: -c.nfe):
                right = sum(weights[g] * acc["all three"] for g, acc in cell.accuracy.items())
                if not cell.accuracy or right < bar:
                    break
                fewest[name] = cell.steps
        return fewest

    def orders(self) -> dict[str, Order]:
        """Per deterministic rule, the empirical order over its `ORDER_FIT_POINTS` largest budgets."""
        fitted = {}
        for name in dict.fromkeys(c.scheduler for c in self.cells):
            points = {(c.calls, c.latent_rms) for c in self.cells if c.scheduler == name and c.latent_rms}
            if len(points) >= 2:
                fitted[name] = fit_order(sorted(points)[-ORDER_FIT_POINTS:])
        return fitted


def fit_order(points: Sequence[tuple[int, float]]) -> Order:
    """(calls, error) pairs, at least two → the empirical order: minus the slope of log(error) on log(calls)."""
    fitted = slope([math.log(c) for c, _ in points], [math.log(e) for _, e in points])
    return Order(-fitted, tuple(c for c, _ in points))


def slope(x: Sequence[float], y: Sequence[float]) -> float:
    """The least-squares slope of y on x."""
    mx, my = sum(x) / len(x), sum(y) / len(y)
    return sum((a - mx) * (b - my) for a, b in zip(x, y, strict=True)) / sum((a - mx) ** 2 for a in x)


class CountingDenoiser:
    """The pipeline's denoiser, counting its calls; every attribute is the wrapped denoiser's."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def __call__(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        self.calls += 1
        return self.inner(*args, **kwargs)


def run_lab(
    pipe: Pipeline,
    schedulers: Sequence[str],
    nfes: Sequence[int],
    captions: Captions,
    *,
    analyse: Callable[[torch.Tensor], dict[str, str]] | None = None,
    seed: int = 0,
    guidance_scale: float | None = None,
    progress: bool = False,
    cache: Path | None = None,
    reference_steps: int = REFERENCE_STEPS,
    exact_nfe: Sequence[int] = EXACT_NFE,
) -> LabResult:
    """Measure every scheduler at every NFE on `captions` (image i from the noise of seed + i) against the
    reference at `reference_steps`, and fit each deterministic rule's order on the exact ODE at `exact_nfe`
    (none: not fitted); the reference runs are read from, or written to, `cache` when given."""
    if not schedulers or not nfes or min(nfes) < 1:
        raise InputError("the lab needs at least one scheduler and NFE values >= 1", hint="e.g. --nfe 4,8,16")
    counting = CountingDenoiser(pipe.denoiser)
    lab_pipe = dataclasses.replace(pipe, denoiser=counting)
    guidance = pipe.settings("", guidance_scale=guidance_scale).guidance_scale
    cells, images = [], {}
    with tqdm(total=len(schedulers) * (len(nfes) + 1) + 1, desc="scheduler lab", disable=not progress) as bar:
        references, convergence = _references(lab_pipe, captions, seed, guidance, cache, reference_steps)
        bar.update(1)
        for name in schedulers:
            end = endpoint(pipe, name)
            for nfe in nfes:
                latents, pixels, settings, seconds, scheduler = _run(
                    lab_pipe, name, None, captions, seed, guidance, nfe=nfe
                )
                calls = counting.calls
                stochastic = is_stochastic(scheduler, (1, 4, 4, 4), settings.steps)
                reference, reference_pixels = references[end]
                cells.append(Cell(
                    name, nfe, settings.steps, calls, seconds / len(captions.texts), stochastic, end,
                    None if stochastic else rms(latents, reference),
                    None if stochastic else 127.5 * rms(pixels, reference_pixels),
                    accuracy(pixels, captions, analyse) if analyse else {},
                ))  # fmt: skip
                images[(name, nfe)] = pixels[0]
                bar.update(1)
        exact, unfitted = {}, {}
        for name in schedulers:
            if exact_nfe and not any(c.stochastic for c in cells if c.scheduler == name):
                fields = pipe.plugin_manager.get("scheduler", name).spec.config.model_fields
                variants: dict[str, dict[str, Any]] = {name: {}}
                if KARRAS.keys() <= fields.keys():
                    variants[f"{name}+karras"] = KARRAS
                for label, spacing in variants.items():
                    try:
                        exact[label] = exact_order(pipe, name, exact_nfe, seed=seed, settings=spacing)
                    except DiffstackError as error:
                        unfitted[label] = str(error).splitlines()[0]
            bar.update(1)
    described = f"{REFERENCE_RULE}, {reference_steps} steps, {SAME_ENDS['timestep_spacing']} spacing"
    return LabResult(pipe.name, guidance, seed, captions, described, convergence, cells, images, exact, unfitted)


def endpoint(pipe: Pipeline, name: str) -> str:
    """Where the lab's runs of rule `name` end: "sigma_min" for a rule with `final_sigmas_type`, else "x0"."""
    spec = pipe.plugin_manager.get("scheduler", name).spec
    return "sigma_min" if "final_sigmas_type" in spec.config.model_fields else "x0"


def exact_order(
    pipe: Pipeline, name: str, nfes: Sequence[int] = EXACT_NFE, *, seed: int = 0, settings: dict[str, Any] | None = None
) -> Order:
    """Rule `name`'s empirical order on the exact ODE of Gaussian data with the noise schedule of the pipeline's
    scheduler (`core.gaussian_ode`): the RMS distance of 2 final latents to the exact solution, fitted over
    every budget in `nfes`, runs set up as the lab's (`SAME_ENDS`, guidance 1) and with `EXACT_SETTINGS` and
    `settings` (where the rule's config has them). A rule
    with `final_sigmas_type` ends at the state at t = 0; the others at σ = 0, either by a jump to x̂0 or by
    integrating on: they are compared with the exact end of the way their largest budget's run is nearer."""
    alphas_cumprod = getattr(pipe.scheduler, "alphas_cumprod", None)
    if alphas_cumprod is None:
        raise InputError(
            f"the exact-ODE fit needs the noise schedule: pipeline {pipe.name}'s scheduler has no alphas_cumprod",
            hint="give the lab a pipeline whose scheduler has alphas_cumprod (every built-in does)",
        )
    oracle = GaussianDataDenoiser(pipe.denoiser, alphas_cumprod)
    counting = CountingDenoiser(oracle)
    exact_pipe = dataclasses.replace(pipe, denoiser=counting)
    captions = Captions(["", ""], ["exact"] * 2, [{}, {}])
    ends = ["state at t = 0"] if endpoint(pipe, name) == "sigma_min" else ["x̂0 at t = 0", "σ = 0"]
    errors: dict[str, list[tuple[int, float]]] = {end: [] for end in ends}
    for nfe in nfes:
        oracle.reset()
        latents = _run(exact_pipe, name, None, captions, seed, 1.0, {**EXACT_SETTINGS, **(settings or {})}, nfe=nfe)[0]
        exact = oracle.exact_ends()
        for end in ends:
            errors[end].append((counting.calls, rms(latents, exact[end])))
    return fit_order(min(errors.values(), key=lambda points: points[-1][1]))


def _references(
    pipe: Pipeline, captions: Captions, seed: int, guidance: float, cache: Path | None, steps: int
) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor]], float]:
    """endpoint → (reference latents, images) and the reference's distance to its run at half the steps —
    from `cache` when it holds them for these weights, captions, seed and guidance, else run (and kept there;
    a damaged or incomplete cache file is run again and replaced)."""
    key = _fingerprint(pipe, captions, seed, guidance, steps)
    file = None if cache is None else cache / f"reference-{key}.safetensors"
    if file is not None and file.is_file():
        try:
            stored = load_state_dict(file)
            found = {end: (stored[f"{end}.{PARTS[0]}"], stored[f"{end}.{PARTS[1]}"]) for end in ENDPOINTS}
            return found, float(stored["convergence"])
        except (DiffstackError, KeyError):
            pass
    found = {}
    for end, overrides in ENDPOINTS.items():
        latents, pixels, *_ = _run(pipe, REFERENCE_RULE, steps, captions, seed, guidance, overrides)
        found[end] = (latents, pixels)
    half = _run(pipe, REFERENCE_RULE, steps // 2, captions, seed, guidance, ENDPOINTS["x0"])[0]
    convergence = rms(half, found["x0"][0])
    if file is not None:
        file.parent.mkdir(parents=True, exist_ok=True)
        tensors = {f"{end}.{part}": t for end, pair in found.items() for part, t in zip(PARTS, pair, strict=True)}
        save_state_dict({**tensors, "convergence": torch.tensor(convergence)}, file)
    return found, convergence


def _fingerprint(pipe: Pipeline, captions: Captions, seed: int, guidance: float, steps: int) -> str:
    """A hash of what the reference depends on: every weight of the model parts, the captions, seed, guidance,
    image size and the reference's settings."""
    digest = hashlib.sha256()
    for part in (pipe.encoder, pipe.denoiser, pipe.text):
        state = part.state_dict() if isinstance(part, torch.nn.Module) else {}
        for name, tensor in state.items():
            digest.update(f"{name}{tuple(tensor.shape)}".encode())
            digest.update(tensor.detach().float().cpu().numpy().tobytes())
    size = pipe.settings("").height, pipe.settings("").width
    described = [captions.texts, seed, guidance, size, REFERENCE_RULE, steps, SAME_ENDS, ENDPOINTS]
    digest.update(json.dumps(described, sort_keys=True).encode())
    return digest.hexdigest()[:16]


def rms(a: torch.Tensor, b: torch.Tensor) -> float:
    """Root-mean-square difference of two tensors of one shape."""
    return float((a.float() - b.float()).pow(2).mean().sqrt())


def accuracy(
    pixels: torch.Tensor, captions: Captions, analyse: Callable[[torch.Tensor], dict[str, str]]
) -> dict[str, dict[str, float]]:
    """group → attribute → fraction of that group's images whose pixels show the caption's attribute, plus
    "all three" (background, colour and shape right at once)."""
    right: dict[str, dict[str, int]] = {}
    count: dict[str, int] = {}
    for image, group, truth in zip(pixels, captions.groups, captions.truths, strict=True):
        tally = right.setdefault(group, dict.fromkeys([*truth, "all three"], 0))
        for name, ok in right_on(analyse(image), truth).items():
            tally[name] += ok
        count[group] = count.get(group, 0) + 1
    return {group: {name: n / count[group] for name, n in tally.items()} for group, tally in right.items()}


def _run(
    pipe: Pipeline,
    name: str,
    steps: int | None,
    captions: Captions,
    seed: int,
    guidance: float,
    overrides: dict[str, Any] | None = None,
    *,
    nfe: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, Settings, float, Any]:
    """(final latents (N, C, h, w), images (N, 3, H, W) in [-1, 1], the settings that ran, seconds, the
    scheduler) of one run of rule `name` with `SAME_ENDS` and `overrides` where its config has them, at `steps`
    or at the steps an `nfe` budget buys it; resets the denoiser's call count first."""
    spec = pipe.plugin_manager.get("scheduler", name).spec
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # settings the swap drops are the point of comparing rules
        settings = pipe.settings(captions.texts, seed=seed, steps=1, guidance_scale=guidance, scheduler=name)
    wanted = {**SAME_ENDS, **(overrides or {})}
    config = {**settings.scheduler_config, **{k: v for k, v in wanted.items() if k in spec.config.model_fields}}
    scheduler = spec.build(spec.config.model_validate(config))
    if steps is None:
        steps = max(1, (nfe or 1) // max(1, int(getattr(scheduler, "order", 1))))
    settings = dataclasses.replace(settings, steps=steps, scheduler_config=config)
    final: dict[str, torch.Tensor] = {}

    def keep_last(event: StepEvent) -> None:
        final["latents"] = event.latents

    pipe.denoiser.calls = 0  # type: ignore[attr-defined]  # the lab's CountingDenoiser
    began = time.perf_counter()
    generation = pipe.run(settings, callback=keep_last)
    return final["latents"], generation.pixels, settings, time.perf_counter() - began, scheduler
