"""Engine speed against the published loop, in ONE run, on the same models, device and images.

    python bench/bench_speed.py                       # CPU: 64² and 128², batch 1 and 8
    python bench/bench_speed.py --sizes 512 --iters 20 --device cuda   # on a GPU

Models: the Stable Diffusion VAE architecture with random weights (the same FLOPs as the real one)
and LPIPS-VGG with a random backbone (same FLOPs as real LPIPS). Prints and writes iterations/s per
image, images/hour at the preset's 1000 iterations, counted TFLOP/s (torch's FlopCounterMode on one
step) and the ratio to the reference loop. Results: bench/results/speed-<device>.{json,md}.
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from reference_impress import reference_purify, sd_vae_architecture  # noqa: E402

from impress.contract import PurifyParams  # noqa: E402
from worker.engine.perceptual import load_perceptual  # noqa: E402
from worker.engine.purify import impress_losses, purify  # noqa: E402

PRESET_ITERS = 1000


def params(iters: int) -> PurifyParams:
    # photoguard preset values; early stop off so both loops run the same step count
    return PurifyParams(preset="photoguard", iters=iters, lr=0.005, alpha=0.01, delta=0.1, noise=0.05,
                        early_stop=False)


def flops_per_step(vae, distance, x: torch.Tensor) -> float:
    """FLOPs of one IMPRESS step of our engine (forward + backward), counted by torch."""
    x = x.clone().requires_grad_(True)
    distance.set_reference(x.detach())
    with FlopCounterMode(display=False) as counter:
        loss = impress_losses(vae, distance, x, 0.01, 0.1, x.shape[-2:])[0]
        loss.sum().backward()
    return float(counter.get_total_flops())


def timed(fn, device: str) -> float:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    p.add_argument("--iters", type=int, default=3, help="timed steps per measurement (after one warm-up)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = p.parse_args()
    torch.manual_seed(0)
    dev = args.device
    vae = sd_vae_architecture().to(dev).eval().requires_grad_(False)
    lp = load_perceptual("lpips-vgg-random-backbone", dev)
    rows = []
    for size in args.sizes:
        x1 = (torch.rand(1, 3, size, size) * 2 - 1).to(dev)
        reference_purify(vae, lp.net, x1, iters=1)  # warm-up
        ref_s = timed(lambda: reference_purify(vae, lp.net, x1, iters=args.iters), dev) / args.iters
        flops = flops_per_step(vae, lp, x1)
        for batch in args.batches:
            xb = (torch.rand(batch, 3, size, size) * 2 - 1).to(dev)
            purify(vae, lp, xb, params(1), device=dev)  # warm-up
            if dev.startswith("cuda"):
                torch.cuda.reset_peak_memory_stats()
            ours_s = timed(lambda: purify(vae, lp, xb, params(args.iters), device=dev), dev) / args.iters
            per_image_its = batch / ours_s
            row = {"size": size, "batch": batch, "reference_s_per_step": round(ref_s, 4),
                   "ours_s_per_step": round(ours_s, 4), "ours_image_its_per_s": round(per_image_its, 4),
                   "reference_image_its_per_s": round(1 / ref_s, 4),
                   "ratio_to_reference": round(per_image_its * ref_s, 3),
                   "images_per_hour_at_1000_iters": round(3600 * per_image_its / PRESET_ITERS, 2),
                   "tflop_per_image_step": round(flops / 1e12, 4),
                   "achieved_tflops": round(flops * per_image_its / 1e12, 4)}
            if dev.startswith("cuda"):
                row["peak_memory_gib_per_image"] = round(torch.cuda.max_memory_allocated() / 2**30 / batch, 3)
            rows.append(row)
            print(json.dumps(row), flush=True)
    meta = {"command": "python " + " ".join(sys.argv), "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "device": dev if dev == "cpu" else torch.cuda.get_device_name(),
            "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
            "models": "SD VAE architecture (random weights) + LPIPS-VGG (random backbone): real FLOPs, no real weights",
            "timed_steps": args.iters}
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"speed-{dev.split(':')[0]}"
    stem.with_suffix(".json").write_text(json.dumps({**meta, "rows": rows}, indent=2) + "\n")
    lines = [f"# Engine speed vs the published loop ({meta['device']})", "",
             f"`{meta['command']}` — {meta['date']}, {meta['machine']}. {meta['models']}.", "",
             "| size | batch | reference it/s | ours it/s per image | ratio | images/h (1000 it) | TFLOP/step/image | TFLOP/s |",
             "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['size']}² | {r['batch']} | {r['reference_image_its_per_s']:.3f} | {r['ours_image_its_per_s']:.3f} | "
              f"**{r['ratio_to_reference']:.2f}×** | {r['images_per_hour_at_1000_iters']:.1f} | "
              f"{r['tflop_per_image_step']:.3f} | {r['achieved_tflops']:.3f} |" for r in rows]
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
