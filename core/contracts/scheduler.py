"""Contract suite for `core.Scheduler`: properties every noise schedule × update rule must have.

The central one: fed the *true* noise at every step (an oracle that knows x0, honouring
`config.prediction_type`), a deterministic rule ends at x0 — "the denoiser predicts the entire noise, the
scheduler removes part of it" (docs/architecture.md). Rules that draw noise in `step` (DDPM, ancestral samplers) are
detected by stepping with two different generators; checks that need determinism are not applicable to
them, and the x0 check uses a looser tolerance.
"""

from __future__ import annotations

import json
import math
from itertools import pairwise
from typing import Any, ClassVar

import torch
from pydantic import BaseModel

from core.contracts.base import (
    Contract,
    NotApplicable,
    assert_close,
    assert_equal,
    assert_finite,
    generator,
    randn,
)
from core.contracts.oracles import (
    clean_signal,
    forward_coefficients,
    oracle_prediction,
    prediction_type_of,
    stand_in_output,
)
from core.schedules import img2img_timesteps

STEP_COUNTS = (3, 10, 25)


def rebuilt(scheduler: Any, config: BaseModel | None = None) -> Any:
    """A fresh scheduler of the same class, as pipelines make one: `type(s)(config)`. When the constructor
    refuses its own config, the check using it fails with one line pointing at `constructor_accepts_its_own_config`."""
    try:
        return type(scheduler)(scheduler.config if config is None else config)
    except Exception as exc:
        raise AssertionError(
            f"type(s)(s.config) failed ({type(exc).__name__}), see constructor_accepts_its_own_config"
        ) from exc


def num_train_timesteps(scheduler: Any) -> int:
    value = getattr(scheduler.config, "num_train_timesteps", None)
    assert isinstance(value, int) and value >= 1, f"config.num_train_timesteps must be a positive int, got {value!r}"
    return value


def warmup_timesteps(scheduler: Any) -> int:
    """The scheduler's declared warm-up timesteps (`warmup_timesteps`, default 0): an int ≥ 0."""
    value = getattr(scheduler, "warmup_timesteps", 0)
    assert isinstance(value, int) and value >= 0, f"warmup_timesteps must be an int >= 0, got {value!r}"
    return value


def run_loop(scheduler: Any, noise: torch.Tensor, steps: int, *, seed: int = 0) -> torch.Tensor:
    """The classic diffusers loop, `stand_in_output` as the model (in the dtype of `noise`); the final sample."""
    scheduler.set_timesteps(steps)
    rng = generator(seed)
    sample = noise * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        model_output = stand_in_output(scheduler.scale_model_input(sample, t), t).to(noise.dtype)
        sample = scheduler.step(model_output, t, sample, generator=rng).prev_sample
    return sample


def is_stochastic(scheduler: Any, shape: tuple[int, ...], steps: int) -> bool:
    """True when two whole runs from the same noise give different results for different generators (a rule
    may draw noise on some steps only)."""
    noise = randn(*shape, seed=3)
    return not torch.equal(
        run_loop(rebuilt(scheduler), noise, steps, seed=1), run_loop(rebuilt(scheduler), noise, steps, seed=2)
    )


class SchedulerContract(Contract):
    """Checks for a `core.Scheduler`. Override `shape` or `steps` in a subclass if needed."""

    kind = "scheduler"
    shape: ClassVar[tuple[int, ...]] = (2, 4, 8, 8)
    steps: ClassVar[int] = 10
    x0_atol: ClassVar[float] = 1e-4
    x0_atol_stochastic: ClassVar[float] = 1e-3

    def test_constructor_accepts_its_own_config(self, component: Any) -> None:
        """`type(s)(s.config)` builds a fresh scheduler: pipelines make a private copy per call this way. A
        constructor taking keyword arguments (diffusers' style) needs a config object it also accepts."""
        try:
            type(component)(component.config)
        except Exception as exc:
            detail = str(exc).splitlines()[0][:200] if str(exc) else ""
            raise AssertionError(
                f"the constructor must accept its own config: {type(component).__name__}(s.config) raised "
                f"{type(exc).__name__}: {detail}"
            ) from exc

    def test_timesteps_descending(self, component: Any) -> None:
        """`set_timesteps(n, device="cpu")` makes `timesteps` a 1-D CPU tensor, non-increasing, first > last,
        for n = 3, 10 and 25."""
        for n in STEP_COUNTS:
            component.set_timesteps(n, device="cpu")
            ts = component.timesteps
            assert isinstance(ts, torch.Tensor) and ts.ndim == 1, f"n={n}: timesteps must be a 1-D tensor, got {ts!r}"
            assert ts.device.type == "cpu", f"n={n}: set_timesteps(device='cpu') gave timesteps on {ts.device}"
            assert bool((ts[1:] <= ts[:-1]).all()), f"n={n}: timesteps are not descending: {ts.tolist()}"
            first, last = ts[0].item(), ts[-1].item()
            assert first > last, f"n={n}: the first timestep {first} is not above the last {last}"

    def test_timesteps_in_range(self, component: Any) -> None:
        """Every timestep lies in [0, config.num_train_timesteps) for n = 3, 10 and 25."""
        total = num_train_timesteps(component)
        for n in STEP_COUNTS:
            component.set_timesteps(n)
            low, high = component.timesteps.min().item(), component.timesteps.max().item()
            assert 0 <= low and high < total, f"n={n}: timesteps must lie in [0, {total}), got [{low}, {high}]"

    def test_timesteps_count(self, component: Any) -> None:
        """n steps give between n and `order`·n + `warmup_timesteps` timesteps. `order` is an int ≥ 1 (the model
        calls per step); `warmup_timesteps` (optional, default 0) is a declared int ≥ 0 of extra timesteps a
        multistep rule spends warming up, e.g. 1 for diffusers' PNDM/PLMS with `skip_prk_steps`."""
        order, warmup = component.order, warmup_timesteps(component)
        assert isinstance(order, int) and order >= 1, f"order must be an int >= 1, got {order!r}"
        for n in STEP_COUNTS:
            component.set_timesteps(n)
            count = len(component.timesteps)
            most = order * n + warmup
            assert n <= count <= most, (
                f"n={n}: {count} timesteps; a rule of order {order} with {warmup} warm-up timesteps needs "
                f"between {n} and {most} (declare warm-up timesteps with a `warmup_timesteps` attribute)"
            )

    def test_strength_keeps_the_last_steps(self, component: Any) -> None:
        """img2img at strength s runs the last ⌊n·s⌋ steps of the full schedule (+ `warmup_timesteps` for a rule of
        order 1), as a sampler starts it (`core.schedules.img2img_timesteps`): cut by the scheduler's own
        `set_timesteps(..., strength=)` when it has one, else by the sampler, the diffusers way."""
        n, strength = self.steps, 0.5
        component.set_timesteps(n)
        full = component.timesteps.clone()
        part = img2img_timesteps(component, n, strength)
        assert 0 < len(part) < len(full), f"strength {strength}: {len(part)} timesteps of {len(full)}, expected fewer"
        assert torch.equal(part, full[len(full) - len(part) :]), (
            f"strength {strength}: timesteps {part.tolist()} are not the last steps of {full.tolist()}"
        )
        if component.order == 1:
            expected = math.floor(n * strength) + warmup_timesteps(component)
            assert len(part) == expected, f"strength {strength}, n={n}: {len(part)} timesteps, expected {expected}"

    def test_init_noise_sigma(self, component: Any) -> None:
        """After `set_timesteps`, `init_noise_sigma` (the scale of the starting noise) is finite and > 0."""
        component.set_timesteps(self.steps)
        sigma = float(component.init_noise_sigma)
        assert math.isfinite(sigma) and sigma > 0, f"init_noise_sigma must be finite and > 0, got {sigma}"

    def test_scale_model_input_keeps_shape_dtype_device(self, component: Any) -> None:
        """`scale_model_input(sample, t)` keeps the shape, dtype (float32 and float16) and device of `sample`, and
        returns finite values, at every timestep."""
        component.set_timesteps(self.steps)
        for dtype in (torch.float32, torch.float16):
            sample = randn(*self.shape, seed=0, dtype=dtype)
            for t in component.timesteps:
                scaled = component.scale_model_input(sample, t)
                got = (tuple(scaled.shape), scaled.dtype, scaled.device)
                expected = (tuple(sample.shape), dtype, sample.device)
                assert got == expected, f"t={t.item()}: scale_model_input turned {expected} into {got}"
                assert_finite(scaled, f"scale_model_input at t={t.item()} ({dtype})")

    def test_step_output(self, component: Any) -> None:
        """`step` returns a StepOutput whose `prev_sample` has the sample's shape and dtype and is finite, and whose
        `pred_original_sample`, when given, has the sample's shape."""
        component.set_timesteps(self.steps)
        t = component.timesteps[0]
        sample = randn(*self.shape, seed=0) * component.init_noise_sigma
        out = component.step(stand_in_output(component.scale_model_input(sample, t), t).to(sample.dtype), t, sample)
        got, expected = (tuple(out.prev_sample.shape), out.prev_sample.dtype), (tuple(sample.shape), sample.dtype)
        assert got == expected, f"prev_sample is {got}, expected {expected}"
        assert_finite(out.prev_sample, "prev_sample")
        if out.pred_original_sample is not None:
            x0_shape = tuple(out.pred_original_sample.shape)
            assert x0_shape == expected[0], f"pred_original_sample is {x0_shape}, expected {expected[0]}"

    def test_true_noise_ends_at_x0(self, component: Any) -> None:
        """Fed the true noise (or v, or x0, per `config.prediction_type`) at every step, a run from `add_noise(x0, ε,
        first t)` ends at x0 (1e-4; 1e-3 for rules that draw noise): the last step must reach noise level 0."""
        stochastic = is_stochastic(component, self.shape, self.steps)
        prediction_type = prediction_type_of(component)
        x0, noise = clean_signal(self.shape, seed=1), randn(*self.shape, seed=2)
        component.set_timesteps(self.steps)
        rng = generator(0)
        sample = component.add_noise(x0, noise, component.timesteps[0])
        for t in component.timesteps:
            model_output = oracle_prediction(component, prediction_type, x0, sample, t)
            sample = component.step(model_output, t, sample, generator=rng).prev_sample
        atol = self.x0_atol_stochastic if stochastic else self.x0_atol
        kind = "stochastic" if stochastic else "deterministic"
        assert_close(
            sample,
            x0,
            f"{kind} rule fed the true {prediction_type} at every step must end at x0 "
            "(does the last step reach noise level 0, i.e. ᾱ = 1 or σ = 0?)",
            atol=atol,
            rtol=atol,
        )

    def test_add_noise_matches_forward_process(self, component: Any) -> None:
        """`add_noise(x0, ε, t)` is a_t·x0 + s_t·ε with the same finite a_t, s_t > 0 for every element, a²/s²
        growing as t falls, the right mean and spread on 4096 draws, and (B,) timesteps equal per-sample calls."""
        component.set_timesteps(self.steps)
        timesteps = torch.unique(component.timesteps).flip(0)  # distinct, descending
        x0, noise = randn(*self.shape, seed=1), randn(*self.shape, seed=2)
        constant, many = torch.full((1, 4, 32, 32), 0.5), randn(1, 4, 32, 32, seed=4)
        snrs = []
        for t in timesteps:
            a, s = forward_coefficients(component, x0, t)
            a0, s0 = a.reshape(-1)[0].item(), s.reshape(-1)[0].item()
            uniform = bool((a == a0).all() and (s == s0).all())
            assert uniform, f"t={t.item()}: add_noise scales the elements of one sample unequally"
            assert a0 > 0 and s0 > 0 and math.isfinite(a0) and math.isfinite(s0), (
                f"t={t.item()}: forward coefficients a={a0}, s={s0} must be finite and > 0"
            )
            assert_close(
                component.add_noise(x0, noise, t),
                a * x0 + s * noise,
                f"t={t.item()}: add_noise(x0, ε) must be a·x0 + s·ε",
                atol=1e-5,
                rtol=1e-5,
            )
            snrs.append(a0**2 / s0**2)
            noisy = component.add_noise(constant, many, t)  # statistics over 4096 draws
            spread = 5 * s0 / math.sqrt(noisy.numel())
            assert abs(noisy.mean().item() - 0.5 * a0) < spread, (
                f"t={t.item()}: mean of add_noise(0.5, ε) is {noisy.mean().item():.4f}, expected {0.5 * a0:.4f}"
            )
            assert abs(noisy.std().item() / s0 - 1) < 0.1, (
                f"t={t.item()}: std of add_noise(0.5, ε) is {noisy.std().item():.4f}, expected {s0:.4f}"
            )
        assert all(lo < hi for lo, hi in pairwise(snrs)), (
            f"signal-to-noise a²/s² must grow as t falls; along {timesteps.tolist()} it is {snrs}"
        )
        pair = timesteps[[0, -1]]
        assert_close(
            component.add_noise(x0[:2], noise[:2], pair),
            torch.cat([component.add_noise(x0[i : i + 1], noise[i : i + 1], pair[i]) for i in range(2)]),
            "add_noise with (B,) timesteps must equal per-sample calls",
            atol=1e-6,
            rtol=1e-6,
        )

    def test_same_generator_same_result(self, component: Any) -> None:
        """Two runs with generators of the same seed give bitwise the same result."""
        noise = randn(*self.shape, seed=0)
        first = run_loop(rebuilt(component), noise, self.steps, seed=7)
        second = run_loop(rebuilt(component), noise, self.steps, seed=7)
        assert_equal(first, second, "two runs with the same generator seed")

    def test_fp16_in_fp16_out(self, component: Any) -> None:
        """float16 in, float16 out: `step`, `add_noise` and a whole run keep float16 and stay finite."""
        noise = randn(*self.shape, seed=0, dtype=torch.float16)
        component.set_timesteps(self.steps)
        t = component.timesteps[0]
        stepped = component.step(stand_in_output(noise, t), t, noise * component.init_noise_sigma).prev_sample
        noisy = component.add_noise(noise, noise, t)
        final = run_loop(rebuilt(component), noise, self.steps)
        for what, dtype in (("step", stepped.dtype), ("add_noise", noisy.dtype), ("a whole run", final.dtype)):
            assert dtype == torch.float16, f"{what} turned float16 into {dtype}"
        assert_finite(final, "a float16 run")

    def test_config_is_frozen_pydantic(self, component: Any) -> None:
        """`config` is a pydantic model with `frozen=True` and `extra="forbid"` (immutable, typos rejected)."""
        config = component.config
        assert isinstance(config, BaseModel), f"config must be a pydantic model, got {type(config).__name__}"
        assert config.model_config.get("frozen") is True, f"{type(config).__name__} must set frozen=True"
        assert config.model_config.get("extra") == "forbid", f'{type(config).__name__} must set extra="forbid"'

    def test_config_round_trips_through_dict(self, component: Any) -> None:
        """`Config.model_validate(config.model_dump())` equals the config and rebuilds a scheduler with the same
        trajectory."""
        config = component.config
        again = type(config).model_validate(config.model_dump())
        assert again == config, f"model_validate(model_dump()) changed the config: {config!r} → {again!r}"
        noise = randn(*self.shape, seed=0)
        assert_equal(
            run_loop(rebuilt(component, again), noise, self.steps),
            run_loop(rebuilt(component), noise, self.steps),
            "trajectory of a scheduler rebuilt from its config's dict",
        )

    def test_config_round_trips_through_json(self, component: Any) -> None:
        """The config survives JSON (`model_dump_json` → `model_validate_json`) unchanged, trajectory included:
        what a PNG recipe and a registry file rely on."""
        config = component.config
        text = json.dumps(json.loads(config.model_dump_json()))
        again = type(config).model_validate_json(text)
        assert again == config, f"config changed through JSON: {config!r} → {again!r}"
        noise = randn(*self.shape, seed=0)
        assert_equal(
            run_loop(rebuilt(component, again), noise, self.steps),
            run_loop(rebuilt(component), noise, self.steps),
            "trajectory of a scheduler rebuilt from its config's JSON",
        )

    def test_batch_of_n_equals_n_singles(self, component: Any) -> None:
        """A deterministic rule treats batch items independently: a batch of 3 equals 3 single runs (1e-6/1e-5)."""
        if is_stochastic(component, self.shape, self.steps):
            raise NotApplicable("the rule draws noise in step(), so a batch and single runs see different noise")
        noise = randn(3, *self.shape[1:], seed=0)
        batch = run_loop(rebuilt(component), noise, self.steps)
        singles = torch.cat([run_loop(rebuilt(component), noise[i : i + 1], self.steps) for i in range(3)])
        assert_close(batch, singles, "a batch of 3 against 3 single runs", atol=1e-6, rtol=1e-5)

    def test_step_before_set_timesteps_raises(self, component: Any) -> None:
        """`step` before `set_timesteps` raises an exception whose message names `set_timesteps` (what to do).
        `core.InputError` is recommended; a pipeline wraps any exception into a diffstack error naming the plugin."""
        fresh = rebuilt(component)
        sample = randn(*self.shape, seed=0)
        t = num_train_timesteps(component) // 2
        try:
            fresh.step(sample, t, sample)
        except Exception as exc:
            assert "set_timesteps" in str(exc), (
                f"step() before set_timesteps() raised {type(exc).__name__}: {exc!s:.200}; "
                "the message should say to call set_timesteps first"
            )
            return
        raise AssertionError("step() before set_timesteps() returned instead of raising")
