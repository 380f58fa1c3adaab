"""One short GPU check, for a session that is lent a GPU (about 5 minutes on an H100/H200):

    python -m bench.gpu_check        # writes bench/results/gpu-check.json and speed-cuda.{json,md}

1. Correctness: the bundled model purifies the same tiles on CUDA (fp32 and bf16 autocast) and on
   the CPU; the results must agree within tolerance.
2. Speed: bench_speed.py at 512², batch 1 and 8, bf16 autocast, with peak memory per image, and
   the fraction of the chip's dense bf16 peak (H100/H200 SXM: 989 TFLOP/s) the loop reaches.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch


from impress.contract import OFFLINE_MODEL, PurifyOverrides
from worker.engine.models import load_vae
from worker.engine.perceptual import load_perceptual
from worker.engine.photos import held_out_photos
from worker.engine.purify import purify

BF16_PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}
HERE = Path(__file__).resolve().parent


def purified(device: str, precision: str) -> torch.Tensor:
    vae, _ = load_vae(OFFLINE_MODEL, device)
    params = PurifyOverrides(preset="photoguard", schedule="published", iters=50, early_stop=False).resolve("dssim")
    return purify(vae, load_perceptual("dssim", device), held_out_photos()[:8], params, device=device,
                  precision=precision).images


def main() -> None:
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device here: run this on a machine with a GPU")
    cpu = purified("cpu", "fp32")
    fp32 = purified("cuda", "fp32")
    bf16 = purified("cuda", "bf16")
    check = {"device": torch.cuda.get_device_name(), "max_abs_diff_cuda_fp32_vs_cpu": float((fp32 - cpu).abs().max()),
             "max_abs_diff_cuda_bf16_vs_cpu": float((bf16 - cpu).abs().max()),
             "mean_abs_diff_cuda_bf16_vs_cpu": float((bf16 - cpu).abs().mean())}
    subprocess.run([sys.executable, str(HERE / "bench_speed.py"), "--sizes", "512", "--batches", "1", "8",
                    "--iters", "10", "--device", "cuda"], check=True)
    speed = json.loads((HERE / "results" / "speed-cuda.json").read_text())
    peak = next((v for k, v in BF16_PEAK_TFLOPS.items() if k in check["device"]), None)
    for row in speed["rows"]:
        row["fraction_of_bf16_peak"] = round(row["achieved_tflops"] / peak, 3) if peak else None
    check["speed"] = speed["rows"]
    (HERE / "results" / "gpu-check.json").write_text(json.dumps(check, indent=2) + "\n")
    print(json.dumps(check, indent=2))


if __name__ == "__main__":
    main()
