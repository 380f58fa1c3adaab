"""Detecting protective noise by its consistency error mean((x - D(E(x)))^2) (docs/algorithm.md).

One forward pass per image, no optimisation: cheap enough to triage every upload and purify only
what is flagged. An image is flagged 'protected' when its score is above a threshold calibrated on
clean images for a target false positive rate. The test can be two-sided: IMPRESS leaves images
*more* consistent than clean photos (reports/tiny-vae.md), so a score below a lower threshold flags
an image 'purified'. Thresholds hold only for the model they were calibrated with.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Optional

import torch

from impress.progress import SILENT, Reporter
from impress.records import Verdict

from .autoencoder import Autoencoder
from .metrics import consistency_error


def consistency_scores(vae: Autoencoder, images: list[torch.Tensor], batch: int = 16,
                       reporter: Reporter = SILENT) -> list[float]:
    """The consistency error of each image (1 x 3 x H x W in [-1, 1], any sizes; same-size images share
    batches). The VAE needs sides divisible by its downsampling factor, so the few rows and columns
    beyond the last multiple are left out of the score. The `reporter` counts images scored."""
    m = vae.downscale
    groups: dict[tuple[int, int], list[int]] = {}
    for i, x in enumerate(images):
        groups.setdefault(tuple(x.shape[-2:]), []).append(i)
    scores, done = [0.0] * len(images), 0
    for (h, w), idx in groups.items():
        for k in range(0, len(idx), batch):
            part = idx[k:k + batch]
            x = torch.cat([images[i] for i in part])[..., :h - h % m, :w - w % m]
            for i, s in zip(part, consistency_error(vae, x.to(vae.device, vae.dtype)).tolist()):
                scores[i] = s
            done += len(part)
            reporter.advance(done, len(images))
    return scores


@dataclass(frozen=True)
class OutOfSampleRate:
    """The false positive rate a threshold will have on NEW clean images. The threshold is the (k+1)-th
    highest of n clean scores, k = floor(target * n); for a new clean image exchangeable with them the
    chance of scoring above it is (k + 1) / (n + 1) (its rank among n + 1 is uniform), more than the
    k / n flagged in sample. The rate given this calibration set is Beta(k + 1, n - k) distributed:
    `interval` is its central `confidence` interval."""
    expected: float
    interval: tuple[float, float]
    confidence: float


def out_of_sample_rate(n: int, target_fpr: float, confidence: float = 0.95) -> OutOfSampleRate:
    from scipy.stats import beta

    k = min(math.floor(target_fpr * n + 1e-9), n - 1)
    tail = (1 - confidence) / 2
    low, high = beta.ppf([tail, 1 - tail], k + 1, n - k)
    return OutOfSampleRate(expected=(k + 1) / (n + 1), interval=(float(low), float(high)), confidence=confidence)


def enough_images(target_fpr: float) -> int:
    """Clean images that keep the expected out-of-sample rate within 1.5x the target, whatever the
    rounding of target * n: (target * n + 1) / (n + 1) <= 1.5 * target for n >= 2 / target - 3."""
    return max(1, math.ceil(2 / target_fpr - 3))


@dataclass(frozen=True)
class Calibration:
    threshold: float     # flag an image 'protected' when its score is strictly above this
    fpr: float           # fraction of the calibration images flagged so (at most target_fpr)
    target_fpr: float
    n: int
    expected_fpr: OutOfSampleRate            # the rate on new clean images, with its interval
    low_threshold: Optional[float] = None   # flag 'purified' when strictly below this (two-sided test)
    low_fpr: Optional[float] = None
    target_low_fpr: Optional[float] = None
    expected_low_fpr: Optional[OutOfSampleRate] = None

    def as_dict(self) -> dict:
        return asdict(self)

    def warnings(self) -> list[str]:
        """Why this calibration may flag far more new clean images than its targets: too few images."""
        out = []
        for name, target, rate in (("protected", self.target_fpr, self.expected_fpr),
                                   ("purified", self.target_low_fpr, self.expected_low_fpr)):
            if rate is not None and rate.expected > 1.5 * target:
                out.append(f"{self.n} clean images are too few for a {target:.1%} target: a new clean image is "
                           f"flagged {name} with probability {rate.expected:.1%} ({rate.confidence:.0%} interval "
                           f"{rate.interval[0]:.1%}-{rate.interval[1]:.1%}); calibrate on at least "
                           f"{enough_images(target)} images")
        return out


def upper_threshold(scores: list[float], target_fpr: float) -> tuple[float, float]:
    """The threshold that flags at most `target_fpr` of `scores` above it, and the fraction it flags:
    the (k+1)-th highest score, k = floor(target_fpr * n), so exactly k are above it (fewer on ties)."""
    if not scores or not 0 < target_fpr < 1:
        raise ValueError("calibration needs clean scores and a target FPR strictly between 0 and 1")
    ranked = sorted(scores, reverse=True)
    threshold = ranked[min(math.floor(target_fpr * len(ranked) + 1e-9), len(ranked) - 1)]
    return threshold, sum(s > threshold for s in ranked) / len(ranked)


def calibrate(clean_scores: list[float], target_fpr: float, target_low_fpr: Optional[float] = None) -> Calibration:
    """Thresholds from clean images' scores: the upper one for `target_fpr`; with `target_low_fpr`,
    also a lower one flagging at most that fraction of clean images as over-consistent. Each comes
    with its expected rate on new clean images (`OutOfSampleRate`)."""
    if target_low_fpr is not None and target_fpr + target_low_fpr >= 1:  # which keeps low <= upper
        raise ValueError("the two target FPRs must add up to less than 1")
    n = len(clean_scores)
    threshold, fpr = upper_threshold(clean_scores, target_fpr)
    low_threshold = low_fpr = expected_low = None
    if target_low_fpr is not None:
        negated, low_fpr = upper_threshold([-s for s in clean_scores], target_low_fpr)
        low_threshold, expected_low = -negated, out_of_sample_rate(n, target_low_fpr)
    return Calibration(threshold=threshold, fpr=fpr, target_fpr=target_fpr, n=n,
                       expected_fpr=out_of_sample_rate(n, target_fpr), low_threshold=low_threshold,
                       low_fpr=low_fpr, target_low_fpr=target_low_fpr, expected_low_fpr=expected_low)


def verdicts(scores: list[float], threshold: Optional[float],
             low_threshold: Optional[float] = None) -> list[Optional[Verdict]]:
    """'protected' above `threshold`, 'purified' below `low_threshold` (if given), else 'clean'; None
    for every image when there is no threshold."""
    def verdict(s: float) -> Optional[Verdict]:
        if threshold is None:
            return None
        if s > threshold:
            return Verdict.protected
        return Verdict.purified if low_threshold is not None and s < low_threshold else Verdict.clean
    return [verdict(s) for s in scores]
