"""Which detection score ranks across pictures: raw consistency error against content-normalised ratios.

    python -m bench.detection_scores                      # bench/results/detection-scores.{json,md}
    python -m bench.detection_scores --write-thresholds   # also the shipped thresholds (worker/engine/detect_thresholds.json)

On taef2 (or --model), on the evaluation pictures (worker/engine/pictures.py: photographs and
illustrations) at each --sizes: every score of `DETECT_SCORES`, the ROC
AUC of clean against protected per protection and over all of them, and each score's threshold
calibrated on the CALIBRATION pictures (clean, both sizes pooled, disjoint from the evaluation) at
--fpr, with its out-of-sample FPR and interval and the rates it really has on the evaluation set.
Protected pictures are cached as PNGs (worker/engine/protected_pictures.py): a run resumes.
Protections that need a diffusion pipeline (advdm, sds-minus, photoguard-diffusion) are not here:
they attack Stable Diffusion's UNet, which cannot run offline on this project's CPUs.
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from impress.contract import DEFAULT_DETECT_SCORE, DETECT_SCORES
from impress.methods import MethodChoice, choose
from impress.settings import get_settings
from worker.engine.detect import (REFERENCE_COPIES, ScoreCalibration, ShippedCalibrations, SHIPPED_THRESHOLDS,
                                  calibrate, consistency_scores, detection_scores, ratio_scores)
from worker.engine.metrics import roc_auc
from worker.engine.models import load_vae
from worker.engine.perceptual import load_perceptual
from worker.engine.pictures import CALIBRATION, EVALUATION, Picture, available, picture_batch
from worker.engine.protected_pictures import cached_names, protected_pictures, protection_key

from .results_io import RESULTS

CANDIDATES = list(DETECT_SCORES)


def evaluated_protections(steps: int) -> list[MethodChoice]:
    """Every protection that runs without a diffusion pipeline, at `steps` optimisation steps (CPU budget);
    PhotoGuard's first step eps/4."""
    return [choose("protection", "photoguard-8", steps=steps, step=2 / 255),
            choose("protection", "photoguard-16", steps=steps, step=4 / 255),
            choose("protection", "mist-16", steps=steps), choose("protection", "glaze-like", steps=steps)]


def interleaved(pictures: tuple[Picture, ...], count: int) -> tuple[Picture, ...]:
    """The first count/2 photographs and count/2 illustrations, alternating."""
    photos = [p for p in pictures if p.kind == "photo"][:count // 2]
    drawn = [p for p in pictures if p.kind == "illustration"][:count // 2]
    return tuple(p for pair in zip(photos, drawn) for p in pair)


def candidate_scores(vae, x: torch.Tensor) -> dict[str, list[float]]:
    """Every candidate score of each image of the batch, the ratios sharing one raw pass."""
    images = list(x.split(1))
    raw = consistency_scores(vae, images)
    return {"raw": raw, "latent-shift": detection_scores(vae, images, "latent-shift"),
            **{name: ratio_scores(vae, images, raw, name) for name in REFERENCE_COPIES}}


@dataclass
class SizeRun:
    size: int
    clean: dict[str, list[float]]
    protected: dict[str, dict[str, list[float]]]   # protection -> candidate -> scores
    protected_pictures: dict[str, list[str]]   # protection -> the pictures protected by it


def run_size(vae, distance, size: int, count: int, choices: list[MethodChoice], cache: Path, model: str,
             cached_only: bool = False) -> SizeRun:
    pictures = available(EVALUATION, cache)
    clean = picture_batch(pictures, size, cache)
    subset = interleaved(pictures, count)
    index = [pictures.index(p) for p in subset]
    protected, protected_names = {}, {}
    for choice in choices:
        folder = cache / "protected" / model / str(size) / protection_key(choice)
        names = [p.name for p in subset]
        if cached_only:
            names = cached_names(folder, names)
            if not names:
                continue
        part = [index[[p.name for p in subset].index(n)] for n in names]
        with tqdm(total=len(names), desc=f"{choice.name} {size}px", unit="picture") as bar:
            x = protected_pictures(vae, distance, clean[part], names, choice, folder, done=bar.update)
        protected[choice.name], protected_names[choice.name] = candidate_scores(vae, x), names
    return SizeRun(size, candidate_scores(vae, clean), protected, protected_names)


def summarise(runs: list[SizeRun], calibration_scores: dict[str, list[float]], fpr: float) -> dict:
    out = {}
    for name in CANDIDATES:
        cal = calibrate(calibration_scores[name], fpr)
        clean = [s for r in runs for s in r.clean[name]]
        positives = [s for r in runs for p in r.protected.values() for s in p[name]]
        out[name] = {
            "auc_all": round(roc_auc(clean, positives), 4),
            "auc": {f"{r.size}px": {prot: round(roc_auc(r.clean[name], p[name]), 4) for prot, p in r.protected.items()}
                    | {"all": round(roc_auc(r.clean[name], [s for p in r.protected.values() for s in p[name]]), 4)}
                    for r in runs},
            "calibration": cal.as_dict(),
            "held_out_fpr": round(sum(s > cal.threshold for s in clean) / len(clean), 4),
            "held_out_tpr": round(sum(s > cal.threshold for s in positives) / len(positives), 4),
        }
    return out


def markdown(report: dict) -> str:
    lines = ["# Detection scores on `{}`".format(report["model"]["name"]), "",
             f"Produced by `{report['command']}` on {report['machine']} ({report['date']}).", "",
             f"Evaluation: {report['evaluation_pictures']} pictures (half photographs, half illustrations; "
             "worker/engine/pictures.py), clean against protected by "
             + ", ".join(f"`{p}`" for p in report["protections"]) + f" at {report['steps']} steps each "
             "(the CPU budget of this run; the protections' own counts are larger). Protected pictures per size: "
             + "; ".join(f"{k}: " + ", ".join(f"{p} {len(n)}" for p, n in v.items())
                         for k, v in report["protected_pictures"].items())
             + f". Thresholds: calibrated at {report['fpr']:.0%} target FPR on {report['calibration_images']} clean "
             "calibration images (the calibration pictures at every size), disjoint from the evaluation.", "",
             "| score | AUC, all | " + " | ".join(f"AUC {s}" for s in report["sizes"])
             + " | threshold | out-of-sample FPR (95% interval) | held-out FPR / TPR |",
             "|---|---|" + "---|" * len(report["sizes"]) + "---|---|---|"]
    for name, r in report["scores"].items():
        c = r["calibration"]
        lo, hi = c["expected_fpr"]["interval"]
        lines.append(f"| `{name}`{' (default)' if name == report['default'] else ''} | **{r['auc_all']:.3f}** | "
                     + " | ".join(f"{r['auc'][s]['all']:.3f}" for s in report["sizes"])
                     + f" | {c['threshold']:.5g} | {c['expected_fpr']['expected']:.1%} ({lo:.1%}-{hi:.1%}) | "
                     f"{r['held_out_fpr']:.1%} / {r['held_out_tpr']:.1%} |")
    lines += ["", "Per protection (ROC AUC, clean vs protected):", "",
              "| score | size | " + " | ".join(report["protections"]) + " |",
              "|---|---|" + "---|" * len(report["protections"])]
    for name, r in report["scores"].items():
        for size in report["sizes"]:
            lines.append(f"| `{name}` | {size} | " + " | ".join(f"{r['auc'][size][p]:.3f}" if p in r["auc"][size] else "–"
                                                               for p in report["protections"])
                         + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="taef2")
    p.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    p.add_argument("--protected", type=int, nargs="+", default=[24, 24],
                   help="pictures protected at each size (the first half photographs, half illustrations)")
    p.add_argument("--steps", type=int, default=10, help="optimisation steps of every protection")
    p.add_argument("--fpr", type=float, default=0.05)
    p.add_argument("--cache", type=Path, help="picture cache (default: IMPRESS_PICTURE_CACHE)")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--write-thresholds", action="store_true", help=f"write {SHIPPED_THRESHOLDS.name}")
    p.add_argument("--cached-only", action="store_true",
                   help="protect nothing: measure each protection on the pictures an earlier run protected")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    cache = (args.cache or Path(get_settings().picture_cache)).expanduser()
    vae, identity = load_vae(args.model)
    distance = load_perceptual("dssim")
    choices = evaluated_protections(args.steps)
    runs = [run_size(vae, distance, size, count, choices, cache, identity.name, args.cached_only)
            for size, count in zip(args.sizes, args.protected)]
    calibration_pictures = available(CALIBRATION, cache)
    per_size = [candidate_scores(vae, picture_batch(calibration_pictures, size, cache)) for size in args.sizes]
    calibration_scores = {name: [s for scores in per_size for s in scores[name]] for name in CANDIDATES}
    report = {
        "model": identity.model_dump(), "command": "python -m bench.detection_scores", "machine":
            f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
        "date": datetime.date.today().isoformat(), "sizes": [f"{s}px" for s in args.sizes], "steps": args.steps,
        "protections": [c.name for c in choices], "protection_params": {c.name: c.params.model_dump() for c in choices},
        "evaluation_pictures": len(available(EVALUATION, cache)),
        "protected_pictures": {f"{r.size}px": r.protected_pictures for r in runs},
        "calibration_images": len(calibration_scores["raw"]), "fpr": args.fpr,
        "default": DEFAULT_DETECT_SCORE, "scores": summarise(runs, calibration_scores, args.fpr),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "detection-scores.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "detection-scores.md").write_text(markdown(report))
    if args.write_thresholds:
        shipped = ShippedCalibrations(calibrations=[
            ScoreCalibration(score=name, model=identity.name, model_revision=identity.revision,
                             calibration=calibrate(calibration_scores[name], args.fpr),
                             images=f"{len(calibration_pictures)} calibration pictures (worker/engine/pictures.py) "
                                    f"at {', '.join(map(str, args.sizes))} px",
                             command="python -m bench.detection_scores --write-thresholds")
            for name in DETECT_SCORES])
        SHIPPED_THRESHOLDS.write_text(shipped.model_dump_json(indent=2) + "\n")
    print(markdown(report))


if __name__ == "__main__":
    main()
