"""`cfg`: text-to-image sampling with classifier-free guidance — Ho & Salimans (2022).

pred = u + g·(c − u), one batched denoiser call for both halves, optional guidance rescale (Lin et al.
2024). Given init latents it also runs img2img, starting `strength` of the way into the schedule.
"""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from core import ComponentSpec, hookimpl
from core.sampling import GuidedSampler


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    guidance_rescale: float = Field(
        0.0, ge=0.0, le=1.0, description="φ of Lin et al.: blend towards the rescaled guided prediction (0: off)"
    )


class CFGSampler(GuidedSampler):
    """Classifier-free guidance; a full txt2img run unless a strength is given with init latents."""


@hookimpl
def diffstack_components() -> list[ComponentSpec]:
    return [ComponentSpec(kind="sampler", name="cfg", factory=CFGSampler, config=Config,
                          description="txt2img with classifier-free guidance (one batched call)")]
