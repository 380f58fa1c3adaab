"""Detecting protective noise by its consistency error mean((x - D(E(x)))^2) (docs/algorithm.md).

One or two forward passes per image, no optimisation: cheap enough to triage every upload and purify
only what is flagged. The raw consistency error depends on the picture's content (a busy
illustration scores higher when clean than a flat photo does when protected); the scores here
normalise by the picture's own content (measured in bench/results/detection-scores.md): the default,
`latent_shift`, compares the encoder's latent of the image with that of a lightly blurred copy, and
the ratios divide the consistency error by that of a copy which has lost protective noise. An image is flagged 'protected'
when its score is above a threshold calibrated on clean images for a target false positive rate.
The test can be two-sided: IMPRESS leaves images *more* consistent than clean photos, so a score
below a lower threshold flags an image 'purified'. Thresholds hold only for the model they were calibrated with.
"""
from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional

import torch
from pydantic import BaseModel

from impress.contract import DEFAULT_DETECT_SCORE, DetectScore, ThresholdPair
from impress.progress import SILENT, Reporter
from impress.records import Verdict
from impress.settings import Settings

from .autoencoder import Autoencoder
from .metrics import consistency_error, encode
from .purifiers import blur, jpeg


def per_image(images: list[torch.Tensor], m: int, batch: int, score: Callable[[torch.Tensor], torch.Tensor],
              reporter: Reporter = SILENT) -> list[float]:
    """`score` (a batch -> one value per image) of each image (1 x 3 x H x W in [-1, 1], any sizes;
    same-size images share batches). The VAE needs sides divisible by its downsampling factor `m`, so
    the few rows and columns beyond the last multiple are left out. The `reporter` counts images scored."""
    groups: dict[tuple[int, int], list[int]] = {}
    for i, x in enumerate(images):
        groups.setdefault(tuple(x.shape[-2:]), []).append(i)
    scores, done = [0.0] * len(images), 0
    for (h, w), idx in groups.items():
        for k in range(0, len(idx), batch):
            part = idx[k:k + batch]
            for i, s in zip(part, score(torch.cat([images[i] for i in part])[..., :h - h % m, :w - w % m]).tolist()):
                scores[i] = s
            done += len(part)
            reporter.advance(done, len(images))
    return scores


def consistency_scores(vae: Autoencoder, images: list[torch.Tensor], batch: int = 16,
                       reporter: Reporter = SILENT) -> list[float]:
    """The consistency error of each image (`per_image` says how sizes are batched)."""
    return per_image(images, vae.downscale, batch, lambda x: consistency_error(vae, x.to(vae.device, vae.dtype)),
                     reporter)


# The content-keeping copy each ratio score divides by (impress/contract.py DETECT_SCORES says what each is).
# Light on purpose: a copy that lost the picture's detail would fall in consistency error for clean
# pictures too, and the ratio would measure detail again.
REFERENCE_COPIES: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "jpeg-ratio": lambda x: jpeg(x, 90),
    "blur-ratio": lambda x: blur(x, 0.7),
}
LATENT_SHIFT_SIGMA = 0.7   # px: the same light blur as blur-ratio's copy


@torch.no_grad()
def latent_shift(vae: Autoencoder, x: torch.Tensor) -> torch.Tensor:
    """mean((E(x) - E(blur(x)))^2) / mean(E(x)^2) per image: how far the latent moves when the image
    loses its finest detail. Protective noise is optimised to move the latent with a few pixel levels,
    so a light blur moves a protected image's latent back much further, relative to the latent itself,
    than a clean image's (measured in bench/results/detection-scores.md). Two encoder passes, no decoder."""
    x = x.to(vae.device, vae.dtype)
    z, z_blurred = encode(vae, x).float(), encode(vae, blur(x.float(), LATENT_SHIFT_SIGMA).to(x)).float()
    return ((z - z_blurred) ** 2).mean(dim=(1, 2, 3)) / (z ** 2).mean(dim=(1, 2, 3)).clamp_min(1e-12)


def detection_scores(vae: Autoencoder, images: list[torch.Tensor], score: DetectScore, batch: int = 16,
                     reporter: Reporter = SILENT) -> list[float]:
    """Each image's detection score: its `latent_shift`, its consistency error ('raw'), or that over the
    consistency error of its reference copy (`REFERENCE_COPIES`), which costs a second forward pass.
    The `reporter` counts the images of the first pass."""
    if score == "latent-shift":
        return per_image(images, vae.downscale, batch, lambda x: latent_shift(vae, x), reporter)
    raw = consistency_scores(vae, images, batch, reporter)
    return raw if score == "raw" else ratio_scores(vae, images, raw, score, batch)


def ratio_scores(vae: Autoencoder, images: list[torch.Tensor], raw: list[float], score: str,
                 batch: int = 16) -> list[float]:
    """The ratio `score` (a key of REFERENCE_COPIES) of images whose consistency errors `raw` are known."""
    copy = REFERENCE_COPIES[score]
    reference = consistency_scores(vae, [copy(x.float()).to(x) for x in images], batch)
    return [r / max(f, 1e-12) for r, f in zip(raw, reference)]


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


class ScoreCalibration(BaseModel):
    """A calibration of one score on one model, as `impress calibrate` writes it and the service ships it."""

    score: DetectScore
    model: str
    model_revision: str
    calibration: Calibration
    images: str = ""     # what the clean images were
    command: str = ""    # how to make it again


class ShippedCalibrations(BaseModel):
    """The thresholds the service uses when neither the request nor the settings give one: per model
    and score, from `python -m bench.detection_scores --write-thresholds`."""

    calibrations: list[ScoreCalibration]

    def find(self, model: str, revision: str, score: DetectScore) -> Optional[ScoreCalibration]:
        """The calibration of this score on exactly these weights (a threshold holds only for its model)."""
        return next((c for c in self.calibrations
                     if (c.model, c.model_revision, c.score) == (model, revision, score)), None)


SHIPPED_THRESHOLDS = Path(__file__).with_name("detect_thresholds.json")


@functools.lru_cache
def shipped_calibrations() -> ShippedCalibrations:
    if not SHIPPED_THRESHOLDS.is_file():
        return ShippedCalibrations(calibrations=[])
    return ShippedCalibrations.model_validate_json(SHIPPED_THRESHOLDS.read_text())


def service_thresholds(settings: Settings, model: str, revision: str, score: DetectScore) -> list[ThresholdPair]:
    """The service's thresholds for `score` on this model, in order of precedence: the settings' (for the
    default score only: they were calibrated on it), then the shipped calibration of these weights."""
    pairs = []
    if score == DEFAULT_DETECT_SCORE:
        pairs.append(ThresholdPair(settings.detect_threshold, settings.detect_low_threshold, "settings"))
    shipped = shipped_calibrations().find(model, revision, score)
    if shipped is not None:
        pairs.append(ThresholdPair(shipped.calibration.threshold, shipped.calibration.low_threshold, "shipped"))
    return pairs
