"""Engine speed against the published loop, in ONE run, on the same models, device and images.

    python -m bench.bench_speed              # 64² and 128² (and 512² on CUDA), batch 1 and 8, fp32 and bf16
    python -m bench.bench_speed --compile    # also our engine under torch.compile

Models: the Stable Diffusion VAE architecture with random weights (the same FLOPs as the real one)
and LPIPS-VGG with a random backbone (same FLOPs as real LPIPS). Prints and writes iterations/s per
image, images/hour at the preset's 1000 iterations, counted TFLOP/s (torch's FlopCounterMode on one
step) and the ratio to the reference loop. Results: bench/results/speed-<device>[-compile].{json,md,png}.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode


from bench.reference_impress import reference_purify, sd_vae_architecture
from bench.results_io import RESULTS, run_meta, write_results

from impress.contract import PurifyParams
from worker.engine.autoencoder import KLAutoencoder
from worker.engine.perceptual import load_perceptual
from worker.engine.purify import impress_losses, purify

PRESET_ITERS = 1000


def params(iters: int) -> PurifyParams:
    # photoguard preset values; early stop off so both loops run the same step count
    return PurifyParams(preset="photoguard", iters=iters, lr=0.005, alpha=0.01, delta=0.1, noise=0.05,
                        early_stop=False)


def flops_per_step(vae, distance, x: torch.Tensor) -> float:
    """FLOPs of one IMPRESS step of our engine (forward + backward), counted by torch."""
    x = x.clone().requires_grad_(True)
    scorer = distance.bind(x.detach())
    with FlopCounterMode(display=False) as counter:
        loss = impress_losses(vae, scorer, x, 0.01, 0.1, x.shape[-2:])[0]
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


def time_ours(vae, lp, size: int, batch: int, precision: str, compiled: bool, iters: int, dev: str,
              ref_s: float, flops: float) -> dict:
    xb = (torch.rand(batch, 3, size, size) * 2 - 1).to(dev)

    def run(n: int):
        return purify(vae, lp, xb, params(n), device=dev, compile=compiled, precision=precision)

    t_warm = timed(lambda: run(1), dev)
    if dev.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    out = []
    ours_s = timed(lambda: out.append(run(iters)), dev) / iters
    per_image_its = batch / ours_s
    row = {"size": size, "batch": batch,
           "variant": f"ours, {out[0].precision}, batch {batch}" + (", compiled" if out[0].compiled else ""),
           "s_per_step": round(ours_s, 4), "image_its_per_s": round(per_image_its, 4),
           "ratio_to_reference": round(per_image_its * ref_s, 3),
           "images_per_hour_at_1000_iters": round(3600 * per_image_its / PRESET_ITERS, 2),
           "tflop_per_image_step": round(flops / 1e12, 4), "achieved_tflops": round(flops * per_image_its / 1e12, 4),
           "first_step_s": round(t_warm, 2)}
    if dev.startswith("cuda"):
        row["peak_memory_gib_per_image"] = round(torch.cuda.max_memory_allocated() / 2**30 / batch, 3)
    return row


def speed_figure(rows: list[dict]):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted({r["size"] for r in rows})
    variants = sorted({r["variant"] for r in rows}, key=lambda v: (v != "reference", v))
    fig, ax = plt.subplots(figsize=(1.2 + 1.6 * len(sizes) * len(variants) / 3, 3.6))
    width = 0.8 / len(variants)
    for j, v in enumerate(variants):
        values = [next((r["image_its_per_s"] for r in rows if r["size"] == s and r["variant"] == v), 0) for s in sizes]
        bars = ax.bar([i + j * width for i in range(len(sizes))], values, width, label=v)
        for bar, s in zip(bars, sizes):
            ratio = next((r["ratio_to_reference"] for r in rows if r["size"] == s and r["variant"] == v), None)
            if ratio is not None and v != "reference":
                ax.annotate(f"{ratio:.2f}x", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                            ha="center", va="bottom", fontsize=8)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(sizes))], [f"{s}x{s}" for s in sizes])
    ax.set(ylabel="IMPRESS iterations/s per image", title="Our engine vs the published loop (ratio above bars)")
    ax.set_yscale("log")
    ax.legend(fontsize="small")
    return fig


def main() -> None:
    cuda = torch.cuda.is_available()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 128] + ([512] if cuda else []))
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    p.add_argument("--iters", type=int, default=5, help="timed steps per measurement (after one warm-up)")
    p.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=("fp32", "bf16"),
                   help="our engine's forward-pass precision(s); the reference always runs fp32")
    p.add_argument("--compile", action="store_true", help="also time our engine under torch.compile")
    p.add_argument("--device", default="cuda" if cuda else "cpu")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args()
    torch.manual_seed(0)
    dev = args.device
    vae = KLAutoencoder(sd_vae_architecture()).to(dev).eval().requires_grad_(False)
    lp = load_perceptual("lpips-vgg-random-backbone", dev)
    rows = []

    def record(row: dict) -> None:
        rows.append(row)
        print(json.dumps(row), flush=True)

    for size in args.sizes:
        x1 = (torch.rand(1, 3, size, size) * 2 - 1).to(dev)
        flops = flops_per_step(vae, lp, x1)
        reference_purify(vae, lp.net, x1, iters=1)  # warm-up
        ref_s = timed(lambda: reference_purify(vae, lp.net, x1, iters=args.iters), dev) / args.iters
        record({"size": size, "batch": 1, "variant": "reference", "s_per_step": round(ref_s, 4),
                "image_its_per_s": round(1 / ref_s, 4), "ratio_to_reference": 1.0,
                "images_per_hour_at_1000_iters": round(3.6 / ref_s, 2),
                "tflop_per_image_step": round(flops / 1e12, 4), "achieved_tflops": round(flops / ref_s / 1e12, 4)})
        for compiled in [False, True] if args.compile else [False]:
            for precision in args.precisions:
                for batch in args.batches:
                    record(time_ours(vae, lp, size, batch, precision, compiled, args.iters, dev, ref_s, flops))
    meta = {**run_meta(dev), "timed_steps": args.iters,
            "models": "SD VAE architecture (random weights) + LPIPS-VGG (random backbone): real FLOPs, no real weights"}
    lines = [f"# Engine speed vs the published loop ({meta['device_name']})", "",
             f"{meta['models']}. Both loops run the photoguard preset's step on the same images (the reference "
             "in fp32, one image at a time; ours in the precision named, bf16 meaning autocast with fp32 "
             "master pixels); per-image "
             f"iterations/s over {args.iters} timed steps after one warm-up step (`first step` includes "
             "compilation when compiled). FLOPs counted by torch's FlopCounterMode on one step of our engine.", "",
             "| size | variant | s/step | it/s per image | ratio to reference | images/h (1000 it) "
             "| TFLOP per image-step | TFLOP/s | first step s | peak GiB/image |", "|---|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['size']}² | {r['variant']} | {r['s_per_step']:.3f} | {r['image_its_per_s']:.3f} | "
              f"**{r['ratio_to_reference']:.2f}×** | {r['images_per_hour_at_1000_iters']:.1f} | "
              f"{r['tflop_per_image_step']:.4f} | {r['achieved_tflops']:.4f} | {r.get('first_step_s', '—')} | "
              f"{r.get('peak_memory_gib_per_image', '—')} |" for r in rows]
    stem = f"speed-{dev.split(':')[0]}" + ("-compile" if args.compile else "")  # compile runs keep their own table
    write_results(args.out / stem, meta, rows, lines, speed_figure(rows))


if __name__ == "__main__":
    main()
