"""Reconstruction of the bundled model (taef2) on whole photographs, per resolution.

    python -m bench.bench_reconstruction     # scikit-image's sample photographs at 64-512 px, ~1 min

Each photograph is centre-cropped to a square and resized (Lanczos) to each resolution, as the demo
and users hand them in: PSNR of D(E(x)) to x. Results: bench/results/reconstruction-held-out.{json,md}.
"""
from __future__ import annotations

import argparse
import statistics

import numpy as np
import torch
from PIL import Image, ImageOps

from bench.results_io import RESULTS, run_meta, write_results
from worker.engine.metrics import psnr, reconstruction
from impress.contract import OFFLINE_MODEL
from worker.engine.models import load_vae
from worker.engine.photos import HELD_OUT, held_out_paths
from worker.engine.tensors import to_tensor

SIZES = (64, 128, 256, 512)


def skimage_photos() -> list[tuple[str, str]]:
    """(name, path) of scikit-image's colour sample photographs among the held-out ones."""
    return [(rel.rsplit("/", 1)[-1].split(".")[0], path)
            for (pkg, rel), path in zip(HELD_OUT, held_out_paths()) if pkg == "skimage"]


@torch.no_grad()
def reconstruction_psnr(vae, path: str, size: int) -> float:
    x = to_tensor(np.array(ImageOps.fit(Image.open(path).convert("RGB"), (size, size), Image.LANCZOS)))
    return round(float(psnr(reconstruction(vae, x), x)), 2)


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    vae, identity = load_vae(OFFLINE_MODEL)
    photos = skimage_photos()
    rows = [{"photo": name, **{f"psnr_db_{s}": reconstruction_psnr(vae, path, s) for s in SIZES}}
            for name, path in photos]
    means = {f"psnr_db_{s}": round(statistics.fmean(r[f"psnr_db_{s}"] for r in rows), 2) for s in SIZES}
    rows.append({"photo": "mean", **means})
    meta = {**run_meta("cpu"), "model": identity.model_dump()}
    lines = [f"# Reconstruction of `{identity.name}` on whole photographs", "",
             f"Model `{identity.name}` ({identity.revision}); scikit-image's sample photographs, "
             "centre-cropped square and resized; PSNR of D(E(x)) to x. Held out from anything this project "
             "trained; the model's author does not list its training images, so common sample photos like "
             "these may have been among them.", "",
             "| photo | " + " | ".join(f"{s} px" for s in SIZES) + " |", "|---|" + "---:|" * len(SIZES)]
    lines += ["| " + " | ".join([r["photo"], *(f"{r[f'psnr_db_{s}']:.2f} dB" for s in SIZES)]) + " |" for r in rows]
    write_results(RESULTS / "reconstruction-held-out", meta, rows, lines)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
