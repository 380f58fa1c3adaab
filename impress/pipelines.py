"""The diffusion pipelines a service configures, and the image sizes they can work at. Light: no torch.

Each pipeline kind has its own setting (`SETTING_OF_KIND`). A Stable Diffusion pipeline draws images of
its *sample size* (the UNet's latent side times the VAE's downsampling: 512 px for SD 1.5 and its
inpainting model); below it, or at a side that is not a multiple of 8 (SD's VAE downsamples 8x), a
diffusion method is refused before anything is queued (`check_size`), as the worker could only fail
or produce what the model was never trained on. The x4 upscaler reads low-resolution inputs at its
UNet's latent side (128 px) and writes four times that.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Mapping, Optional

# The environment variable (Settings field with prefix IMPRESS_) that names each kind's pipeline.
SETTING_OF_KIND = {"img2img": "IMPRESS_PIPELINE", "inpaint": "IMPRESS_INPAINT_PIPELINE",
                   "upscale": "IMPRESS_UPSCALE_PIPELINE"}
# The sample size of the weights docs/diffusion.md suggests for each kind (SD 1.5, SD 1.5 inpainting, the
# x4 upscaler), used where a configured pipeline's config cannot be read here (a hub id: the API has no
# Hugging Face cache).
SUGGESTED_SAMPLE_SIZE = {"img2img": 512, "inpaint": 512, "upscale": 128}
SIZE_MULTIPLE = 8


def configured_pipelines(settings) -> dict[str, Optional[str]]:
    """The pipeline name each kind's setting holds (None: not configured)."""
    return {"img2img": settings.pipeline, "inpaint": settings.inpaint_pipeline, "upscale": settings.upscale_pipeline}


def sample_size(name: Optional[str], kind: str) -> int:
    """The input side a pipeline of `kind` works at: read from a save_pretrained folder's UNet and VAE
    configs, else the suggested weights' (`SUGGESTED_SAMPLE_SIZE`)."""
    folder = Path(name).expanduser() if name else None
    if folder is None or not (folder / "unet" / "config.json").is_file():
        return SUGGESTED_SAMPLE_SIZE[kind]
    latent_side = json.loads((folder / "unet" / "config.json").read_text())["sample_size"]
    if kind == "upscale":  # its latents are at the input's resolution
        return int(latent_side)
    vae_blocks = json.loads((folder / "vae" / "config.json").read_text())["block_out_channels"]
    return int(latent_side) * 2 ** (len(vae_blocks) - 1)


def check_size(height: int, width: int, users: Iterable[tuple[str, str]], pipelines: Mapping[str, Optional[str]]) -> None:
    """ValueError naming the first method that cannot run on height x width images on its pipeline.
    `users`: (what, pipeline kind) of each method or scenario that runs on a pipeline; `pipelines`: the
    configured name of each kind (`configured_pipelines`)."""
    size = str(height) if height == width else f"{height}x{width}"
    for what, kind in users:
        if height % SIZE_MULTIPLE or width % SIZE_MULTIPLE:
            raise ValueError(f"{what} runs on the {kind} pipeline: size {size} must be a multiple of {SIZE_MULTIPLE}")
        least = sample_size(pipelines.get(kind), kind)
        if min(height, width) < least:
            raise ValueError(f"{what} runs on the {kind} pipeline, whose sample size is {least} px: size {size} is "
                             f"below it (use size >= {least})")
