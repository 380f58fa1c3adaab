"""Loading the autoencoder and the perceptual distance: once per process, always with a recorded identity.

An autoencoder is named by one string: a hub id (``stabilityai/stable-diffusion-2-1-base``, loaded
from its ``vae`` subfolder), a local folder, or the short name of a model the project ships
(``taef2``, FLUX.2's tiny autoencoder, worker/models/taef2: `impress.contract.OFFLINE_MODEL`). A folder holds either a diffusers
AutoencoderKL written by ``save_pretrained`` (config.json and safetensors weights) or a tiny
autoencoder in TAESD's layout (``NAME_encoder.pth`` and ``NAME_decoder.pth`` state dicts). Whatever
the family, `load_vae` returns the engine's one `Autoencoder` type. When weights cannot be had,
``ModelUnavailable`` says what is missing and how to provide it; nothing is ever substituted.
"""
from __future__ import annotations

import functools
import hashlib
import os
import threading
from pathlib import Path
from typing import Optional

import torch

from impress.contract import OFFLINE_MODEL
from impress.results import ModelIdentity

from .autoencoder import Autoencoder, KLAutoencoder
from .tiny_autoencoder import TinyAutoencoder

MODELS_DIR = Path(__file__).resolve().parent.parent / "models"
BUNDLED = {OFFLINE_MODEL: MODELS_DIR / OFFLINE_MODEL}
# The bundled files as published (worker/models/taef2/README.md): a load that finds others refuses.
BUNDLED_SHA256 = {OFFLINE_MODEL: {
    "taef2_encoder.pth": "10a4e1021e89d7551eaf161352da8dbd0b1aa83872ae28b150c1df1ce2f147b6",
    "taef2_decoder.pth": "0a44a31e1ae59eb9dbf9359d24942fd3ef5928162c1800d97a28c61d51be0ab5"}}

# Hub repos hold the VAE in a subfolder; a folder written by save_pretrained holds it at its root.
HUB_SUBFOLDER = "vae"
# A tiny autoencoder's two state dicts: NAME_encoder.pth and NAME_decoder.pth.
TINY_ENCODER_SUFFIX, TINY_DECODER_SUFFIX = "_encoder.pth", "_decoder.pth"


class ModelUnavailable(RuntimeError):
    """The named weights are not on this machine and cannot be fetched."""


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def weights_digest(folder: Path) -> str:
    files = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin"))
    return "sha256:" + file_sha256(files[0])[:16] if files else "unknown"


def tiny_weights(folder: Path) -> Optional[tuple[Path, Path]]:
    """(encoder, decoder) state-dict files of a tiny autoencoder in `folder`, or None."""
    for encoder in sorted(folder.glob(f"*{TINY_ENCODER_SUFFIX}")):
        decoder = encoder.with_name(encoder.name.removesuffix(TINY_ENCODER_SUFFIX) + TINY_DECODER_SUFFIX)
        if decoder.is_file():
            return encoder, decoder
    return None


def weights_present(folder: Path) -> bool:
    """Offline: does `folder` hold an autoencoder of either family?"""
    kl = (folder / "config.json").exists() and any(folder.glob("*.safetensors"))
    return kl or tiny_weights(folder) is not None


def published_files_match(name: str, folder: Path) -> bool:
    """A bundled model's files are the published ones (by sha256); True for a model with no checksums."""
    expected = BUNDLED_SHA256.get(name, {})
    return all((folder / file).is_file() and file_sha256(folder / file) == digest for file, digest in expected.items())


def resolve_vae(name: str) -> tuple[str, str, str | None]:
    """(source, location, subfolder) for a VAE name."""
    if name in BUNDLED:
        return "bundled", str(BUNDLED[name]), None
    folder = Path(name).expanduser()
    if folder.is_dir():
        sub = HUB_SUBFOLDER if (folder / HUB_SUBFOLDER / "config.json").exists() else None
        return "folder", str(folder.resolve()), sub
    if name.startswith((".", "/", "~")) or os.sep in name and name.count("/") != 1:
        raise ModelUnavailable(f"VAE folder {name!r} does not exist")
    return "hub", name, HUB_SUBFOLDER


def load_vae(name: str, device: str = "cpu", dtype: torch.dtype = torch.float32, *,
             tiling: bool = False, checkpointing: bool = False) -> tuple[Autoencoder, ModelIdentity]:
    """The autoencoder named `name`, in eval mode with frozen weights, and its identity. Cached per process.

    Memory options for large images: `tiling` encodes and decodes images larger than the VAE's
    sample size in overlapping tiles (diffusers' tiled VAE; the blend changes results slightly; a tiny
    autoencoder has no attention and needs none); `checkpointing` recomputes the activations during
    the backward pass instead of keeping them (about a third more compute, far less memory). diffusers'
    batch slicing is not offered: under autograd every slice's activations are kept for the backward
    pass, so it bounds nothing here.
    """
    with _LOADING:
        return _load_vae_cached(name, device, dtype, tiling, checkpointing)


# One load at a time per process: a worker may warm its model up in a thread while a job asks for
# it (the job then waits for that load instead of doing it twice), and diffusers' lazy imports are
# not safe to run from two threads at once.
_LOADING = threading.Lock()


@functools.lru_cache(maxsize=4)
def _load_vae_cached(name: str, device: str, dtype: torch.dtype, tiling: bool, checkpointing: bool):
    source, location, subfolder = resolve_vae(name)
    folder = Path(location) / (subfolder or "")
    if source == "bundled" and not weights_present(folder):
        raise ModelUnavailable(f"bundled autoencoder {name!r} is missing from {location}")
    tiny = tiny_weights(folder) if source != "hub" else None
    if tiny is not None:
        model, revision = _load_tiny(name, *tiny, checkpointing)
    else:
        model, revision = _load_kl(name, source, location, subfolder, dtype, tiling, checkpointing)
    model = model.to(device=device, dtype=dtype).eval().requires_grad_(False)
    if device.startswith("cuda"):
        model = model.to(memory_format=torch.channels_last)
    identity = ModelIdentity(name=name, source=source, location=location, revision=revision,
                             dtype=str(dtype).removeprefix("torch."), device=device)
    return model, identity


def _load_tiny(name: str, encoder: Path, decoder: Path, checkpointing: bool) -> tuple[Autoencoder, str]:
    """A tiny autoencoder and its revision (the sha256 of both files); a bundled one must match the
    published checksums."""
    if not published_files_match(name, encoder.parent):
        raise ModelUnavailable(f"bundled autoencoder {name!r} in {encoder.parent} does not match its published "
                               f"sha256 {BUNDLED_SHA256[name]}: restore the files from the repository")
    digests = {path.name: file_sha256(path) for path in (encoder, decoder)}
    try:
        model = TinyAutoencoder.from_files(encoder, decoder, checkpointing=checkpointing)
    except (OSError, RuntimeError, KeyError) as exc:  # unreadable, or a state dict of another layout
        raise ModelUnavailable(f"tiny autoencoder {name!r} could not be loaded from {encoder.parent} "
                               f"({type(exc).__name__}: {str(exc).splitlines()[0]})") from exc
    return model, " ".join(f"{file} sha256:{digest}" for file, digest in digests.items())


def _load_kl(name: str, source: str, location: str, subfolder: Optional[str], dtype: torch.dtype, tiling: bool,
             checkpointing: bool) -> tuple[Autoencoder, str]:
    """diffusers' AutoencoderKL from the hub (cache) or a folder, and its revision."""
    from diffusers import AutoencoderKL
    from diffusers.models.attention_processor import AttnProcessor2_0

    try:
        # low_cpu_mem_usage needs `accelerate`, which a VAE of at most ~80 MB does not justify.
        # A hub VAE in the local cache loads from it with no network; one that is not there fails
        # at once when the hub cannot be reached (instead of ~25 s of retries).
        local_only = source == "hub" and hub_vae_local_only(location)
        vae = AutoencoderKL.from_pretrained(location, subfolder=subfolder, torch_dtype=dtype, low_cpu_mem_usage=False,
                                            local_files_only=local_only)
    except (OSError, ValueError) as exc:
        raise ModelUnavailable(
            f"VAE {name!r} could not be loaded ({type(exc).__name__}: {str(exc).splitlines()[0]}). "
            f"Provide it: on a connected machine run `huggingface-cli download {name}` to fill the "
            "Hugging Face cache (HF_HOME), or save it with save_pretrained to a folder and set "
            f"IMPRESS_VAE to that folder; the bundled offline model is {OFFLINE_MODEL!r}.") from exc
    if source == "hub":
        revision = _hub_revision(vae) or hub_vae_snapshot(location) or "unknown"
    else:
        revision = weights_digest(Path(location) / (subfolder or ""))
    # torch's scaled_dot_product_attention: flash / memory-efficient kernels on CUDA (diffusers'
    # default today; set explicitly so a changed default cannot bring back the quadratic-memory path).
    vae.set_attn_processor(AttnProcessor2_0())
    if tiling:
        vae.enable_tiling()
    if checkpointing:
        vae.enable_gradient_checkpointing()
    return KLAutoencoder(vae), revision


HUB_VAE_FILES = ("config.json", "diffusion_pytorch_model.safetensors")


def hub_vae_snapshot(repo_id: str) -> str | None:
    """The commit of the cached snapshot holding a hub repo's VAE (config and weights), offline;
    None when the Hugging Face cache does not hold it."""
    from huggingface_hub import try_to_load_from_cache

    paths = [try_to_load_from_cache(repo_id, f"{HUB_SUBFOLDER}/{file}") for file in HUB_VAE_FILES]
    if not all(isinstance(path, str) for path in paths):
        return None
    parts = Path(paths[0]).parts  # .../snapshots/<commit>/vae/config.json
    return parts[parts.index("snapshots") + 1]


def hub_vae_cached(repo_id: str) -> bool:
    return hub_vae_snapshot(repo_id) is not None


def hub_reachable(repo_id: str) -> bool:
    """One request, no retries: does the hub answer (even with an error about this repo)?"""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    try:
        HfApi().model_info(repo_id, timeout=10)
    except HfHubHTTPError:
        return True
    except Exception:  # DNS, connection, TLS, timeout: whatever the HTTP stack raises, no hub here
        return False
    return True


def hub_vae_local_only(repo_id: str) -> bool:
    """True: load from the cache only. False: download. Raises ModelUnavailable when neither can work."""
    from huggingface_hub import constants

    if hub_vae_cached(repo_id):
        return True
    if constants.HF_HUB_OFFLINE or not hub_reachable(repo_id):
        raise ModelUnavailable(
            f"VAE {repo_id!r} is not in the model cache (HF_HOME={constants.HF_HOME}) and the hub cannot be "
            f"reached. On a connected machine run `impress models pull` (or `huggingface-cli download "
            f"{repo_id} --include 'vae/*'`) with the same HF_HOME, or set IMPRESS_VAE to a local folder; the "
            f"bundled offline model is {OFFLINE_MODEL!r}.")
    return False


def _hub_revision(vae) -> str | None:
    # diffusers records where the config came from; a hub snapshot folder is named by its commit.
    path = getattr(vae.config, "_name_or_path", "") or ""
    parts = Path(path).parts
    if "snapshots" in parts:
        return parts[parts.index("snapshots") + 1]
    return None


def resolve_device(device: str) -> str:
    """The torch device of a setting: `auto` is CUDA when present, else the CPU."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device
