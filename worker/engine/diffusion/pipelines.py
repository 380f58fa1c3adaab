"""Loading Stable Diffusion pipelines by name, offline, always with a recorded identity.

A pipeline is named by one string: a hub id (``stable-diffusion-v1-5/stable-diffusion-v1-5``), loaded
from the local Hugging Face cache only, or a folder written by ``save_pretrained``. Each scenario needs
one of three kinds, each configured by its own setting (`SETTING_OF_KIND`): img2img (editing, DiffPure,
GrIDPure, AdvDM, SDS(-), mimicry), inpaint (inpainting edits, PhotoGuard's diffusion attack; a
9-channel UNet) and upscale (Noisy Upscaling; the x4 upscaler). A job never downloads: when the
weights are not on this machine, ``ModelUnavailable`` names what to fetch and how.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Optional

import torch

from impress.pipelines import SETTING_OF_KIND
from impress.results import PipelineIdentity

from ..models import ModelUnavailable, weights_digest

PIPELINE_CLASSES = {
    "img2img": "StableDiffusionImg2ImgPipeline",
    "inpaint": "StableDiffusionInpaintPipeline",
    "upscale": "StableDiffusionUpscalePipeline",
}
# What each kind is in the papers this project follows (README: "Diffusion scenarios").
SUGGESTED_WEIGHTS = {
    "img2img": "stable-diffusion-v1-5/stable-diffusion-v1-5",
    "inpaint": "stable-diffusion-v1-5/stable-diffusion-inpainting",
    "upscale": "stabilityai/stable-diffusion-x4-upscaler",
}


# What `impress models pull` leaves out of a pipeline's hub repo: single-file checkpoints, other
# frameworks' weights, half-precision variants and the safety checker (never loaded here).
PULL_IGNORE = ["*.ckpt", "*.bin", "*.pt", "*.pth", "*.onnx", "*.onnx_data", "*.msgpack", "*.h5", "*.fp16.*",
               "*non_ema*", "safety_checker/*"]


def pipeline_present(name: str, kind: str) -> bool:
    """Offline: is this pipeline on disk (a save_pretrained folder, or a hub id in the local cache)?"""
    try:
        resolve_pipeline(name, kind)
    except ModelUnavailable:
        return False
    return True


def pull_pipeline(name: str) -> None:
    """Download a hub pipeline into the Hugging Face cache (HF_HOME); needs the network."""
    from huggingface_hub import snapshot_download

    snapshot_download(name, ignore_patterns=PULL_IGNORE)


def missing_pipeline(kind: str) -> ModelUnavailable:
    """The error of a scenario that needs a pipeline kind no setting names."""
    return ModelUnavailable(
        f"no {kind} pipeline is configured: set {SETTING_OF_KIND[kind]} to a hub id in the local "
        f"Hugging Face cache (e.g. {SUGGESTED_WEIGHTS[kind]}) or a folder written by save_pretrained")


def _unavailable(name: str, kind: str, why: str) -> ModelUnavailable:
    return ModelUnavailable(
        f"{kind} pipeline {name!r} is not on this machine ({why}). Provide it: on a connected machine run "
        f"`impress models pull` (or `huggingface-cli download {name}`) to fill the Hugging Face cache (HF_HOME) "
        f"this worker reads, or "
        f"save the pipeline with save_pretrained to a folder and set {SETTING_OF_KIND[kind]} to that folder.")


def resolve_pipeline(name: str, kind: str) -> tuple[str, Path, str]:
    """(source, local folder, revision) of a pipeline name; never touches the network."""
    folder = Path(name).expanduser()
    if folder.is_dir():
        if not (folder / "model_index.json").exists():
            raise _unavailable(name, kind, f"{folder} has no model_index.json")
        return "folder", folder.resolve(), weights_digest(folder.resolve() / "unet")
    if name.startswith((".", "/", "~")) or name.count("/") != 1:
        raise _unavailable(name, kind, "no such folder, and not a hub id of the form owner/name")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        snapshot = Path(snapshot_download(name, local_files_only=True))
    except (LocalEntryNotFoundError, OSError, ValueError) as exc:
        raise _unavailable(name, kind, f"not in the local Hugging Face cache: {type(exc).__name__}") from exc
    return "hub", snapshot, snapshot.name


def load_pipeline(name: str, kind: str, device: str = "cpu", dtype: torch.dtype = torch.float32):
    """The `kind` pipeline named `name` on `device`, frozen, without safety checker, and its identity.

    Cached per process (a worker keeps its pipelines between jobs). The safety checker is left out:
    it blacks out whole images, which would turn an edit's metrics into noise.
    """
    if kind not in PIPELINE_CLASSES:
        raise ValueError(f"unknown pipeline kind {kind!r}: {', '.join(PIPELINE_CLASSES)}")
    return _load_cached(name, kind, device, dtype)


@functools.lru_cache(maxsize=3)
def _load_cached(name: str, kind: str, device: str, dtype: torch.dtype):
    import diffusers

    source, folder, revision = resolve_pipeline(name, kind)
    cls = getattr(diffusers, PIPELINE_CLASSES[kind])
    extra = {} if kind == "upscale" else {"requires_safety_checker": False}
    try:
        pipe = cls.from_pretrained(folder, torch_dtype=dtype, safety_checker=None, **extra)
    except (OSError, ValueError, TypeError) as exc:
        raise _unavailable(name, kind, f"{type(exc).__name__}: {str(exc).splitlines()[0]}") from exc
    pipe = pipe.to(device)
    for module in pipe.components.values():
        if isinstance(module, torch.nn.Module):
            module.eval().requires_grad_(False)
    pipe.set_progress_bar_config(disable=True)
    identity = PipelineIdentity(name=name, kind=kind, source=source, location=str(folder), revision=revision,
                                dtype=str(dtype).removeprefix("torch."), device=device)
    return pipe, identity
