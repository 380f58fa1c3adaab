"""The amortised purifier's milliseconds per image at 512x512 on this machine's accelerator (goal on
one H100: <= 50 ms), fp32 and bf16 autocast, batch 1 and 8; part of bench/gpu_run.sh.

    python -m bench.amortised_speed      # bench/results/amortised-speed-<device>.{json,md}
"""
from __future__ import annotations

import statistics
import time

import torch

from bench.results_io import RESULTS, run_meta, write_results
from impress.methods import AMORTISED_WEIGHTS
from worker.engine.amortised.serve import load_purifier

SIDE, REPEATS = 512, 20


def ms_per_image(net, device: str, batch: int, dtype) -> float:
    x = torch.rand(batch, 3, SIDE, SIDE, device=device) * 2 - 1
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    times = []
    with torch.no_grad(), torch.autocast(device_type=device, dtype=dtype or torch.float32, enabled=dtype is not None):
        for i in range(REPEATS + 3):
            sync()
            t0 = time.perf_counter()
            net(x)
            sync()
            if i >= 3:   # the first calls pick kernels
                times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000 / batch


def main() -> None:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    net, identity = load_purifier(AMORTISED_WEIGHTS, device)
    rows = [{"batch": batch, "precision": name, "ms_per_image": round(ms_per_image(net, device, batch, dtype), 2)}
            for batch in (1, 8) for name, dtype in (("fp32", None), ("bf16", torch.bfloat16))]
    meta = {**run_meta(device), "weights": identity.model_dump(), "side": SIDE}
    markdown = [f"# Amortised purifier: ms per {SIDE}x{SIDE} image on {device}", "",
                "| batch | precision | ms per image |", "|---:|---|---:|",
                *(f"| {r['batch']} | {r['precision']} | {r['ms_per_image']} |" for r in rows),
                "", "Goal on one H100: <= 50 ms per image."]
    write_results(RESULTS / f"amortised-speed-{device}", meta, rows, markdown)
    print("\n".join(markdown))


if __name__ == "__main__":
    main()
