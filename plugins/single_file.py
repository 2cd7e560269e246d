"""Where original single-file checkpoints (the LDM and SGM training code's) keep each part of a model.

SD 1.x and 2.x: U-Net under `model.diffusion_model.`, VAE under `first_stage_model.`, text tower under
`cond_stage_model.`; SDXL keeps its U-Net and VAE there too and its two text towers under `conditioner.`
(`conditioner.embedders.0.` and `.1.`). Every model plugin's `CheckpointLayout` names all of them as its
`single_file_family`, so a single file lacking that plugin's part is refused as such, not read as a native file.
"""

from __future__ import annotations

UNET, VAE, SD_TEXT, SDXL_TEXT = "model.diffusion_model.", "first_stage_model.", "cond_stage_model.", "conditioner."
FAMILY = (UNET, VAE, SD_TEXT, SDXL_TEXT)
