"""`impress detect` and `impress calibrate`: consistency-error triage of image files, in this process."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pydantic import ValidationError

from impress.contract import DEFAULT_PRESET, DEVICES, MODEL_CHOICES, DetectParams, vae_for
from impress.records import DetectedImage
from impress.settings import Settings, get_settings

from .common import CommandFailed, decode_files, load_vae_or_fail


def add_parsers(sub) -> None:
    det = sub.add_parser("detect", help="flag protected images by their VAE consistency error")
    det.add_argument("images", nargs="+", help="image files")
    det.add_argument("--model", help=f"autoencoder: {MODEL_CHOICES} (default: the calibration's, else the "
                                     "configured one or the photoguard preset's)")
    thr = det.add_mutually_exclusive_group()
    thr.add_argument("--threshold", type=float, help="flag scores above this 'protected'")
    thr.add_argument("--calibration", help="a file written by `impress calibrate`")
    det.add_argument("--low-threshold", type=float,
                     help="with --threshold: flag scores below this 'purified' (a calibration brings its own)")
    det.add_argument("--device", choices=DEVICES)
    det.add_argument("--batch-size", type=int, default=16)
    det.set_defaults(func=run_detect)

    cal = sub.add_parser("calibrate", help="detection threshold from clean images for a target FPR")
    cal.add_argument("images", nargs="+", help="clean image files")
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
    """(consistency scores of args.images, the VAE's identity)."""
    from worker.engine.detect import consistency_scores
    from worker.engine.tensors import to_tensor

    images = decode_files(args.images, settings)
    vae, identity = load_vae_or_fail(model, args.device, settings)
    return consistency_scores(vae, [to_tensor(im.rgb) for im in images], args.batch_size), identity.model_dump()


def run_detect(args: argparse.Namespace) -> int:
    """Score images by consistency error; with a threshold (given or calibrated), a verdict each."""
    from worker.engine.detect import verdicts

    try:
        asked = DetectParams(threshold=args.threshold, low_threshold=args.low_threshold)
    except ValidationError as exc:
        raise CommandFailed(f"{exc.errors()[0]['msg']} (--low-threshold goes with --threshold)") from exc
    settings = get_settings()
    calibration = json.loads(Path(args.calibration).read_text()) if args.calibration else None
    model = args.model or (calibration and calibration["model"]["name"]) or vae_for(DEFAULT_PRESET, settings.vae)
    scores, identity = scores_of(args, model, settings)
    same_model = lambda m: [m["name"], m["revision"]] == [identity["name"], identity["revision"]]  # noqa: E731
    if calibration and not same_model(calibration["model"]):
        raise CommandFailed(f"{args.calibration} was calibrated on {calibration['model']['name']} "
                            f"({calibration['model']['revision']}), not {identity['name']} ({identity['revision']}): "
                            "a threshold holds only for its model; recalibrate with `impress calibrate`")
    threshold, low = asked.thresholds((calibration["threshold"], calibration.get("low_threshold"))
                                      if calibration else (None, None))
    for path, score, verdict in zip(args.images, scores, verdicts(scores, threshold, low)):
        print(DetectedImage(name=str(path), score=score, verdict=verdict, threshold=threshold, low_threshold=low,
                            model=identity["name"], model_revision=identity["revision"]).model_dump_json())
    return 0


def out_of_sample(rate) -> str:
    low, high = rate.interval
    return (f"on new clean images expect {rate.expected:.1%} ({rate.confidence:.0%} interval "
            f"{low:.1%}-{high:.1%})")


def run_calibrate(args: argparse.Namespace) -> int:
    """A detection threshold from clean images, for a target false positive rate."""
    from worker.engine.detect import calibrate

    settings = get_settings()
    scores, identity = scores_of(args, args.model or vae_for(DEFAULT_PRESET, settings.vae), settings)
    try:
        cal = calibrate(scores, args.fpr, args.low_fpr)
    except ValueError as exc:
        raise CommandFailed(str(exc)) from exc
    record = {**cal.as_dict(), "score": "consistency error mean((x - D(E(x)))^2), pixels in [-1, 1]",
              "model": identity}
    Path(args.output).write_text(json.dumps(record, indent=2) + "\n")
    print(f"threshold {cal.threshold:.6g}: {cal.fpr:.1%} of {cal.n} clean images flagged protected "
          f"(target {args.fpr:.1%}); {out_of_sample(cal.expected_fpr)}")
    if cal.low_threshold is not None:
        print(f"low threshold {cal.low_threshold:.6g}: {cal.low_fpr:.1%} flagged purified (target {args.low_fpr:.1%}); "
              f"{out_of_sample(cal.expected_low_fpr)}")
    for warning in cal.warnings():
        print(f"warning: {warning}", file=sys.stderr)
    print(f"written to {args.output}")
    return 0
