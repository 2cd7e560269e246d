"""Stable Diffusion in 15 lines, written against diffstack's components.

    python examples/fifteen_lines.py "a large red circle on a blue background" --out circle.png

The loop is the classic one: embed prompt and empty prompt, scale seeded noise by `init_noise_sigma`, and
for each timestep scale the input, run the denoiser once on both halves, guide, step; then decode.
"""

from __future__ import annotations

import argparse

import torch

import core
from core.images import to_pil


def fifteen_lines(pipe: core.Pipeline, prompt: str, *, seed: int, steps: int, guidance: float) -> torch.Tensor:
    """One image (1, 3, H, W) in [-1, 1] for `prompt`, from the parts of `pipe`, with an LMS scheduler."""
    scheduler = core.create("scheduler", "lms", beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    f, c = pipe.encoder.downsample_factor, pipe.encoder.latent_channels
    height, width = pipe.defaults.height or 512, pipe.defaults.width or 512
    with torch.inference_mode():
        context = pipe.text(["", prompt])  # (2, L, D): uncond, cond
        latents = torch.randn((1, c, height // f, width // f), generator=torch.Generator().manual_seed(seed))
        scheduler.set_timesteps(steps)
        latents = latents * scheduler.init_noise_sigma
        for t in scheduler.timesteps:
            model_input = scheduler.scale_model_input(torch.cat([latents] * 2), t)  # (2, C, h, w)
            uncond, cond = pipe.denoiser(model_input, t, context).chunk(2)  # the entire noise, twice
            noise = uncond + guidance * (cond - uncond)  # classifier-free guidance
            latents = scheduler.step(noise, t, latents).prev_sample  # remove part of it
        return pipe.encoder.decode(latents)  # (1, 3, H, W) in [-1, 1]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prompt")
    parser.add_argument("--registry", help="registry file (default: the usual search)")
    parser.add_argument("--pipeline", help="pipeline whose parts to use (default: the registry's default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--guidance", type=float, default=5.0)
    parser.add_argument("--out", default="fifteen_lines.png")
    args = parser.parse_args(argv)
    pipe = core.load_registry(args.registry).build(args.pipeline, device="cpu")
    image = fifteen_lines(pipe, args.prompt, seed=args.seed, steps=args.steps, guidance=args.guidance)
    to_pil(image)[0].save(args.out)
    print(args.out)


if __name__ == "__main__":
    main()
