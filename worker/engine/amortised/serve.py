"""Serving the amortised purifier: bundled weights by name, one pass over images of mixed sizes,
and the purifier as a stage an attacker can aim through.

Weights are named like the bundled VAE: `amortised-taef2` is worker/models/amortised-taef2 (its
config.json and model.safetensors); the CLI also takes a folder written by `impress train-amortised`.
Every result names the weights by the sha256 of their file.
"""
from __future__ import annotations

import functools
import re
import threading
import time
from pathlib import Path
from typing import Optional

import torch

from impress.methods import WEIGHTS_PATTERN
from impress.results import ModelIdentity

from ..autoencoder import Autoencoder
from ..models import ModelUnavailable
from .network import WEIGHTS_FILE, PurifierNet, load_network

BUNDLED_DIR = Path(__file__).resolve().parents[2] / "models"


def resolve_weights(name: str) -> tuple[str, Path]:
    """(source, folder) of a bundled purifier's name or of a folder; ModelUnavailable when it has no weights."""
    source, folder = ("bundled", BUNDLED_DIR / name) if re.fullmatch(WEIGHTS_PATTERN, name) else \
        ("folder", Path(name).expanduser())
    if not (folder / WEIGHTS_FILE).exists():
        raise ModelUnavailable(f"amortised purifier {name!r}: no {WEIGHTS_FILE} in {folder} "
                               "(train one with `impress train-amortised`)")
    return source, folder


_LOADING = threading.Lock()


def load_purifier(name: str, device: str = "cpu") -> tuple[PurifierNet, ModelIdentity]:
    """The network and its identity (revision: sha256:<hex> of the weights file), loaded once per process
    and device."""
    with _LOADING:
        return _load_cached(name, device)


@functools.lru_cache(maxsize=4)
def _load_cached(name: str, device: str) -> tuple[PurifierNet, ModelIdentity]:
    source, folder = resolve_weights(name)
    net, sha = load_network(folder, device)
    return net, ModelIdentity(name=name, source=source, location=str(folder.resolve()), revision=f"sha256:{sha}",
                              dtype="float32", device=device)


@torch.no_grad()
def purify_images(net: PurifierNet, images: list[torch.Tensor], batch_pixels: int) -> tuple[list[torch.Tensor], list[float]]:
    """One pass over images of any sizes (each 1 x 3 x H x W in [-1, 1]): same-size images share
    batches of at most `batch_pixels` pixels (at least one image). The outputs in order, and each
    image's share of its batch's seconds."""
    device = next(net.parameters()).device
    groups: dict[tuple[int, int], list[int]] = {}
    for i, x in enumerate(images):
        groups.setdefault(tuple(x.shape[-2:]), []).append(i)
    outputs: list[torch.Tensor] = [torch.empty(0)] * len(images)
    seconds = [0.0] * len(images)
    for (h, w), indices in groups.items():
        size = max(1, batch_pixels // (h * w))
        for k in range(0, len(indices), size):
            part = indices[k:k + size]
            t0 = time.perf_counter()
            out = net(torch.cat([images[i] for i in part]).to(device, torch.float32))
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            share = (time.perf_counter() - t0) / len(part)
            for j, i in enumerate(part):
                outputs[i], seconds[i] = out[j:j + 1], share
    return outputs, seconds


class ThroughPurifier(Autoencoder):
    """An autoencoder whose encoder sees f(x): what an adaptive attacker differentiates through.
    Decoding is the autoencoder's own."""

    def __init__(self, vae: Autoencoder, net: PurifierNet):
        super().__init__()
        self.vae, self.net = vae, net
        self.latent_channels, self.downscale = vae.latent_channels, vae.downscale

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.vae.encode(self.net(x))

    def sample(self, x: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        return self.vae.sample(self.net(x), generator)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(z)
