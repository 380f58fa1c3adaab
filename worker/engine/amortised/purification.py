"""Purify decoded images with the amortised network alone, or with the cascade (docs/amortised.md):

    amortised pass  ->  detection score of its output  ->  IMPRESS, warm-started from that output,
                                                           only for the images still flagged

The entry points the CLI and the purify job share, as pipeline.run_purification is for IMPRESS.
Each image's result says its path (amortised, or amortised then impress) and its seconds.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from impress.contract import DEFAULT_DETECT_SCORE, PurifyParams, StopReason, vae_for
from impress.images import DecodedImage
from impress.progress import SILENT, Reporter
from impress.records import EngineReport
from impress.results import ModelIdentity, PerceptualIdentity

from ..detect import detection_scores, shipped_calibrations
from ..models import ModelUnavailable, load_vae, resolve_device
from ..pipeline import EngineOptions, run_purification
from ..tensors import to_tensor, to_uint8
from .serve import load_purifier, resolve_weights

CALIBRATION_FILE = "calibration.json"
AMORTISED, IMPRESS = "amortised", "impress"


@dataclass
class MethodImage:
    """One input's outcome: its pixels, the stages it went through, and their seconds."""

    rgb: np.ndarray                    # uint8 H x W x 3, the input's size
    path: list[str]
    seconds: float
    score: Optional[float] = None      # cascade: the detection score of the amortised output
    iterations: int = 0                # IMPRESS steps (0 when it did not run)
    stop_reason: StopReason = StopReason.completed
    trace: list[dict] = field(default_factory=list)


@dataclass
class MethodRun:
    images: list[MethodImage]
    purifier: ModelIdentity             # the network: revision is sha256:<hex> of its weights
    model: ModelIdentity               # the VAE of the cascade; the network's identity for amortised alone
    perceptual: Optional[PerceptualIdentity]
    threshold: Optional[float]         # cascade: the detection threshold its images were judged at
    seconds: float
    device: str
    engine: Optional[EngineReport]     # cascade: how IMPRESS ran on the flagged images (None when none was)


def amortised_pass(images: list[DecodedImage], weights: str, options: EngineOptions):
    """(outputs 1 x 3 x H x W, seconds per image, the network's identity) of one pass over `images`."""
    from .serve import purify_images

    device = resolve_device(options.device)
    net, identity = load_purifier(weights, device)
    # One pass holds no gradients: a few images' worth of IMPRESS's per-step pixel budget.
    outputs, seconds = purify_images(net, [to_tensor(im.rgb) for im in images], 16 * options.cpu_batch_pixels)
    return [out.cpu() for out in outputs], seconds, identity


def run_amortised(images: list[DecodedImage], *, weights: str, options: EngineOptions = EngineOptions()) -> MethodRun:
    outputs, seconds, identity = amortised_pass(images, weights, options)
    return MethodRun(images=[MethodImage(rgb=to_uint8(out), path=[AMORTISED], seconds=s)
                             for out, s in zip(outputs, seconds)],
                     purifier=identity, model=identity, perceptual=None, threshold=None,
                     seconds=sum(seconds), device=identity.device, engine=None)


def calibrated_threshold(weights: str, model: ModelIdentity) -> float:
    """The default detection score's threshold for `model`: the one shipped with the service for these
    weights (detect.shipped_calibrations), else the one calibrated beside the purifier's weights (on clean
    training pictures after the amortised pass); ModelUnavailable when there is neither."""
    shipped = shipped_calibrations().find(model.name, model.revision or "", DEFAULT_DETECT_SCORE)
    if shipped is not None:
        return shipped.calibration.threshold
    _, folder = resolve_weights(weights)
    path = folder / CALIBRATION_FILE
    calibration = json.loads(path.read_text()) if path.exists() else {}
    if (calibration.get("model"), calibration.get("score")) != (model.name, DEFAULT_DETECT_SCORE):
        raise ModelUnavailable(f"the cascade needs a {DEFAULT_DETECT_SCORE} detection threshold for {model.name!r}: set "
                               f"IMPRESS_DETECT_THRESHOLD (`impress calibrate`); the purifier {weights!r} carries one "
                               f"for {calibration.get('model', 'no model')!r} ({calibration.get('score', 'no score')})")
    return float(calibration["threshold"])


def run_cascade(images: list[DecodedImage], params: PurifyParams, *, weights: str, vae: Optional[str],
                perceptual: str, threshold: Optional[float], options: EngineOptions = EngineOptions(),
                reporter: Reporter = SILENT, report_every: int = 10) -> MethodRun:
    """The cascade over `images`, judged by the default detection score; `threshold` is the service's
    threshold for it (IMPRESS_DETECT_THRESHOLD), else `calibrated_threshold`'s."""
    device = resolve_device(options.device)
    vae_model, vae_identity = load_vae(vae_for(params.preset, vae), device)
    threshold = threshold if threshold is not None else calibrated_threshold(weights, vae_identity)
    outputs, seconds, identity = amortised_pass(images, weights, options)
    t0 = time.perf_counter()
    scores = detection_scores(vae_model, [out.to(device) for out in outputs], DEFAULT_DETECT_SCORE)
    score_share = (time.perf_counter() - t0) / max(len(images), 1)
    results = [MethodImage(rgb=to_uint8(out), path=[AMORTISED], seconds=s + score_share, score=score)
               for out, s, score in zip(outputs, seconds, scores)]
    flagged = [i for i, score in enumerate(scores) if score > threshold]
    engine, perceptual_record = None, None
    if flagged:
        run = run_purification([images[i] for i in flagged], params, vae=vae, perceptual=perceptual, options=options,
                               reporter=reporter, report_every=report_every, starts=[outputs[i] for i in flagged])
        share = run.seconds / len(flagged)
        for i, done in zip(flagged, run.images):
            image = results[i]
            image.rgb, image.path, image.seconds = done.rgb, [AMORTISED, IMPRESS], image.seconds + share
            image.iterations, image.stop_reason, image.trace = done.iterations, done.stop_reason, done.trace
        engine, perceptual_record = run.engine, run.perceptual
    return MethodRun(images=results, purifier=identity, model=vae_identity, perceptual=perceptual_record,
                     threshold=threshold, seconds=sum(image.seconds for image in results), device=device, engine=engine)
