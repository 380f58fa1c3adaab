"""Purifiers behind one interface (DESIGN.md section 3): IMPRESS and the cheap baselines papers compare with.

A purifier is a function ``(x, **params) -> x'`` on a batch B x 3 x H x W in [-1, 1] that returns the
same shape and range. The registry names each function with its default parameters; a preset
(``jpeg-15``) is just another name with other defaults. Adding a purifier is one small function and
one registry line. Purifiers that need the models (IMPRESS) are registered with ``needs_models`` and
receive ``vae`` and ``distance`` from ``apply_purifier``.
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from impress.contract import PurifyOverrides

from .perceptual import _gaussian_window
from .photos import resize_short_side
from .purify import purify
from .tensors import to_tensor, to_uint8
from .registry import MethodSpec, make_spec


def jpeg(x: torch.Tensor, quality: int) -> torch.Tensor:
    """A real JPEG round trip through Pillow, image by image (4:2:0 chroma, Pillow's default)."""
    out = []
    for img in x:
        buf = io.BytesIO()
        Image.fromarray(to_uint8(img), "RGB").save(buf, format="JPEG", quality=int(quality))
        out.append(to_tensor(np.array(Image.open(buf).convert("RGB"))))
    return torch.cat(out).to(x)


def gaussian_noise(x: torch.Tensor, sigma: float, seed: int) -> torch.Tensor:
    """Additive Gaussian noise, sigma in [-1, 1] units, from a seeded CPU generator (reproducible anywhere)."""
    noise = torch.randn(x.shape, generator=torch.Generator(device="cpu").manual_seed(seed))
    return (x + sigma * noise.to(x)).clamp(-1, 1)


def blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur (kernel 2*ceil(3 sigma)+1, reflected borders)."""
    size = 2 * math.ceil(3 * sigma) + 1
    w = _gaussian_window(size, sigma).to(x)
    c, r = x.shape[1], size // 2
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="reflect"), w.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="reflect"), w.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """Down to `size` on the short side and back up, bilinear with antialiasing. On an image whose short
    side is already below `size` this is an up-and-down round trip, a far milder change."""
    small = resize_short_side(x, size)
    return F.interpolate(small, size=x.shape[-2:], mode="bilinear", antialias=True,
                         align_corners=False).clamp(-1, 1)


def impress(x: torch.Tensor, *, vae, distance, preset: str, seed: int, early_stop: bool, **overrides) -> torch.Tensor:
    """IMPRESS (purify.purify) with its preset resolved for this perceptual distance, as a job would be."""
    params = PurifyOverrides(preset=preset, seed=seed, early_stop=early_stop, **overrides).resolve(distance.name)
    return purify(vae, distance, x, params, device=str(x.device), log_every=params.iters).images.to(x)


def noise_impress(x: torch.Tensor, *, vae, distance, sigma: float, **impress_params) -> torch.Tensor:
    """IMPRESS++-style: Gaussian noise first, then IMPRESS on the noised image (whose hinge is then
    measured against the noised image, as in any chain of purifiers)."""
    seed = impress_params["seed"]
    return impress(gaussian_noise(x, sigma, seed), vae=vae, distance=distance, **impress_params)


@dataclass(frozen=True)
class Purifier:
    fn: Callable[..., torch.Tensor]
    defaults: dict
    needs_models: bool = False


# None means "the preset's value" (contract.PRESETS, and PERCEPTUAL_DEFAULT_DELTA / _ALPHA for delta
# and alpha).
IMPRESS_DEFAULTS = dict(preset="photoguard", schedule=None, iters=None, lr=None, beta1=None, beta2=None,
                        alpha=None, delta=None, noise=None, seed=0, early_stop=True)

PURIFIERS: dict[str, Purifier] = {
    "jpeg": Purifier(jpeg, {"quality": 75}),
    "jpeg-15": Purifier(jpeg, {"quality": 15}),
    "jpeg-75": Purifier(jpeg, {"quality": 75}),
    "noise": Purifier(gaussian_noise, {"sigma": 0.05, "seed": 0}),
    "noise-0.05": Purifier(gaussian_noise, {"sigma": 0.05, "seed": 0}),
    "noise-0.1": Purifier(gaussian_noise, {"sigma": 0.1, "seed": 0}),
    "blur": Purifier(blur, {"sigma": 1.0}),
    "resize": Purifier(resize, {"size": 256}),
    "impress": Purifier(impress, IMPRESS_DEFAULTS, needs_models=True),
    "noise-impress": Purifier(noise_impress, {"sigma": 0.1, **IMPRESS_DEFAULTS}, needs_models=True),
}


def make_purifier(name: str, **overrides) -> MethodSpec:
    """The named purifier with its defaults, some replaced."""
    return make_spec(PURIFIERS, "purifier", name, overrides)


def apply_purifier(spec: MethodSpec, x: torch.Tensor, vae=None, distance=None) -> torch.Tensor:
    """Purify a batch with `spec`; `vae` and `distance` are required by the purifiers that use them."""
    entry = PURIFIERS[spec.name]
    if not entry.needs_models:
        return entry.fn(x, **spec.params)
    if vae is None or distance is None:
        raise ValueError(f"purifier {spec.name!r} needs a VAE and a perceptual distance")
    return entry.fn(x, vae=vae, distance=distance, **spec.params)
