"""Contract suite for `core.Sampler`: the loop lands on x0 under an oracle, guidance, callbacks, early stop.

The loop needs a scheduler: `make_scheduler()` builds a fresh one per run, by default the built-in "ddim"
with its example config; override it in a subclass to check a sampler against another scheduler. The
denoisers are test doubles from `core.contracts.oracles`: an oracle that knows x0 (so a correct loop ends
exactly there) and a context-dependent stand-in.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from core.contracts.base import Contract, assert_close, assert_equal, generator, randn
from core.contracts.oracles import AddedInputDenoiser, OracleDenoiser, StandInDenoiser, clean_signal
from core.interfaces import SamplerInputs, Scheduler, StepEvent
from core.plugin_manager import PluginManager


class SamplerContract(Contract):
    """Checks for a `core.Sampler`. Override `make_scheduler`, `steps` or the sizes if needed."""

    kind = "sampler"
    shape: ClassVar[tuple[int, ...]] = (2, 4, 8, 8)
    context_shape: ClassVar[tuple[int, int]] = (5, 8)  # (L, D)
    steps: ClassVar[int] = 10
    x0_atol: ClassVar[float] = 1e-4

    def make_scheduler(self) -> Scheduler:
        """A fresh scheduler for one run: the built-in "ddim" with its example config."""
        spec = PluginManager.discover().get("scheduler", "ddim").spec
        return spec.build(spec.config.model_validate(spec.example_config))

    def contexts(self, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """(context, uncond_context), each (B, L, D)."""
        batch = self.shape[0]
        return randn(batch, *self.context_shape, seed=seed), randn(batch, *self.context_shape, seed=seed + 1)

    def stand_in(self) -> StandInDenoiser:
        return StandInDenoiser(self.shape[1], self.context_shape[1])

    def oracle(self, scheduler: Scheduler) -> tuple[torch.Tensor, OracleDenoiser]:
        """A known x0 (B, C, h, w) and a denoiser that predicts the true noise for it under `scheduler`."""
        x0 = clean_signal(self.shape, seed=1)
        return x0, OracleDenoiser(x0, scheduler, context_dim=self.context_shape[1])

    def run(
        self,
        sampler: Any,
        denoiser: Any,
        scheduler: Scheduler,
        *,
        uncond_context: torch.Tensor | None = None,
        **options: Any,
    ) -> torch.Tensor:
        """One sampler call from fixed noise and context, `steps` steps, a generator of seed 0 unless overridden."""
        context, _ = self.contexts()
        noise = randn(*self.shape, seed=10)  # (B, C, h, w)
        options = {"steps": self.steps, "generator": generator(0), **options}
        with torch.inference_mode():
            return sampler(SamplerInputs(denoiser, scheduler, noise, context, uncond_context, **options))

    def test_oracle_lands_on_x0(self, component: Any) -> None:
        """With an oracle denoiser (exact predictions for a known x0) the run returns x0 (B, C, h, w) to `x0_atol`.
        Follow the scheduler's loop: set_timesteps(steps), noise · init_noise_sigma, the denoiser on
        scale_model_input(latents, t), one scheduler.step per timestep; a skipped step or input scaling fails here."""
        scheduler = self.make_scheduler()
        x0, oracle = self.oracle(scheduler)
        latents = self.run(component, oracle, scheduler)
        got = tuple(latents.shape) if isinstance(latents, torch.Tensor) else type(latents).__name__
        assert got == tuple(x0.shape), f"the sampler returned {got}, expected {tuple(x0.shape)}"
        assert_close(latents, x0, "final latents with a denoiser that predicts the true noise", atol=self.x0_atol)

    def test_oracle_lands_on_x0_with_guidance(self, component: Any) -> None:
        """At guidance 7.5, with cond and uncond oracle predictions that agree, the run still ends on x0 to `x0_atol`.
        Combine as pred = u + g·(c − u) (u: uncond_context, c: context), so that equal halves give u for any g."""
        scheduler = self.make_scheduler()
        x0, oracle = self.oracle(scheduler)
        _, uncond = self.contexts()
        latents = self.run(component, oracle, scheduler, uncond_context=uncond, guidance_scale=7.5)
        assert_close(
            latents, x0, "final latents at guidance 7.5 when cond and uncond predictions agree", atol=self.x0_atol
        )

    def test_oracle_lands_on_x0_from_init_latents(self, component: Any) -> None:
        """img2img from init_latents = x0 at strength 0.5 returns x0 to `x0_atol`, in fewer steps than a full run.
        Keep the last ⌊steps·strength⌋ steps (`core.schedules.img2img_timesteps`) and start from
        scheduler.add_noise(init_latents, noise, first of those timesteps), not from pure noise."""
        scheduler = self.make_scheduler()
        x0, oracle = self.oracle(scheduler)
        events: list[StepEvent] = []
        latents = self.run(component, oracle, scheduler, init_latents=x0, strength=0.5, callback=events.append)
        assert_close(
            latents, x0, "final latents of an img2img run (strength 0.5) with an oracle denoiser", atol=self.x0_atol
        )
        full = self.make_scheduler()
        full.set_timesteps(self.steps)
        assert 0 < len(events) < len(full.timesteps), (
            f"strength 0.5 ran {len(events)} steps; expected fewer than the {len(full.timesteps)} of a full run"
        )

    def test_guidance_one_equals_unguided(self, component: Any) -> None:
        """Guidance 1.0 with uncond_context equal to context matches uncond_context=None within atol = rtol = 1e-5.
        Combine as pred = u + g·(c − u) (u: uncond_context, c: context); the stand-in denoiser depends on context."""
        context, _ = self.contexts()
        unguided = self.run(component, self.stand_in(), self.make_scheduler())
        guided = self.run(
            component, self.stand_in(), self.make_scheduler(), uncond_context=context.clone(), guidance_scale=1.0
        )
        assert_close(
            guided,
            unguided,
            "guidance 1.0 with uncond_context == context against uncond_context=None",
            atol=1e-5,
            rtol=1e-5,
        )

    def test_callback_once_per_step_in_order(self, component: Any) -> None:
        """The callback gets one StepEvent per timestep in order: steps 0..n−1, the scheduler's timesteps, num_steps n.
        n = len(scheduler.timesteps) after the run; the last event's latents equal the returned latents bitwise.
        Call back after each scheduler.step with the timestep just processed and the latents it produced."""
        scheduler = self.make_scheduler()
        events: list[StepEvent] = []
        latents = self.run(component, self.stand_in(), scheduler, callback=events.append)
        timesteps = scheduler.timesteps
        assert [e.step for e in events] == list(range(len(timesteps))), (
            f"callback steps {[e.step for e in events]}, expected 0..{len(timesteps) - 1} once each"
        )
        assert [float(e.timestep) for e in events] == [float(t) for t in timesteps], (
            f"callback timesteps {[float(e.timestep) for e in events]}, expected the scheduler's {timesteps.tolist()}"
        )
        assert all(e.num_steps == len(timesteps) for e in events), (
            f"num_steps {sorted({e.num_steps for e in events})}, expected {len(timesteps)}"
        )
        assert_equal(events[-1].latents, latents, "latents of the last step event against the returned latents")

    def test_request_stop_ends_early(self, component: Any) -> None:
        """event.request_stop() at step 1 ends the run after that step: no later events, fewer denoiser calls.
        Check each event after its callback (`core.interfaces.should_stop`), then break and return its latents."""
        full = self.stand_in()
        self.run(component, full, self.make_scheduler())
        stopped = self.stand_in()
        events: list[StepEvent] = []

        def stop_after_two(event: StepEvent) -> None:
            events.append(event)
            if event.step == 1:
                event.request_stop()

        latents = self.run(component, stopped, self.make_scheduler(), callback=stop_after_two)
        assert [e.step for e in events] == [0, 1], f"steps after request_stop() at step 1: {[e.step for e in events]}"
        assert stopped.calls < full.calls, (
            f"the stopped run called the denoiser {stopped.calls} times, the full run {full.calls}"
        )
        assert_equal(latents, events[-1].latents, "returned latents against those of the step that stopped the run")

    def test_added_inputs_follow_their_half(self, component: Any) -> None:
        """A denoiser with the added input `pooled` gets it on every call, batched like the contexts.
        Pass `run.added` as keyword arguments (`denoiser(x, t, context, **added)`); under guidance, concatenate
        `uncond_added` then `added` as the contexts are (`core.conditioning.guidance_batch`)."""
        context, uncond = self.contexts()
        for guidance, negative in ((1.0, None), (7.5, uncond)):
            denoiser = AddedInputDenoiser(self.shape[1], self.context_shape[1])
            added = {"pooled": context[:, 0]}
            uncond_added = {} if negative is None else {"pooled": negative[:, 0]}
            latents = self.run(
                component, denoiser, self.make_scheduler(), uncond_context=negative, guidance_scale=guidance,
                added=added, uncond_added=uncond_added,
            )  # fmt: skip
            assert denoiser.calls > 0 and tuple(latents.shape) == self.shape, (
                f"guidance {guidance}: {denoiser.calls} denoiser calls, latents {tuple(latents.shape)}"
            )
