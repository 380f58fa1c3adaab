"""The models a service needs, checked offline and fetched ahead of time (`impress models`).

A preset needs its VAE (the configured one, else the preset's SD VAE from the hub) and, when the
perceptual distance is LPIPS-VGG, torchvision's VGG16 ImageNet weights. `present` and `check` look only
at the disk (bundled folder, local folder, Hugging Face cache, torch hub cache), never at the network,
so a worker can run it at start and an operator can run it on an air-gapped host; `pull` fills the
same caches on a connected host (or in an image layer or a volume mounted at HF_HOME/TORCH_HOME).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Literal

from impress.contract import ModelReport, vae_for

from .diffusion.pipelines import pipeline_present, pull_pipeline
from .models import (HUB_SUBFOLDER, HUB_VAE_FILES, ModelUnavailable, hub_vae_cached, hub_vae_local_only, resolve_vae,
                     published_files_match, weights_present)
from .perceptual import require_vgg16, vgg16_cache_file


@dataclass(frozen=True)
class ModelNeed:
    kind: Literal["vae", "perceptual", "pipeline"]
    name: str       # a VAE name (hub id, folder, bundled), a perceptual distance, or a pipeline (hub id, folder)
    where: str      # where it is looked for
    pipeline_kind: str | None = None   # a pipeline's kind (img2img, inpaint, upscale)

    def __str__(self) -> str:
        return f"{self.kind} {self.name} ({self.where})"


def needs(presets: Iterable[str], vae: str | None, perceptual: str,
          pipelines: dict[str, str | None] | None = None) -> list[ModelNeed]:
    """What jobs of these presets need, with the service's VAE and perceptual settings, and the diffusion
    pipelines configured (kind -> name: IMPRESS_PIPELINE, ...)."""
    found: dict[tuple[str, str], ModelNeed] = {}
    for kind, name in (pipelines or {}).items():
        if name:
            found[("pipeline", name)] = ModelNeed("pipeline", name, f"{kind} pipeline", kind)
    for preset in presets:
        name = vae_for(preset, vae)
        found.setdefault(("vae", name), ModelNeed("vae", name, _vae_location(name)))
    if perceptual == "lpips-vgg":
        found[("perceptual", perceptual)] = ModelNeed("perceptual", perceptual, str(vgg16_cache_file()))
    return list(found.values())


def _vae_location(name: str) -> str:
    try:
        source, location, _ = resolve_vae(name)
    except ModelUnavailable:  # a folder name that does not exist: reported missing, where it was named
        return name
    return f"hub cache: {location}" if source == "hub" else location


def present(need: ModelNeed) -> bool:
    """Offline: is this model on disk?"""
    if need.kind == "perceptual":
        return vgg16_cache_file().exists()
    if need.kind == "pipeline":
        return pipeline_present(need.name, need.pipeline_kind)
    try:
        source, location, subfolder = resolve_vae(need.name)
    except ModelUnavailable:
        return False
    if source == "hub":
        return hub_vae_cached(location)
    folder = Path(location) / (subfolder or "")
    return weights_present(folder) and published_files_match(need.name, folder)


def check(presets: Iterable[str], vae: str | None, perceptual: str,
          pipelines: dict[str, str | None] | None = None) -> ModelReport:
    found = {str(need): present(need) for need in needs(presets, vae, perceptual, pipelines)}
    return ModelReport(present=[name for name, ok in found.items() if ok],
                       missing=[name for name, ok in found.items() if not ok])


def require(vae: str, perceptual: str) -> None:
    """Before any work starts: ModelUnavailable at once when a model is neither on disk nor fetchable
    (a hub VAE that is not cached is fetched later only if the hub answers now)."""
    source, location, _ = resolve_vae(vae)
    if source == "hub":
        hub_vae_local_only(location)
    elif not present(ModelNeed("vae", vae, location)):
        raise ModelUnavailable(f"VAE {vae!r}: no autoencoder weights in {location} (config.json and safetensors, "
                               "or NAME_encoder.pth and NAME_decoder.pth)")
    if perceptual == "lpips-vgg":
        require_vgg16()


def pull(wanted: Iterable[ModelNeed], say: Callable[[str], None] = print) -> None:
    """Download what is missing into the caches (HF_HOME, TORCH_HOME); needs the network."""
    for need in wanted:
        if present(need):
            say(f"present  {need}")
            continue
        say(f"fetching {need}")
        if need.kind == "perceptual":
            import torchvision

            torchvision.models.VGG16_Weights.IMAGENET1K_V1.get_state_dict(progress=True)
            continue
        if need.kind == "pipeline":
            if Path(need.name).expanduser().is_dir():
                raise ModelUnavailable(f"{need}: a local pipeline folder cannot be pulled; write it with save_pretrained")
            pull_pipeline(need.name)
            continue
        source, location, _ = resolve_vae(need.name)
        if source != "hub":
            raise ModelUnavailable(f"{need}: a local VAE folder cannot be pulled; write it with save_pretrained")
        from huggingface_hub import snapshot_download

        snapshot_download(location, allow_patterns=[f"{HUB_SUBFOLDER}/{file}" for file in HUB_VAE_FILES])
