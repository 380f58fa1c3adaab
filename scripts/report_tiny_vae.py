"""What the platform measures on the bundled model, on held-out photos: writes reports/tiny-vae.{json,md}.

    python scripts/report_tiny_vae.py            # ~10 min on 2 CPU cores; needs the 'train' extra
    python scripts/report_tiny_vae.py --reading reports/tiny-vae-reading.md --markdown-only
                                                 # re-render the .md from the .json with a reading

Figures: reconstruction PSNR and clean consistency error; PhotoGuard encoder attacks (L-inf 8/255
and 16/255, PGD toward E(grey)) with their measured budgets; IMPRESS (photoguard preset, 150
iterations, offline 1-SSIM hinge) before/after; detection ROC AUC of the consistency error.
Deterministic: the same command gives the same numbers on the same machine.
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
from pathlib import Path

import torch

from impress.contract import PurifyOverrides
from worker.engine.premise import premise_report
from worker.engine.models import TINY_VAE_NAME, load_vae
from worker.engine.perceptual import load_perceptual
from worker.engine.photos import HELD_OUT, held_out_photos


def markdown(report: dict, command: str) -> str:
    c = report["clean"]
    lines = [
        f"# What the platform measures on `{TINY_VAE_NAME}`", "",
        f"Produced by `{command}` on {report['machine']} ({report['date']}).",
        f"Model: `{report['model']['name']}` revision `{report['model']['revision']}`; perceptual distance of the hinge: "
        f"`{report['perceptual']}` (1 − SSIM, **not LPIPS**: no LPIPS backbone weights can be had offline).",
        f"Images: {report['images']} held-out {report['size'][0]}×{report['size'][1]} tiles of photos the model never saw "
        f"({', '.join(p.split('/')[-1] for _, p in HELD_OUT)}).", "",
        "## 1. Clean images", "",
        f"- reconstruction PSNR: **{c['reconstruction_psnr_db']:.2f} dB**",
        f"- consistency error mean((x − D(E(x)))²) in [-1, 1] units: {c['consistency_error']:.5f} "
        f"(median {c['consistency_error_median']:.5f})", "",
        "## 2–4. Protection, purification, detection", "",
        "| | ε 8/255 | ε 16/255 |", "|---|---|---|",
    ]
    a = report["attacks"]
    rows = [
        ("latent moved toward E(grey) (fraction of the way)", lambda r: f"{r['latent_moved_toward_target']:.3f}"),
        ("measured L∞ / L2 (/255 units)", lambda r: f"{r['budget']['linf_255']:.2f} / {r['budget']['l2_255']:.1f}"),
        ("measured PSNR / SSIM to clean", lambda r: f"{r['budget']['psnr_db']:.2f} dB / {r['budget']['ssim']:.4f}"),
        ("consistency error: protected (× clean)", lambda r: f"{r['protected']['consistency_error']:.5f} "
                                                               f"({r['protected']['consistency_ratio_to_clean']:.2f}×)"),
        ("consistency error: purified (× clean)", lambda r: f"{r['purified']['consistency_error']:.5f} "
                                                              f"({r['purified']['consistency_ratio_to_clean']:.2f}×)"),
        ("PSNR to clean: protected → purified", lambda r: f"{r['protected']['psnr_to_clean_db']:.2f} → "
                                                          f"{r['purified']['psnr_to_clean_db']:.2f} dB"),
        ("latent distance to E(clean): protected → purified", lambda r: f"{r['protected']['latent_distance_to_clean']:.4f} → "
                                                                        f"{r['purified']['latent_distance_to_clean']:.4f}"),
        ("IMPRESS objective: first → last step", lambda r: f"{r['purified']['impress_objective_first']:.5f} → "
                                                           f"{r['purified']['impress_objective_last']:.5f}"),
        ("detection ROC AUC, clean vs protected", lambda r: f"{r['detection_auc_clean_vs_protected']:.3f}"),
        ("detection ROC AUC, clean vs purified", lambda r: f"{r['detection_auc_clean_vs_purified']:.3f}"),
    ]
    lines += [f"| {name} | " + " | ".join(fmt(r) for r in a) + " |" for name, fmt in rows]
    lines += ["", f"Attack: {a[0]['attack'].split(',')[0]}, {report['attack_steps']} PGD steps, step ε/4 decaying "
              f"linearly to ε/400. IMPRESS: {json.dumps(report['impress'])}.", "", "## Reading", "", report["reading"], ""]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=64, help="held-out 64x64 tiles (seeded choice)")
    p.add_argument("--attack-steps", type=int, default=200)
    p.add_argument("--iters", type=int, default=150)
    p.add_argument("--out", type=Path, default=Path("reports"))
    p.add_argument("--reading", type=Path, help="a Markdown paragraph interpreting the figures")
    p.add_argument("--markdown-only", action="store_true",
                   help="no measuring: rewrite tiny-vae.md from tiny-vae.json (figures and command as recorded)")
    args = p.parse_args()
    reading = args.reading.read_text().strip() if args.reading else "(no reading given)"
    if args.markdown_only:
        recorded = json.loads((args.out / "tiny-vae.json").read_text())
        recorded["reading"] = reading
        (args.out / "tiny-vae.json").write_text(json.dumps(recorded, indent=2) + "\n")
        (args.out / "tiny-vae.md").write_text(markdown(recorded, recorded["command"]))
        return
    torch.manual_seed(0)
    vae, identity = load_vae(TINY_VAE_NAME)
    tiles = held_out_photos(crop=64)
    pick = torch.randperm(tiles.shape[0], generator=torch.Generator().manual_seed(0))[:args.images]
    params = PurifyOverrides(preset="photoguard", schedule="published", iters=args.iters,
                             early_stop=False).resolve("dssim")
    report = premise_report(vae, load_perceptual("dssim"), tiles[pick], attack_steps=args.attack_steps, impress=params)
    report.update(model=identity.model_dump(), perceptual="dssim", impress=params.model_dump(),
                  attack_steps=args.attack_steps, date=datetime.date.today().isoformat(),
                  machine=f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
                  reading=reading)
    command = "python " + " ".join(sys.argv)
    args.out.mkdir(exist_ok=True)
    (args.out / "tiny-vae.json").write_text(json.dumps({"command": command, **report}, indent=2) + "\n")
    (args.out / "tiny-vae.md").write_text(markdown(report, command))
    print(json.dumps(report["clean"]), json.dumps([r["detection_auc_clean_vs_protected"] for r in report["attacks"]]))


if __name__ == "__main__":
    main()
