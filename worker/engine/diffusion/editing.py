"""The editing scenario (PhotoGuard's threat): does a protection spoil what Stable Diffusion makes of
an image, and does a purifier undo that?

Each image is edited with a fixed prompt, seed, strength, guidance 7.5 and 50 steps, by img2img or
by inpainting (a caller's mask, or `centre_keep_mask`). The edit of the clean image is the
reference; the edits of its protected and purified copies are compared with it by PSNR, SSIM and the
perceptual distance, as the IMPRESS authors scored their PhotoGuard experiment (pg_metric.py: PSNR and
SSIM between the edits of clean and purified Helen faces). The same seed for every copy of an image
means the copies differ only by what the protection or purifier changed.
"""
from __future__ import annotations

from typing import Optional

import torch

from impress.results import EditComparison
from impress.scenarios import EditParams

from ..metrics import psnr, ssim
from .common import from_pipeline, generators, to_pipeline

def centre_keep_mask(batch: int, height: int, width: int, keep: float = 0.5) -> torch.Tensor:
    """B x 1 x H x W inpainting mask, 1 = regenerate: everything but a centred rectangle of `keep`
    times each side. Like the Helen masks of PhotoGuard's evaluation it keeps the subject (the centre)
    and lets the edit replace its surroundings."""
    mask = torch.ones(batch, 1, height, width)
    kh, kw = round(height * keep), round(width * keep)
    top, left = (height - kh) // 2, (width - kw) // 2
    mask[:, :, top:top + kh, left:left + kw] = 0
    return mask


@torch.no_grad()
def edit(pipe, x: torch.Tensor, params: EditParams, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The edit of each image of x (B x 3 x H x W in [-1, 1]); inpainting regenerates where mask is 1."""
    common = dict(prompt=[params.prompt] * len(x), image=to_pipeline(x), strength=params.resolved_strength(),
                  guidance_scale=params.guidance, num_inference_steps=params.steps, eta=params.eta,
                  generator=generators(params.seed, len(x)), output_type="pt")
    if params.mode == "inpaint":
        mask = centre_keep_mask(len(x), *x.shape[-2:]) if mask is None else mask
        out = pipe(mask_image=mask.to(x.device), height=x.shape[-2], width=x.shape[-1], **common)
    else:
        out = pipe(**common)
    return from_pipeline(out.images, x)


def compare(edited: torch.Tensor, reference: torch.Tensor, distance) -> EditComparison:
    """PSNR, SSIM and the perceptual distance of each edited image to its reference edit."""
    with torch.no_grad():
        perceptual = distance.bind(reference)(edited).float().tolist()
    return EditComparison(psnr_db=psnr(edited, reference).tolist(), ssim=ssim(edited, reference).tolist(),
                          perceptual=perceptual, perceptual_name=distance.name)
