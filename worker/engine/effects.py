"""What purification or protection did to one picture, as its manifest states it: the consistency
error and the detection score before and after, the perceptual distance to the input, PSNR and the
largest change. Large pictures are measured tile by tile (the tiles they were purified in; the mean
over tiles), so measuring never needs more memory than purifying did."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from .autoencoder import Autoencoder
from impress.contract import DEFAULT_DETECT_SCORE

from .detect import consistency_scores, detection_scores
from .metrics import linf_255, psnr
from .perceptual import PerceptualDistance
from .tiling import Tiling, tiles_of


@dataclass(frozen=True)
class Effect:
    consistency_before: float
    consistency_after: float
    detection_score_before: float
    detection_score_after: float
    distance_to_input: float
    psnr_db: float
    linf_255: float


def crops(x: torch.Tensor, tiling: Optional[Tiling]) -> list[torch.Tensor]:
    height, width = x.shape[-2:]
    if tiling is None or not tiling.applies(height, width):
        return [x]
    return [x[..., t.top:t.top + t.height, t.left:t.left + t.width] for t in tiles_of(height, width, tiling)]


def mean(values: list[float]) -> float:
    return float(sum(values) / len(values))


@torch.no_grad()
def measure_effect(vae: Autoencoder, distance: PerceptualDistance, before: torch.Tensor, after: torch.Tensor,
                   tiling: Optional[Tiling] = None) -> Effect:
    """`before` and `after`: one picture each, 1 x 3 x H x W in [-1, 1] (the 8-bit images as stored)."""
    device = vae.device
    parts_before, parts_after = crops(before.to(device), tiling), crops(after.to(device), tiling)
    raw_before, raw_after = consistency_scores(vae, parts_before), consistency_scores(vae, parts_after)
    consistency_before, consistency_after = mean(raw_before), mean(raw_after)
    # The score POST /v1/detect gives by default, so a manifest's score compares with its thresholds.
    detection_before = mean(detection_scores(vae, parts_before, DEFAULT_DETECT_SCORE))
    detection_after = mean(detection_scores(vae, parts_after, DEFAULT_DETECT_SCORE))
    to_input = mean([float(distance.bind(b)(a)[0]) for a, b in zip(parts_after, parts_before)])
    return Effect(consistency_before=consistency_before, consistency_after=consistency_after,
                  detection_score_before=detection_before, detection_score_after=detection_after,
                  distance_to_input=to_input, psnr_db=float(psnr(after, before)[0]),
                  linf_255=float(linf_255(after, before)[0]))
