"""Purifiers behind one interface (docs/algorithm.md): IMPRESS and the cheap baselines papers compare with.

A purifier is a function ``(x, **params) -> x'`` on a batch B x 3 x H x W in [-1, 1] that returns the
same shape and range. Its parameters, defaults and names (``jpeg-15`` is JPEG at quality 15) are a
model in impress/methods.py; `PURIFIER_FUNCTIONS` pairs each model with its function. Purifiers that
need the models (IMPRESS) are registered with ``needs_models`` and receive their parameter model,
``vae`` and ``distance`` from ``apply_purifier``.
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
from torchvision.transforms.v2.functional import gaussian_blur

from impress.contract import PurifyOverrides
from impress.progress import SILENT, Reporter
from impress.methods import (BlurParams, DiffpureParams, GridpureParams, ImpressParams, JpegParams, MethodChoice,
                             MethodParams, NoiseImpressParams, NoiseParams, NoisyUpscaleParams, ResizeParams)

from .diffusion.purifiers import diffpure, gridpure, noisy_upscale
from .photos import resize_short_side
from .purify import purify
from .tensors import gaussian_noise, to_tensor, to_uint8


def jpeg(x: torch.Tensor, quality: int) -> torch.Tensor:
    """A real JPEG round trip through Pillow, image by image (4:2:0 chroma, Pillow's default)."""
    out = []
    for img in x:
        buf = io.BytesIO()
        Image.fromarray(to_uint8(img), "RGB").save(buf, format="JPEG", quality=int(quality))
        out.append(to_tensor(np.array(Image.open(buf).convert("RGB"))))
    return torch.cat(out).to(x)


def blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur, kernel 2*ceil(3 sigma)+1 (99.7% of the weight), reflected borders (torchvision)."""
    size = 2 * math.ceil(3 * sigma) + 1
    return gaussian_blur(x, kernel_size=[size, size], sigma=[sigma, sigma])


def resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """Down to `size` on the short side and back up, bilinear with antialiasing. On an image whose short
    side is already below `size` this is an up-and-down round trip, a far milder change."""
    small = resize_short_side(x, size)
    return F.interpolate(small, size=x.shape[-2:], mode="bilinear", antialias=True,
                         align_corners=False).clamp(-1, 1)


def impress(x: torch.Tensor, params: ImpressParams, *, vae, distance, reporter: Reporter = SILENT) -> torch.Tensor:
    """IMPRESS (purify.purify) with its preset resolved for this perceptual distance, as a job would be."""
    resolved = PurifyOverrides(**params.impress_fields()).resolve(distance.name)
    return purify(vae, distance, x, resolved, device=str(x.device), log_every=resolved.iters,
                  reporter=reporter).images.to(x)


def noise_impress(x: torch.Tensor, params: NoiseImpressParams, *, vae, distance,
                  reporter: Reporter = SILENT) -> torch.Tensor:
    """Gaussian noise first, then IMPRESS on the noised image (whose hinge is then measured against the
    noised image, as in any chain of purifiers): `noise-impress`, and `impress++` with the glaze preset
    (Hönig et al.'s IMPRESS++ preprocessing, docs/diffusion.md)."""
    return impress(gaussian_noise(x, params.sigma, params.seed), params, vae=vae, distance=distance, reporter=reporter)


@dataclass(frozen=True)
class Purifier:
    fn: Callable[..., torch.Tensor]   # (x, **params), or with needs_models (x, params, vae=, distance=, reporter=),
    #                                   or for a diffusion purifier (its params' pipeline_kind) (pipe, x, reporter=, **params)
    needs_models: bool = False


# The function of each purifier's parameter model (impress/methods.py names them and holds the defaults).
PURIFIER_FUNCTIONS: dict[type[MethodParams], Purifier] = {
    JpegParams: Purifier(jpeg),
    NoiseParams: Purifier(gaussian_noise),
    BlurParams: Purifier(blur),
    ResizeParams: Purifier(resize),
    ImpressParams: Purifier(impress, needs_models=True),
    NoiseImpressParams: Purifier(noise_impress, needs_models=True),
    DiffpureParams: Purifier(diffpure),
    GridpureParams: Purifier(gridpure),
    NoisyUpscaleParams: Purifier(noisy_upscale),
}


def apply_purifier(choice: MethodChoice, x: torch.Tensor, vae=None, distance=None, pipelines=None,
                   reporter: Reporter = SILENT) -> torch.Tensor:
    """Purify a batch as `choice` says; `vae` and `distance` are required by the purifiers that use them,
    `pipelines` (diffusion.scenario.PipelineSet) by the diffusion ones. The purifiers that loop tell
    the `reporter` every step; the others are one pass."""
    entry, kind = PURIFIER_FUNCTIONS[type(choice.params)], choice.params.pipeline_kind
    if kind is not None:
        if pipelines is None:
            raise ValueError(f"purifier {choice.name!r} needs a diffusion pipeline")
        return entry.fn(pipelines.get(kind), x, reporter=reporter, **choice.params.model_dump())
    if not entry.needs_models:
        return entry.fn(x, **choice.params.model_dump())
    if vae is None or distance is None:
        raise ValueError(f"purifier {choice.name!r} needs a VAE and a perceptual distance")
    return entry.fn(x, choice.params, vae=vae, distance=distance, reporter=reporter)
