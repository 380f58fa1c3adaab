"""Protection budgets: what each protection preset states against what its 8-bit output spends.

    python -m bench.bench_protection_budgets    # bundled model, 4 held-out photos at 64², CPU, ~15 min
    python -m bench.bench_protection_budgets --protections glaze-like

Every protection in `worker/engine/protect.py` runs with its defaults on held-out photos (centre
crops resized to --size) and the bundled model, with the offline perceptual distance (1 - SSIM).
The measured figures are of the saved 8-bit images against the clean ones: the maximum over images
of L-inf and of the perceptual distance (what a budget bounds) and the means of PSNR and SSIM.
Results: bench/results/protection-budgets.{json,md}.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from PIL import Image, ImageOps

from bench.results_io import RESULTS, run_meta, write_results
from impress.contract import OFFLINE_MODEL
from impress.methods import AUTOENCODER_PROTECTIONS, choose
from worker.engine.models import load_vae
from worker.engine.perceptual import load_perceptual
from worker.engine.photos import held_out_paths
from worker.engine.protect import apply_protection, budget, stated_budget
from worker.engine.tensors import to_tensor


def held_out_squares(count: int, size: int) -> torch.Tensor:
    return torch.cat([to_tensor(np.array(ImageOps.fit(Image.open(path).convert("RGB"), (size, size),
                                                      Image.LANCZOS))) for path in held_out_paths()[:count]])


def measure(vae, distance, clean: torch.Tensor, name: str) -> dict:
    spec = choose("protection", name)
    t0 = time.perf_counter()
    protected = apply_protection(spec, vae, clean, distance)
    seconds = time.perf_counter() - t0
    spent = budget(protected, clean, distance)
    stated = stated_budget(spec)
    # keyed as the results file has always been: the perceptual figures under the distance's name
    bounds = {k: v for k, v in (("linf_255", stated.linf_255), (distance.name, stated.perceptual)) if v is not None}
    row = {"protection": name, "params": spec.params.model_dump(), "seconds": round(seconds, 1),
           "stated": {k: round(v, 4) for k, v in bounds.items()},
           "measured_max": {"linf_255": round(max(spent.linf_255), 4), distance.name: round(max(spent.perceptual), 4)},
           "psnr_db_mean": round(float(np.mean(spent.psnr_db)), 2),
           "ssim_mean": round(float(np.mean(spent.ssim)), 4)}
    row["within"] = all(row["measured_max"][k] <= bound + 1e-6 for k, bound in bounds.items())
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=4)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--protections", default=",".join(AUTOENCODER_PROTECTIONS),
                   help="comma-separated names (default: all that need no diffusion pipeline)")
    args = p.parse_args()
    torch.manual_seed(0)
    vae, identity = load_vae(OFFLINE_MODEL)
    distance = load_perceptual("dssim")
    clean = held_out_squares(args.images, args.size)
    rows = []
    for name in args.protections.split(","):
        rows.append(measure(vae, distance, clean, name))
        print(rows[-1], flush=True)
    meta = {**run_meta("cpu"), "model": identity.model_dump(), "perceptual": distance.name,
            "images": [path.rsplit("/", 1)[-1] for path in held_out_paths()[:args.images]], "size": args.size}
    name = distance.name
    lines = ["# Protection budgets: stated vs measured on the 8-bit output", "",
             f"Model `{identity.name}` ({identity.revision}), perceptual distance `{name}`, "
             f"{args.images} held-out photos at {args.size}² ({', '.join(meta['images'])}).", "",
             f"| protection | stated L∞ /255 | measured max L∞ | stated {name} | measured max {name} "
             "| PSNR dB | SSIM | within | seconds |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['protection']} | {r['stated']['linf_255']:.1f} | {r['measured_max']['linf_255']:.1f} "
                     f"| {r['stated'].get(name, '–')} | {r['measured_max'][name]:.4f} | {r['psnr_db_mean']:.2f} "
                     f"| {r['ssim_mean']:.4f} | {'yes' if r['within'] else '**no**'} | {r['seconds']} |")
    write_results(RESULTS / "protection-budgets", meta, rows, lines)


if __name__ == "__main__":
    main()
