"""The model parts against diffusers, same tensors, same process: U-Net forward and checkpoint loading.

U-Net forward: Stable Diffusion 1.5's architecture (random weights, batch 2 = one image with classifier-free
guidance, 77 context tokens; 32×32 latents on the CPU, 64×64 in fp16 on CUDA) and the shapes-tiny config with
its shipped weights; ours as built and ours on the fast path (`core.performance.fast`), against diffusers'
`UNet2DConditionModel`.

Loading: an SD 1.5-sized fp16 diffusers folder (U-Net, VAE, text encoder) built into a pipeline by our registry
(fp16 target) and by diffusers' `StableDiffusionPipeline.from_pretrained`, each in a fresh process: wall
time and peak memory (peak RSS on the CPU, every weight read once so nothing stays merely mapped; peak
allocated GPU memory on CUDA) against the size of the files. The same for an SDXL 1.0 base-sized folder
(`load_sdxl_rows`: 2.6 B-parameter U-Net, two text towers, 6.9 GB of fp16 files) against diffusers'
`StableDiffusionXLPipeline.from_pretrained`; its random tensors are streamed to disk one at a time, so
writing it never holds a model in memory.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import torch

from bench.pipelines import sd15_pipeline, shapes_tiny_pipeline
from bench.reference import OURS_ONLY
from bench.row import Row
from bench.timing import measure, warmups
from bench.vocabulary import write_vocab_folder
from core.performance import fast as fast_path
from core.performance import optimise_part

LOAD = """
import json, sys, time, torch
from bench.timing import resident_peak
{imports}
start = time.perf_counter()
{build}
sum(float(p.float().sum()) for part in parts for p in part.parameters())  # read every weight: mapped counts once read
seconds = time.perf_counter() - start
gpu = torch.cuda.max_memory_allocated() if sys.argv[2] == "cuda" else None
print(json.dumps({{"seconds": seconds, "rss": resident_peak(), "gpu": gpu}}))
"""
LOAD_OURS_BUILD = """pipe = load_registry(sys.argv[1]).build({name!r}, device=sys.argv[2], dtype=torch.float16)
parts = (pipe.denoiser, pipe.encoder, pipe.text)"""
OURS_IMPORTS = "from core.registry import load_registry"
LOAD_OURS = LOAD.format(imports=OURS_IMPORTS, build=LOAD_OURS_BUILD.format(name="sd15"))
LOAD_DIFFUSERS = LOAD.format(
    imports="from diffusers import StableDiffusionPipeline",
    build="""pipe = StableDiffusionPipeline.from_pretrained(sys.argv[1], torch_dtype=torch.float16, safety_checker=None,
                                               requires_safety_checker=False).to(sys.argv[2])
parts = (pipe.unet, pipe.vae, pipe.text_encoder)""",
)
LOAD_OURS_SDXL = LOAD.format(imports=OURS_IMPORTS, build=LOAD_OURS_BUILD.format(name="sdxl"))
LOAD_DIFFUSERS_SDXL = LOAD.format(
    imports="from diffusers import StableDiffusionXLPipeline",
    build="""pipe = StableDiffusionXLPipeline.from_pretrained(sys.argv[1], torch_dtype=torch.float16,
                                                 add_watermarker=False).to(sys.argv[2])
parts = (pipe.unet, pipe.vae, pipe.text_encoder, pipe.text_encoder_2)""",
)

# SDXL 1.0 base's architecture, as its diffusers folder states it (stabilityai/stable-diffusion-xl-base-1.0).
SDXL_UNET = {
    "addition_embed_type": "text_time",
    "addition_embed_type_num_heads": 64,
    "addition_time_embed_dim": 256,
    "attention_head_dim": [5, 10, 20],
    "block_out_channels": [320, 640, 1280],
    "cross_attention_dim": 2048,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "layers_per_block": 2,
    "projection_class_embeddings_input_dim": 2816,
    "sample_size": 128,
    "transformer_layers_per_block": [1, 2, 10],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "use_linear_projection": True,
}
SDXL_VAE = {
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "layers_per_block": 2,
    "latent_channels": 4,
    "sample_size": 1024,
    "scaling_factor": 0.13025,
    "force_upcast": True,
}
SDXL_TOWER = {"vocab_size": 49408, "max_position_embeddings": 77, "bos_token_id": 49406, "eos_token_id": 49407}
SDXL_TEXT = {  # CLIP ViT-L/14's text tower; OpenCLIP ViT-bigG/14's, with its projection
    "text_encoder": {
        **SDXL_TOWER,
        "hidden_size": 768,
        "intermediate_size": 3072,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "hidden_act": "quick_gelu",
        "projection_dim": 768,
    },
    "text_encoder_2": {
        **SDXL_TOWER,
        "hidden_size": 1280,
        "intermediate_size": 5120,
        "num_hidden_layers": 32,
        "num_attention_heads": 20,
        "hidden_act": "gelu",
        "projection_dim": 1280,
    },
}
SDXL_SCHEDULER = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "timestep_spacing": "leading",
    "steps_offset": 1,
}
SDXL_REGISTRY = """version: 1
pipelines:
  sdxl:   # as registry.yaml's sdxl
    weights: {path: sdxl, format: auto}
    encoder: {plugin: vae-kl, config: {scaling_factor: 0.13025}}
    denoiser:
      plugin: unet2d-condition
      config: {cross_attention_dim: 2048, addition_embed_type: text_time, addition_time_embed_dim: 256,
               projection_class_embeddings_input_dim: 2816}
    text: {plugin: sdxl-text}
    scheduler:
      plugin: euler
      config: {beta_schedule: scaled_linear, beta_start: 0.00085, beta_end: 0.012, timestep_spacing: leading,
               steps_offset: 1}
    sampler: {plugin: cfg}
"""


def unet_rows(device: torch.device, dtype: torch.dtype, repeats: int) -> list[Row]:
    from diffusers import UNet2DConditionModel

    size = 64 if device.type == "cuda" else 32
    cases = [
        (
            f"SD 1.5 arch, batch 2, {size}×{size}, 77 tokens",
            sd15_pipeline(device, dtype).denoiser,
            size,
            77,
            max(1, repeats // 2),
        ),
        ("shapes-tiny, batch 2, 8×8, 16 tokens", shapes_tiny_pipeline(device, dtype).denoiser, 8, 16, 10 * repeats),
    ]
    out = []
    for name, ours, size, tokens, runs in cases:
        with torch.device("meta"):
            reference = UNet2DConditionModel(**ours.config.model_dump(exclude=OURS_ONLY["unet"]))
        reference.load_state_dict(ours.state_dict(), assign=True)
        reference.eval()
        fast = optimise_part("denoiser", copy.deepcopy(ours), fast_path(device), device)
        generator = torch.Generator().manual_seed(0)
        sample = torch.randn(2, ours.in_channels, size, size, generator=generator).to(device, dtype)
        context = torch.randn(2, tokens, ours.context_dim, generator=generator).to(device, dtype)
        timestep = torch.tensor(500, device=device)
        calls = {
            "ours": lambda: ours(sample, timestep, context),
            "ours fast": lambda: fast(sample, timestep, context),
            "diffusers": lambda: reference(sample, timestep, context).sample,
        }
        with torch.inference_mode():
            results = measure(calls, device, runs, warmup_calls=warmups(calls, device))
        theirs = results["diffusers"]
        for label in ("ours", "ours fast"):
            difference = (results[label].output - theirs.output).abs().max().item()
            out.append(
                Row(
                    "unet forward",
                    f"{name} [{label}]",
                    results[label].median,
                    theirs.median,
                    note=f"max |Δ| {difference:.1e}",
                )
            )
    return out


def _load(script: str, folder: Path, device: torch.device) -> dict:
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "-c", script, str(folder), device.type], capture_output=True, text=True, cwd=root
    )
    if done.returncode:
        raise RuntimeError(f"loading benchmark failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def load_rows(device: torch.device, folder: Path) -> list[Row]:
    """Write an SD 1.5-sized fp16 diffusers folder into `folder`, then load it with ours and with diffusers."""
    from bench.reference import diffusers_pipeline

    pipe = diffusers_pipeline(sd15_pipeline(torch.device("cpu"), torch.float16), folder)
    pipe.save_pretrained(folder / "sd15")
    del pipe
    files = sum(f.stat().st_size for f in (folder / "sd15").rglob("*.safetensors"))
    registry = folder / "registry.yaml"
    registry.write_text(
        "version: 1\npipelines:\n  sd15:\n    weights: {path: sd15, format: diffusers}\n"
        "    encoder: {plugin: vae-kl}\n    denoiser: {plugin: unet2d-condition}\n"
        "    text: {plugin: clip-text}\n"
        "    scheduler: {plugin: ddim}\n    sampler: {plugin: cfg}\n"
    )
    ours, theirs = _load(LOAD_OURS, registry, device), _load(LOAD_DIFFUSERS, folder / "sd15", device)
    return [_load_row("SD 1.5 fp16 diffusers folder", files, ours, theirs, device)]


def write_random_safetensors(path: Path, shapes: Mapping[str, tuple[int, ...]], seed: int = 0) -> int:
    """Write a safetensors file of random fp16 tensors (N(0, 0.02²): no overflow anywhere) of the given shapes,
    one tensor at a time: the header first (its offsets follow from the shapes), then each tensor's bytes as
    it is drawn, so memory holds one tensor, never the file (`safetensors.torch.save_file` holds them all).
    Returns the file's size in bytes."""
    keys = sorted(shapes)
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for key in keys:
        size = 2 * int(torch.Size(shapes[key]).numel())
        header[key] = {"dtype": "F16", "shape": list(shapes[key]), "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned, as safetensors writes it
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        f.write(len(text).to_bytes(8, "little"))
        f.write(text)
        for index, key in enumerate(keys):
            generator = torch.Generator().manual_seed(seed * 100_003 + index)
            tensor = torch.randn(shapes[key], generator=generator).mul_(0.02).half()
            f.write(tensor.numpy().tobytes())
    return path.stat().st_size


def write_sdxl_folder(folder: Path) -> Path:
    """An SDXL 1.0 base-sized fp16 diffusers folder in `folder`, random weights, as `save_pretrained` lays it out:
    each model built on the meta device (no weights allocated) for its config and tensor shapes, its weights
    streamed to disk by `write_random_safetensors`; tokenizers, scheduler and model_index.json written by
    transformers' and diffusers' own code."""
    import diffusers
    import transformers

    with torch.device("meta"):
        unet = diffusers.UNet2DConditionModel(**SDXL_UNET)
        vae = diffusers.AutoencoderKL(**SDXL_VAE)
        text_encoder = transformers.CLIPTextModel(transformers.CLIPTextConfig(**SDXL_TEXT["text_encoder"]))
        text_encoder_2 = transformers.CLIPTextModelWithProjection(
            transformers.CLIPTextConfig(**SDXL_TEXT["text_encoder_2"])
        )
    models = {"unet": unet, "vae": vae, "text_encoder": text_encoder, "text_encoder_2": text_encoder_2}
    for seed, (name, model) in enumerate(models.items()):
        shapes = {key: tuple(value.shape) for key, value in model.state_dict().items()}
        if name.startswith("text_encoder"):
            model.config.dtype = "float16"
            model.config.save_pretrained(folder / name)
            write_random_safetensors(folder / name / "model.safetensors", shapes, seed)
        else:
            model.save_config(folder / name)
            write_random_safetensors(folder / name / "diffusion_pytorch_model.safetensors", shapes, seed)
    vocabulary = write_vocab_folder(folder.parent / "vocabulary")
    tokenizers = {
        f"tokenizer{suffix}": transformers.CLIPTokenizer.from_pretrained(vocabulary, model_max_length=77, **special)
        for suffix, special in (("", {}), ("_2", {"pad_token": "!"}))  # OpenCLIP's tower pads with "!"
    }
    scheduler = diffusers.EulerDiscreteScheduler(**SDXL_SCHEDULER)
    pipe = diffusers.StableDiffusionXLPipeline(  # meta-device models: only its model_index.json is saved
        **models, **tokenizers, scheduler=scheduler, force_zeros_for_empty_prompt=True, add_watermarker=False
    )
    pipe.save_config(folder)
    scheduler.save_pretrained(folder / "scheduler")
    for name, tokenizer in tokenizers.items():
        tokenizer.save_pretrained(folder / name)
    return folder


def load_sdxl_rows(device: torch.device, folder: Path) -> list[Row]:
    """Write an SDXL 1.0 base-sized fp16 diffusers folder into `folder` (6.9 GB), then load it with ours (the
    registry's sdxl pipeline: vae-kl, unet2d-condition, sdxl-text, euler, cfg) and with diffusers'
    `StableDiffusionXLPipeline`, each in a fresh process."""
    write_sdxl_folder(folder / "sdxl")
    files = sum(f.stat().st_size for f in (folder / "sdxl").rglob("*.safetensors"))
    registry = folder / "registry.yaml"
    registry.write_text(SDXL_REGISTRY)
    ours, theirs = _load(LOAD_OURS_SDXL, registry, device), _load(LOAD_DIFFUSERS_SDXL, folder / "sdxl", device)
    return [_load_row("SDXL fp16 diffusers folder", files, ours, theirs, device)]


def _load_row(case: str, files: int, ours: dict, theirs: dict, device: torch.device) -> Row:
    key = "gpu" if device.type == "cuda" else "rss"
    note = (
        f"files {files / 2**30:.2f} GiB; peak {key.upper()} / files: ours {ours[key] / files:.2f}, "
        f"diffusers {theirs[key] / files:.2f}"
    )
    return Row("checkpoint load", case, ours["seconds"], theirs["seconds"], ours[key], theirs[key], note)
