"""`impress detect` and `impress calibrate`: consistency-error triage of image files, in this process."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pydantic import ValidationError

from impress.contract import (DEFAULT_DETECT_SCORE, DEFAULT_PRESET, DETECT_SCORES, DEVICES, MODEL_CHOICES, DetectParams,
                              ThresholdPair, vae_for)
from impress.records import DetectedImage
from impress.settings import Settings, get_settings

from .common import CommandFailed, decode_files, load_vae_or_fail


def add_parsers(sub) -> None:
    det = sub.add_parser("detect", help="flag protected images by their VAE consistency error")
    det.add_argument("images", nargs="+", help="image files")
    det.add_argument("--score", choices=list(DETECT_SCORES), default=DEFAULT_DETECT_SCORE,
                     help="; ".join(f"{k}: {v}" for k, v in DETECT_SCORES.items()))
    det.add_argument("--model", help=f"autoencoder: {MODEL_CHOICES} (default: the calibration's, else the "
                                     "configured one or the photoguard preset's)")
    thr = det.add_mutually_exclusive_group()
    thr.add_argument("--threshold", type=float, help="flag scores above this 'protected' (default: IMPRESS_DETECT_"
                                                     "THRESHOLD for the default score, else the thresholds shipped "
                                                     "for the model and score)")
    thr.add_argument("--calibration", help="a file written by `impress calibrate`")
    det.add_argument("--low-threshold", type=float,
                     help="with --threshold: flag scores below this 'purified' (a calibration brings its own)")
    det.add_argument("--device", choices=DEVICES)
    det.add_argument("--batch-size", type=int, default=16)
    det.set_defaults(func=run_detect)

    cal = sub.add_parser("calibrate", help="detection threshold from clean images for a target FPR")
    cal.add_argument("images", nargs="+", help="clean image files")
    cal.add_argument("--score", choices=list(DETECT_SCORES), default=DEFAULT_DETECT_SCORE)
    cal.add_argument("--fpr", type=float, default=0.05, help="target false positive rate")
    cal.add_argument("--low-fpr", type=float,
                     help="also a lower threshold: at most this fraction of clean images flagged 'purified'")
    cal.add_argument("-o", "--output", default="calibration.json")
    cal.add_argument("--model", help=f"autoencoder: {MODEL_CHOICES} (default: the configured one, else the "
                                     "photoguard preset's)")
    cal.add_argument("--device", choices=DEVICES)
    cal.add_argument("--batch-size", type=int, default=16)
    cal.set_defaults(func=run_calibrate)


def scores_of(args: argparse.Namespace, model: str, settings: Settings) -> tuple[list[float], dict]:
    """(detection scores of args.images, the VAE's identity)."""
    from worker.engine.detect import detection_scores
    from worker.engine.tensors import to_tensor

    images = decode_files(args.images, settings)
    vae, identity = load_vae_or_fail(model, args.device, settings)
    return detection_scores(vae, [to_tensor(im.rgb) for im in images], args.score, args.batch_size), identity.model_dump()


def run_detect(args: argparse.Namespace) -> int:
    """Score images; with thresholds (given, configured, calibrated or shipped), a verdict each."""
    from worker.engine.detect import ScoreCalibration, service_thresholds, verdicts

    try:
        asked = DetectParams(score=args.score, threshold=args.threshold, low_threshold=args.low_threshold)
    except ValidationError as exc:
        raise CommandFailed(f"{exc.errors()[0]['msg']} (--low-threshold goes with --threshold)") from exc
    settings = get_settings()
    calibration = ScoreCalibration.model_validate_json(Path(args.calibration).read_text()) if args.calibration else None
    model = args.model or (calibration and calibration.model) or vae_for(DEFAULT_PRESET, settings.vae)
    if calibration and calibration.score != args.score:
        raise CommandFailed(f"{args.calibration} calibrates the {calibration.score} score, not {args.score}: "
                            f"pass --score {calibration.score}")
    scores, identity = scores_of(args, model, settings)
    if calibration and [calibration.model, calibration.model_revision] != [identity["name"], identity["revision"]]:
        raise CommandFailed(f"{args.calibration} was calibrated on {calibration.model} ({calibration.model_revision}), "
                            f"not {identity['name']} ({identity['revision']}): a threshold holds only for its model; "
                            "recalibrate with `impress calibrate`")
    if calibration:
        pair = asked.thresholds(ThresholdPair(calibration.calibration.threshold, calibration.calibration.low_threshold,
                                              "calibration"))
    else:
        pair = asked.thresholds(*service_thresholds(settings, identity["name"], identity["revision"], args.score))
    for path, score, verdict in zip(args.images, scores, verdicts(scores, pair.threshold, pair.low_threshold)):
        print(DetectedImage(name=str(path), score=score, score_name=args.score, verdict=verdict,
                            threshold=pair.threshold, low_threshold=pair.low_threshold, thresholds_from=pair.source,
                            model=identity["name"], model_revision=identity["revision"]).model_dump_json())
    return 0


def out_of_sample(rate) -> str:
    low, high = rate.interval
    return (f"on new clean images expect {rate.expected:.1%} ({rate.confidence:.0%} interval "
            f"{low:.1%}-{high:.1%})")


def run_calibrate(args: argparse.Namespace) -> int:
    """A detection threshold from clean images, for a target false positive rate."""
    from worker.engine.detect import ScoreCalibration, calibrate

    settings = get_settings()
    scores, identity = scores_of(args, args.model or vae_for(DEFAULT_PRESET, settings.vae), settings)
    try:
        cal = calibrate(scores, args.fpr, args.low_fpr)
    except ValueError as exc:
        raise CommandFailed(str(exc)) from exc
    record = ScoreCalibration(score=args.score, model=identity["name"], model_revision=identity["revision"],
                              calibration=cal, images=f"{len(args.images)} files",
                              command=f"impress calibrate --model {identity['name']} --score {args.score} "
                                      f"--fpr {args.fpr}" + (f" --low-fpr {args.low_fpr}" if args.low_fpr else ""))
    Path(args.output).write_text(record.model_dump_json(indent=2) + "\n")
    print(f"threshold {cal.threshold:.6g}: {cal.fpr:.1%} of {cal.n} clean images flagged protected "
          f"(target {args.fpr:.1%}); {out_of_sample(cal.expected_fpr)}")
    if cal.low_threshold is not None:
        print(f"low threshold {cal.low_threshold:.6g}: {cal.low_fpr:.1%} flagged purified (target {args.low_fpr:.1%}); "
              f"{out_of_sample(cal.expected_low_fpr)}")
    for warning in cal.warnings():
        print(f"warning: {warning}", file=sys.stderr)
    print(f"written to {args.output}")
    return 0
