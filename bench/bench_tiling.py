"""Pictures of any size on the CPU: peak memory and seconds per iteration against the side length.

    python -m bench.bench_tiling                       # taef2 and the SD-size VAE, 256² to 2048²
    python -m bench.bench_tiling --models taef2 --sides 256 2048 --budget-s 1200

Each (model, side) runs `run_purification` on one synthetic photo for `--iters` iterations in a
fresh process, so its peak resident memory (ru_maxrss) is its own; the model's resident memory
after loading is recorded beside it. Tiles run one after another with the same cost each, so a tiled
picture is timed on its first `--timed-tiles` tiles (then stopped) and its seconds per iteration are
scaled to all its tiles; the seams' blend of the whole picture runs after, inside the measured peak. Pictures with a side above the tiling threshold are purified as
overlapping tiles (worker/engine/tiling.py): memory stays that of one tile. Models: TAEF2 (bundled),
and the Stable Diffusion VAE architecture with random weights (the same FLOPs and activations as the
real one; no weights needed); the perceptual distance is 1-SSIM (dssim), so the rows show the
autoencoder's cost (LPIPS-VGG adds its own per pixel). The SD-size VAE runs with tiles above 512 px: one 1024² pass of it needs more memory
than a small CPU machine has. Rows are kept as they finish (a rerun skips them); `--budget-s` stops
starting new ones. Results: bench/results/tiling.{json,md,png}.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.results_io import RESULTS, run_meta, write_results

STEM = RESULTS / "tiling"
SD_VAE = "sd-vae-architecture (random weights)"
# The tiling each model runs with: (tile side, overlap, tiled above this side).
TILINGS = {"taef2": (512, 64, 1024), SD_VAE: (512, 64, 512)}


class StopAfter:
    """A reporter that stops the run once `steps` image-iterations are done (short of the whole run)."""

    def __init__(self, steps: int):
        self.steps = steps

    def advance(self, step: int, total: int, loss=None) -> None:
        from impress.progress import Canceled

        if self.steps <= step < total:
            raise Canceled


def measure(model: str, location: str, side: int, iters: int, timed_tiles: int) -> dict:
    """One row, in this process (the child's side)."""
    import torch

    from impress.contract import PurifyParams
    from impress.images import DecodedImage
    from impress.progress import Canceled
    import numpy as np
    from worker.engine.models import load_vae
    from worker.engine.pipeline import EngineOptions, run_purification
    from worker.engine.tiling import Tiling, blend, tiles_of

    size, overlap, above = TILINGS[model]
    tiling = Tiling(size, overlap, above)
    load_vae(location, "cpu")
    loaded_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    # The cost does not depend on the content: a random picture.
    image = DecodedImage(rgb=np.random.default_rng(side).integers(0, 256, (side, side, 3), np.uint8), alpha=None,
                         format="PNG")
    params = PurifyParams(preset="photoguard", iters=iters, lr=0.005, alpha=0.01, delta=0.1, noise=0.05,
                          early_stop=False)
    tiles = tiles_of(side, side, tiling) if tiling.applies(side, side) else []
    timed = min(timed_tiles, len(tiles)) or 1
    # One tile per batch (cpu_batch_pixels): the run stops once `timed` tiles are done.
    t0 = time.perf_counter()
    try:
        run_purification([image], params, vae=location, perceptual="dssim", report_every=1,
                         options=EngineOptions(device="cpu", tiling=tiling, cpu_batch_pixels=1),
                         reporter=StopAfter(timed * iters))
    except Canceled:
        pass
    seconds = time.perf_counter() - t0
    if tiles:
        blend([image.rgb[:t.height, :t.width] for t in tiles], tiles, side, side)
    return {"model": model, "side": side, "iters": iters, "tiles": len(tiles) or 1, "timed_tiles": timed,
            "tile": f"{size}/{overlap} above {above}",
            "seconds_per_iteration": round(seconds / iters * (len(tiles) or 1) / timed, 2),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "model_loaded_rss_mib": round(loaded_mib), "torch_threads": torch.get_num_threads()}


def sd_vae_folder(folder: Path) -> str:
    from bench.reference_impress import sd_vae_architecture

    if not (folder / "config.json").exists():
        import torch

        torch.manual_seed(0)
        sd_vae_architecture().save_pretrained(folder, safe_serialization=True)
    return str(folder)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["taef2", "sd"], choices=["taef2", "sd"])
    p.add_argument("--sides", nargs="+", type=int, default=[256, 512, 1024, 1536, 2048])
    p.add_argument("--iters", type=int, default=1)
    p.add_argument("--timed-tiles", type=int, default=2, help="tiles of a tiled picture that are timed")
    p.add_argument("--budget-s", type=float, default=3600, help="start no new row after this many seconds")
    p.add_argument("--one", nargs=3, metavar=("MODEL", "LOCATION", "SIDE"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print(json.dumps(measure(args.one[0], args.one[1], int(args.one[2]), args.iters, args.timed_tiles)))
        return
    done = json.loads(STEM.with_suffix(".json").read_text())["rows"] if STEM.with_suffix(".json").exists() else []
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        models = {"taef2": ("taef2", "taef2"), "sd": (SD_VAE, None)}
        for key in args.models:
            name, location = models[key]
            for side in args.sides:
                if any(r["model"] == name and r["side"] == side for r in done):
                    continue
                if time.monotonic() - t0 > args.budget_s:
                    print(f"budget spent: {name} {side}² not run", flush=True)
                    continue
                location = location or sd_vae_folder(Path(tmp) / "sd-vae")
                child = subprocess.run([sys.executable, "-m", "bench.bench_tiling", "--iters", str(args.iters),
                                        "--timed-tiles", str(args.timed_tiles), "--one", name, location, str(side)], capture_output=True, text=True,
                                       env={**os.environ, "PYTHONWARNINGS": "ignore"})
                if child.returncode != 0:
                    print(f"{name} {side}² failed:\n{child.stderr[-2000:]}", flush=True)
                    continue
                row = json.loads(child.stdout.strip().splitlines()[-1])
                print(row, flush=True)
                done.append(row)
                report(done)


def report(rows: list[dict]) -> None:
    import matplotlib.pyplot as plt

    rows = sorted(rows, key=lambda r: (r["model"], r["side"]))
    table = ["# Pictures of any size on the CPU: memory and time per iteration", "",
             "| model | side | tiles (side/overlap, tiled above) | tiles timed | s / iteration | peak RSS MiB | "
             "RSS after model load MiB |", "|---|---|---|---|---|---|---|"]
    table += [f"| {r['model']} | {r['side']}² | {r['tiles']} ({r['tile']}) | {r['timed_tiles']} | {r['seconds_per_iteration']} | "
              f"{r['peak_rss_mib']} | {r['model_loaded_rss_mib']} |" for r in rows]
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for model in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == model]
        left.plot([r["side"] for r in mine], [r["seconds_per_iteration"] for r in mine], "o-", label=model)
        right.plot([r["side"] for r in mine], [r["peak_rss_mib"] for r in mine], "o-", label=model)
    left.set(xlabel="side (px)", ylabel="seconds per iteration", yscale="log")
    right.set(xlabel="side (px)", ylabel="peak resident memory (MiB)")
    left.legend()
    write_results(STEM, run_meta("cpu"), rows, table, figure)


if __name__ == "__main__":
    main()
