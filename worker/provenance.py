"""Each purified or protected image gets its manifest (impress/manifest.py), measured here and signed
into its PNG (C2PA): the credentials of IMPRESS_SIGNING_CERT / IMPRESS_SIGNING_KEY, or else the
service's development certificate, made by the first worker that needs it and kept in Redis
(`Keys.development_signer`) so that every worker signs with the same one."""
from __future__ import annotations

import datetime
import functools
import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from impress.images import encode_png
from impress.manifest import (Credentials, ImageManifest, ManifestEffect, ManifestInput, ManifestMethod,
                              ManifestSoftware, development_credentials, sign_png)
from impress.records import InputImage
from impress.results import ModelIdentity
from impress.settings import Settings
from impress.store import JobStore

from .engine.tiling import Tiling, tiles_of

WEIGHT_FILES = ("*.safetensors", "*.pth", "*.bin")


@functools.lru_cache(maxsize=8)
def weights_sha256(location: str) -> Optional[str]:
    """sha256 of a model folder's weights file; of several files, the sha256 of their sorted
    `sha256  name` lines (as sha256sum prints them). None when the folder is not on this disk."""
    folder = Path(location)
    files = sorted(f for pattern in WEIGHT_FILES for f in folder.glob(pattern)) if folder.is_dir() else []
    digests = []
    for f in files:
        with open(f, "rb") as weights:
            digests.append((hashlib.file_digest(weights, "sha256").hexdigest(), f.name))
    if len(digests) == 1:
        return digests[0][0]
    return hashlib.sha256("".join(f"{d}  {n}\n" for d, n in digests).encode()).hexdigest() if digests else None


def credentials(store: JobStore, settings: Settings) -> Credentials:
    if settings.signing_cert and settings.signing_key:
        return _configured(settings.signing_cert, settings.signing_key)
    key = store.keys.development_signer()
    if store.r.get(key) is None:   # the first worker makes it; a racing one keeps the winner's
        made = development_credentials()
        store.r.set(key, json.dumps({"chain": made.chain, "key": made.key}), nx=True)
    kept = json.loads(store.r.get(key))
    return Credentials(chain=kept["chain"], key=kept["key"], development=True)


@functools.lru_cache(maxsize=2)
def _configured(cert_path: str, key_path: str) -> Credentials:
    return Credentials(chain=Path(cert_path).read_text(), key=Path(key_path).read_text(), development=False)


@dataclass(frozen=True)
class Making:
    """How a job made its images: what the manifests share."""

    job_id: str
    method: ManifestMethod
    model: ModelIdentity # the autoencoder's
    perceptual: str
    device: str


@dataclass(frozen=True)
class Made:
    """One result picture before it is stored: the input it came from and its pixels."""

    item: InputImage
    before: np.ndarray            # the input's RGB, uint8 H x W x 3
    rgb: np.ndarray               # the result's
    alpha: Optional[np.ndarray]   # the input's alpha, re-attached


def signed_results(store: JobStore, settings: Settings, making: Making, made: list[Made],
                   tiling: Optional[Tiling] = None) -> list[tuple[bytes, ImageManifest]]:
    """Each result's PNG with its manifest embedded and signed, and the manifest; its effect measured
    with the job's autoencoder and perceptual distance (tile by tile beyond `tiling`)."""
    from .engine.effects import measure_effect
    from .engine.models import load_vae
    from .engine.perceptual import load_perceptual
    from .engine.tensors import to_tensor

    vae, _ = load_vae(making.model.name, making.device)
    distance = load_perceptual(making.perceptual, making.device)
    signer = credentials(store, settings)
    signed = []
    for index, one in enumerate(made):
        effect = measure_effect(vae, distance, to_tensor(one.before), to_tensor(one.rgb), tiling)
        tiles = len(tiles_of(*one.rgb.shape[:2], tiling)) if tiling and tiling.applies(*one.rgb.shape[:2]) else None
        source = store.get_blob(one.item.blob) or b""
        signed.append(signed_result(signer, making, index, one, source, effect, tiles))
    return signed


def signed_result(signer: Credentials, making: Making, index: int, made: Made, source: bytes, effect,
                  tiles: Optional[int]) -> tuple[bytes, ImageManifest]:
    """The result PNG with its signed manifest embedded, and the manifest."""
    item, rgb = made.item, made.rgb
    name = item.name.rsplit(".", 1)[0] + ".png"
    manifest = ImageManifest(
        job_id=making.job_id, index=index, created_at=datetime.datetime.now(datetime.timezone.utc),
        method=making.method.model_copy(update={"tiles": tiles}),
        software=ManifestSoftware(model=making.model.name, model_revision=making.model.revision or "unknown",
                                  model_sha256=weights_sha256(making.model.location or ""),
                                  perceptual=making.perceptual, device=making.device),
        input=ManifestInput(name=item.name, sha256=item.upload_sha256 or item.blob,
                            bytes=item.upload_bytes or len(source), width=item.width, height=item.height,
                            format=item.format),
        output={"name": name, "width": int(rgb.shape[1]), "height": int(rgb.shape[0])},
        effect=ManifestEffect(**asdict(effect)), signature=signer.signature())
    return sign_png(encode_png(rgb, made.alpha), manifest, source, signer), manifest
