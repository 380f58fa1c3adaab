"""The offline model on this CPU: seconds per IMPRESS iteration in fp32 and under bf16 autocast, against
the reference loop in the same run, and whether bf16 keeps the purified images.

    python -m bench.bench_cpu_precision            # 128, 256, 512 px; bf16 timed at --bf16-sizes; ~10 min

Model taef2 with the offline hinge (1 - SSIM, the dssim defaults) on the astronaut example fitted to each
size; one warm-up step, then `--iters` timed steps (wall clock and this process's CPU time, which a
busy shared machine inflates less). The reference is bench/reference_impress.py on the same model,
distance and image. Agreement: the same photoguard-protected picture purified `--agree-iters` fast
steps in fp32 and in bf16; the 8-bit results are compared (largest and mean pixel difference in /255,
PSNR between them, and the decoded-latent PSNR each reaches against the clean image's reconstruction).
Results: bench/results/cpu-precision.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import time

import torch
from PIL import Image, ImageOps

from bench.reference_impress import reference_purify
from bench.results_io import RESULTS, run_meta, write_results
from impress.contract import OFFLINE_MODEL, PurifyOverrides, PurifyParams
from impress.methods import choose
from worker.engine.metrics import psnr, reconstruction
from worker.engine.models import load_vae
from worker.engine.perceptual import load_perceptual
from worker.engine.protect import apply_protection
from worker.engine.purify import purify
from worker.engine.tensors import quantize_8bit, to_tensor

EXAMPLE = "examples/astronaut.png"


def example(size: int) -> torch.Tensor:
    import numpy as np

    return to_tensor(np.array(ImageOps.fit(Image.open(EXAMPLE).convert("RGB"), (size, size), Image.LANCZOS)))


def fast_params(iters: int) -> PurifyParams:
    return PurifyOverrides(schedule="fast", iters=iters, early_stop=False).resolve("dssim")


def clocked(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of fn()."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def per_iteration(fn, iters: int) -> tuple[float, float]:
    fn(1)  # warm-up
    wall, cpu = clocked(lambda: fn(iters))
    return wall / iters, cpu / iters


def speed_rows(vae, dssim, size: int, iters: int, bf16: bool) -> list[dict]:
    x = example(size)
    p = fast_params(iters)
    ref = per_iteration(lambda n: reference_purify(vae, lambda a, b: dssim.bind(b)(a), x, iters=n, lr=p.lr,
                                                   alpha=p.alpha, delta=p.delta, noise=p.noise), iters)
    rows = [("reference loop, fp32", ref)]
    rows.append(("ours, fp32", per_iteration(lambda n: purify(vae, dssim, x, fast_params(n), precision="fp32"), iters)))
    if bf16:
        rows.append(("ours, bf16 autocast",
                     per_iteration(lambda n: purify(vae, dssim, x, fast_params(n), precision="bf16"), iters)))
    return [{"size": size, "variant": name, "s_per_iteration": round(wall, 3), "cpu_s_per_iteration": round(cpu, 3),
             "ratio_to_reference": round(ref[0] / wall, 2)} for name, (wall, cpu) in rows]


def agreement(vae, dssim, size: int, iters: int) -> dict:
    clean = example(size)
    protected = apply_protection(choose("protection", "photoguard-16-200steps"), vae, clean, dssim)
    clean_decoded = reconstruction(vae, clean)
    out = {name: quantize_8bit(purify(vae, dssim, protected, fast_params(iters), precision=name).images)
           for name in ("fp32", "bf16")}
    diff = (out["bf16"] - out["fp32"]).abs() * 127.5
    return {"size": size, "iterations": iters, "max_abs_diff_255": round(float(diff.max()), 2),
            "mean_abs_diff_255": round(float(diff.mean()), 3),
            "psnr_bf16_vs_fp32_db": round(float(psnr(out["bf16"], out["fp32"])), 2),
            **{f"decoded_psnr_db_{name}": round(float(psnr(reconstruction(vae, y), clean_decoded)), 2)
               for name, y in out.items()},
            "decoded_psnr_db_protected": round(float(psnr(reconstruction(vae, protected), clean_decoded)), 2)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[128, 256, 512])
    p.add_argument("--bf16-sizes", type=int, nargs="*", default=[128], help="sizes at which bf16 is timed too")
    p.add_argument("--iters", type=int, default=1, help="timed iterations per measurement (after one warm-up)")
    p.add_argument("--agree-size", type=int, default=32)
    p.add_argument("--agree-iters", type=int, default=20)
    args = p.parse_args()
    vae, identity = load_vae(OFFLINE_MODEL)
    dssim = load_perceptual("dssim")
    rows = []
    for size in args.sizes:
        for row in speed_rows(vae, dssim, size, args.iters, size in args.bf16_sizes):
            rows.append(row)
            print(json.dumps(row), flush=True)
    agreed = agreement(vae, dssim, args.agree_size, args.agree_iters)
    print(json.dumps(agreed), flush=True)
    meta = {**run_meta("cpu"), "model": identity.model_dump(), "agreement": agreed,
            "cpu_bf16": bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())}
    lines = [f"# `{identity.name}` on the CPU: fp32 against bf16 autocast, and the reference loop", "",
             f"Model `{identity.name}`, hinge 1 − SSIM (fast schedule, Δ 0.05, α 1), the astronaut example "
             f"fitted to each size, batch 1. {args.iters} timed iterations after one warm-up; wall clock and "
             f"this process's CPU time per iteration (the machine is shared). oneDNN reports native bf16 on "
             f"this CPU: {meta['cpu_bf16']}.", "",
             "| size | variant | s / iteration | CPU s / iteration | speed vs reference |", "|---:|---|---:|---:|---:|"]
    lines += [f"| {r['size']} | {r['variant']} | {r['s_per_iteration']} | {r['cpu_s_per_iteration']} | "
              f"{r['ratio_to_reference']}x |" for r in rows]
    lines += ["", f"Agreement ({agreed['size']} px, photoguard-16-200steps, {agreed['iterations']} fast iterations, "
              f"8-bit results): bf16 against fp32 differ by at most {agreed['max_abs_diff_255']}/255 "
              f"(mean {agreed['mean_abs_diff_255']}/255, PSNR {agreed['psnr_bf16_vs_fp32_db']} dB between them); "
              f"decoded-latent PSNR to the clean reconstruction: protected {agreed['decoded_psnr_db_protected']} dB, "
              f"fp32 {agreed['decoded_psnr_db_fp32']} dB, bf16 {agreed['decoded_psnr_db_bf16']} dB."]
    write_results(RESULTS / "cpu-precision", meta, rows, lines)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
