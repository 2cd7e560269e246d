"""`img2img`: SDEdit — Meng et al. (2022), "SDEdit: Guided Image Synthesis and Editing with SDEs".

The init latents are noised to the timestep a `strength` fraction into the schedule, x_t = a_t·x0 + s_t·ε,
and denoised from there with classifier-free guidance. `strength` near 0 keeps the image, 1 ignores it;
its default comes from the config. Without init latents it is a plain txt2img run.
"""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from core import ComponentSpec, hookimpl
from core.sampling import GuidedSampler


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    strength: float = Field(0.8, gt=0.0, le=1.0, description="how far into the schedule an init image starts")
    guidance_rescale: float = Field(0.0, ge=0.0, le=1.0, description="φ of Lin et al. (0: off)")


class Img2ImgSampler(GuidedSampler):
    """Classifier-free guidance from a noised init image, `config.strength` into the schedule by default."""

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.default_strength = config.strength


@hookimpl
def diffstack_components() -> list[ComponentSpec]:
    return [ComponentSpec(kind="sampler", name="img2img", factory=Img2ImgSampler, config=Config,
                          description="img2img (SDEdit) with classifier-free guidance")]
