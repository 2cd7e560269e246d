"""Built-in plugins. Each module is a self-contained plugin registered exactly like a third-party one."""

BUILTIN_MODULES: tuple[str, ...] = (
    "plugins.clip_text",
    "plugins.vae_kl",
    "plugins.unet",
    "plugins.ddpm",
    "plugins.ddim",
    "plugins.lms",
    "plugins.euler",
    "plugins.euler_ancestral",
    "plugins.dpmpp_2m",
    "plugins.guided",
    "plugins.shapes",
)
