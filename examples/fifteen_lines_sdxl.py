"""The 15-line loop for SDXL: what changes when the denoiser takes more than the context.

    DIFFSTACK_SDXL=~/models/stable-diffusion-xl-base-1.0 python examples/fifteen_lines_sdxl.py "a fox in the snow"

Three lines differ from `fifteen_lines.py` (marked `# SDXL`): the text conditioner returns a `core.Conditioning`
(context and the pooled embedding), the U-Net derives its size/crop ids from the image size, and both go to
every denoiser call as keyword arguments — its `added_inputs` (`core/conditioning.py`).
"""

from __future__ import annotations

import argparse

import torch

import core
from core.images import to_pil


def fifteen_lines_sdxl(pipe: core.Pipeline, prompt: str, *, seed: int, steps: int, guidance: float) -> torch.Tensor:
    """One image (1, 3, H, W) in [-1, 1] for `prompt`, from the parts of an SDXL `pipe`, with SDXL's Euler."""
    scheduler = core.create("scheduler", "euler", beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                            timestep_spacing="leading", steps_offset=1)  # fmt: skip
    f, c = pipe.encoder.downsample_factor, pipe.encoder.latent_channels
    height = width = pipe.denoiser.sample_size * f  # the trained size: 1024 for SDXL
    with torch.inference_mode():
        text = pipe.text(["", prompt])  # SDXL: context (2, L, D), added {"pooled": (2, P)}; "" gives zeros
        time_ids = pipe.denoiser.micro_conditioning(height, width)["time_ids"].expand(2, -1)  # SDXL: (2, 6)
        added = {"pooled": text.added["pooled"], "time_ids": time_ids}  # SDXL: the denoiser's added inputs
        latents = torch.randn((1, c, height // f, width // f), generator=torch.Generator().manual_seed(seed))
        scheduler.set_timesteps(steps)
        latents = latents * scheduler.init_noise_sigma
        for t in scheduler.timesteps:
            model_input = scheduler.scale_model_input(torch.cat([latents] * 2), t)  # (2, C, h, w)
            uncond, cond = pipe.denoiser(model_input, t, text.context, **added).chunk(2)  # the entire noise, twice
            noise = uncond + guidance * (cond - uncond)  # classifier-free guidance
            latents = scheduler.step(noise, t, latents).prev_sample  # remove part of it
        return pipe.encoder.decode(latents)  # (1, 3, H, W) in [-1, 1]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prompt")
    parser.add_argument("--registry", help="registry file (default: the usual search)")
    parser.add_argument("--pipeline", default="sdxl", help="an SDXL pipeline whose parts to use (default: sdxl)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--guidance", type=float, default=5.0)
    parser.add_argument("--out", default="fifteen_lines_sdxl.png")
    args = parser.parse_args(argv)
    pipe = core.load_registry(args.registry).build(args.pipeline, device="cpu")
    image = fifteen_lines_sdxl(pipe, args.prompt, seed=args.seed, steps=args.steps, guidance=args.guidance)
    to_pil(image)[0].save(args.out)
    print(args.out)


if __name__ == "__main__":
    main()
