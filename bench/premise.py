"""The IMPRESS premise on taef2: reports/premise-taef2.{json,md,html}, by one command.

    python -m bench.premise                 # after (or with) python -m bench.detection_scores --write-thresholds

At each --sizes, on the evaluation pictures (worker/engine/pictures.py: photographs and
illustrations): the reconstruction PSNR; per protection (those without a diffusion pipeline, at the
detection bench's --steps) the consistency ratio (protected over clean, same pictures) and the
detection ROC AUC of the default score with the out-of-sample FPR of the shipped threshold; per
purifier the consistency error, PSNR and SSIM to clean, latent distance to clean and decoded PSNR
(D(E(x)) against D(E(clean))); the worst case per picture (its best purifier). IMPRESS and its
variants cost hundreds of autoencoder gradient steps per picture: they run on the first
--impress-pictures protected pictures at --impress-sizes only (the report says so). Protected and
purified pictures are cached as PNGs: a run resumes.
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import sys
from pathlib import Path

import jinja2
import torch
from tqdm import tqdm

from impress.contract import DEFAULT_DETECT_SCORE
from impress.methods import parse_choice
from impress.settings import get_settings
from worker.engine.detect import detection_scores, shipped_calibrations
from worker.engine.metrics import roc_auc
from worker.engine.models import load_vae
from worker.engine.perceptual import load_perceptual
from worker.engine.pictures import EVALUATION, available, picture_batch
from worker.engine.premise import FIGURES, figures_against_clean, reconstruction_psnr
from worker.engine.protected_pictures import cached_names, cached_pictures, protected_pictures, protection_key
from worker.engine.purifiers import PURIFIER_FUNCTIONS, apply_purifier

from .detection_scores import evaluated_protections, interleaved

REPORTS = Path(__file__).resolve().parent.parent / "reports"
PURIFIERS = "impress:schedule=fast,impress:schedule=published,noise-impress:schedule=fast,jpeg-75,noise,blur"
TEMPLATES = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).with_name("templates")),
                               undefined=jinja2.StrictUndefined, autoescape=jinja2.select_autoescape(("html.j2",)))


def mean(values: list[float]) -> float:
    return round(statistics.fmean(values), 5)


def run_size(vae, identity, distance, size: int, count: int, args, cache: Path) -> dict:
    pictures = available(EVALUATION, cache)
    clean_all = picture_batch(pictures, size, cache)
    subset = interleaved(pictures, count)
    shipped = shipped_calibrations().find(identity.name, identity.revision, DEFAULT_DETECT_SCORE)
    clean_scores = detection_scores(vae, list(clean_all.split(1)), DEFAULT_DETECT_SCORE)
    out = {"size": size, "pictures": [p.name for p in pictures], "protected_pictures": {},
           "reconstruction_psnr_db": mean(reconstruction_psnr(vae, clean_all)), "protections": {}}
    for choice in evaluated_protections(args.steps):
        folder = cache / "protected" / identity.name / str(size)
        names = [p.name for p in subset]
        if args.cached_only:
            names = cached_names(folder / protection_key(choice), names)
            if not names:
                continue
        clean = clean_all[[pictures.index(p) for p in subset if p.name in names]]
        clean_figures = figures_against_clean(vae, clean, clean)
        protected = protected_pictures(vae, distance, clean, names, choice, folder / protection_key(choice))
        scores = detection_scores(vae, list(protected.split(1)), DEFAULT_DETECT_SCORE)
        prot_figures = figures_against_clean(vae, protected, clean)
        out["protected_pictures"][choice.name] = names
        row = {"consistency_ratio": round(mean(prot_figures["consistency_error"]) / mean(clean_figures["consistency_error"]), 3),
               "detection_auc": round(roc_auc(clean_scores, scores), 4), "protected": prot_figures, "purifiers": {}}
        if shipped is not None:
            row["threshold"] = shipped.calibration.threshold
            row["detected"] = round(sum(s > shipped.calibration.threshold for s in scores) / len(scores), 4)
            row["expected_fpr"] = shipped.calibration.expected_fpr.expected
            row["expected_fpr_interval"] = list(shipped.calibration.expected_fpr.interval)
        for label in args.purifiers.split(","):
            purifier = parse_choice(label, "purifier")
            costly = PURIFIER_FUNCTIONS[type(purifier.params)].needs_models
            if costly and size not in args.impress_sizes:
                continue
            n = min(args.impress_pictures, len(names)) if costly else len(names)
            key = folder / protection_key(choice) / "purified" / protection_key(purifier)
            if args.cached_only and costly:
                n = len(cached_names(key, names[:n]))
                if not n:
                    continue
            with tqdm(total=n, desc=f"{size}px {choice.name} {label}", unit="picture") as bar:
                purified = cached_pictures(key, names[:n], lambda part: apply_purifier(
                    purifier, protected[part], vae, distance).detach(), batch=2, done=bar.update)
            row["purifiers"][label] = {"pictures": n, **figures_against_clean(vae, purified, clean[:n])}
        out["protections"][choice.name] = row
    return out


def worst_cases(row: dict, names: list[str]) -> list[dict]:
    """Per protected picture, the purifier that gave the highest decoded PSNR, among those run on it."""
    out = []
    for i, name in enumerate(names):
        ran = {label: p["decoded_psnr_db"][i] for label, p in row["purifiers"].items() if i < p["pictures"]}
        best = max(ran, key=ran.get)
        out.append({"picture": name, "purifier": best, "decoded_psnr_db": round(ran[best], 2),
                    "protected_decoded_psnr_db": round(row["protected"]["decoded_psnr_db"][i], 2)})
    return out


def summary(size_run: dict) -> dict:
    """Means of every figure, for the tables."""
    table = {}
    for prot, row in size_run["protections"].items():
        table[prot] = {"protected": {k: mean(row["protected"][k]) for k in FIGURES}}
        for label, p in row["purifiers"].items():
            n = p["pictures"]
            table[prot][label] = {"pictures": n, **{k: mean(p[k]) for k in FIGURES},
                                  "protected_decoded_psnr_db": mean(row["protected"]["decoded_psnr_db"][:n])}
        row["worst_case"] = worst_cases(row, size_run["protected_pictures"][prot])
    return table


def figure(report: dict) -> str:
    import base64
    import io

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(report["sizes"]), figsize=(6 * len(report["sizes"]), 4), squeeze=False)
    for ax, run in zip(axes[0], report["sizes"]):
        prots = list(run["summary"])
        labels = sorted({label for prot in prots for label in run["summary"][prot] if label != "protected"})
        width = 0.8 / (len(labels) + 1)
        for j, label in enumerate(["protected", *labels]):
            ax.bar([i + j * width for i in range(len(prots))],
                   [run["summary"][p].get(label, {}).get("decoded_psnr_db", 0) for p in prots], width, label=label)
        ax.set_xticks([i + 0.4 for i in range(len(prots))], prots)
        ax.set_ylabel("decoded PSNR vs D(E(clean)), dB")
        ax.set_title(f"{run['size']} px")
        ax.set_ylim(bottom=15)
    axes[0][0].legend(fontsize=7)
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="taef2")
    p.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    p.add_argument("--protected", type=int, nargs="+", default=[24, 24], help="pictures protected at each size")
    p.add_argument("--steps", type=int, default=10, help="optimisation steps of every protection")
    p.add_argument("--purifiers", default=PURIFIERS)
    p.add_argument("--impress-pictures", type=int, default=2, help="pictures IMPRESS and its variants purify")
    p.add_argument("--impress-sizes", type=int, nargs="+", default=[128])
    p.add_argument("--cache", type=Path, help="picture cache (default: IMPRESS_PICTURE_CACHE)")
    p.add_argument("--out", type=Path, default=REPORTS)
    p.add_argument("--cached-only", action="store_true", help="protect and run IMPRESS on nothing new: measure "
                   "what an earlier run cached (the cheap purifiers still run)")
    args = p.parse_args(argv)
    cache = (args.cache or Path(get_settings().picture_cache)).expanduser()
    vae, identity = load_vae(args.model)
    distance = load_perceptual("dssim")
    runs = [run_size(vae, identity, distance, size, count, args, cache)
            for size, count in zip(args.sizes, args.protected)]
    for run in runs:
        run["summary"] = summary(run)
    report = {"model": identity.model_dump(), "machine": f"{platform.machine()}, torch {torch.__version__}",
              "date": datetime.date.today().isoformat(), "command": " ".join(["python -m bench.premise", *(sys.argv[1:] if argv is None else argv)]),
              "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
              "perceptual": distance.name, "score": DEFAULT_DETECT_SCORE, "figures": list(FIGURES), "sizes": runs}
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"premise-{identity.name}"
    stem.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    stem.with_suffix(".md").write_text(TEMPLATES.get_template("premise.md.j2").render(r=report))
    stem.with_suffix(".html").write_text(TEMPLATES.get_template("premise.html.j2").render(r=report, plot=figure(report)))
    print(f"written {stem}.md, .html, .json")


if __name__ == "__main__":
    main()
