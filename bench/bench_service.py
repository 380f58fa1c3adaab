"""Submit latency of the API under a steady request rate (target: p99 <= 50 ms at 100 req/s), with API keys and per-key rate limits on.

    python -m bench.bench_service                      # 25, 50 and 100 req/s, 15 s each, on loopback
    python -m bench.bench_service --rates 100 200 --seconds 10

Starts the real API (`impress api`, one uvicorn process) against the local Redis, in its own
database index and key prefix, with no worker: every POST /v1/purify uploads a real 64x64 photo
tile and is queued, which is the whole of what a submit costs. Requests leave on a fixed schedule
(open loop: a slow answer never delays the next request, so queueing delay shows in the latency).
Past IMPRESS_MAX_INFLIGHT_SUBMITS in flight the API answers 503 (counted as shed). Cleans up every
key it made. Results: bench/results/service-submit.{json,md,png}.
"""
from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import numpy as np
import redis
from PIL import Image


from bench.results_io import RESULTS, run_meta, write_results

ROOT = Path(__file__).resolve().parent.parent
BENCH_KEY = "bench-" + uuid.uuid4().hex


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def photo_tile_png() -> bytes:
    img = Image.open(ROOT / "examples" / "coffee.png").convert("RGB").resize((64, 64), Image.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


async def fire(client: httpx.AsyncClient, rate: float, seconds: float, png: bytes) -> list[dict]:
    """POST /v1/purify at `rate` per second for `seconds`; one record per request."""
    records: list[dict] = []

    async def one(i: int) -> None:
        t0 = time.perf_counter()
        try:
            r = await client.post("/v1/purify", files={"images": (f"tile{i}.png", png, "image/png")},
                                  data={"preset": "photoguard", "iters": "50"})
            status = r.status_code
        except httpx.HTTPError as exc:
            status = type(exc).__name__
        records.append({"i": i, "sent_s": t0 - start, "latency_ms": (time.perf_counter() - t0) * 1000,
                        "status": status})

    start = time.perf_counter()
    tasks = []
    for i in range(int(rate * seconds)):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)
    return records


async def warm_then_measure(base_url: str, rate: float, warmup: float, seconds: float, png: bytes) -> list[dict]:
    # One client for both phases: the measured run reuses warm keep-alive connections, as a
    # long-running client of the service would.
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
    async with httpx.AsyncClient(base_url=base_url, timeout=30, limits=limits,
                                 headers={"Authorization": f"Bearer {BENCH_KEY}"}) as client:
        await fire(client, rate, warmup, png)
        return await fire(client, rate, seconds, png)


def latency_figure(runs: dict[float, list[dict]], target_ms: float):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (cdf, series) = plt.subplots(1, 2, figsize=(10, 3.6))
    for rate, records in runs.items():
        ordered = np.sort([r["latency_ms"] for r in records])
        cdf.plot(ordered, np.arange(1, len(ordered) + 1) / len(ordered), label=f"{rate:g} req/s")
        series.scatter([r["sent_s"] for r in records], [r["latency_ms"] for r in records], s=2, label=f"{rate:g} req/s")
    cdf.axvline(target_ms, color="grey", linestyle="--")
    series.axhline(target_ms, color="grey", linestyle="--")
    cdf.axhline(0.99, color="black", linestyle=":", linewidth=0.8)
    cdf.set(xlabel="submit latency (ms)", ylabel="fraction of requests", xscale="log",
            title=f"POST /v1/purify latency (CDF; target p99 {target_ms:g} ms)")
    cdf.legend(fontsize="small")
    series.set(xlabel="time into the run (s)", ylabel="latency (ms)", yscale="log", title="latency over each run")
    return fig


def start_api(redis_url: str, tag: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    # Keys and rate limits on, as a shared deployment runs: every request is authenticated and counted
    # in Redis (limits set high enough that the bench measures their cost, not refusals).
    env = {**os.environ, "IMPRESS_REDIS_URL": redis_url, "IMPRESS_KEY_PREFIX": tag, "IMPRESS_QUEUE": tag,
           "IMPRESS_API_KEYS": BENCH_KEY, "IMPRESS_RATE_LIMIT": "1000000/minute",
           "IMPRESS_MAX_UNFINISHED_JOBS_PER_KEY": "1000000"}
    api = subprocess.Popen([sys.executable, "-m", "cli", "api", "--port", str(port)], env=env, cwd=ROOT,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{base_url}/healthz").status_code == 200:
                return api, base_url
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or api.poll() is not None:
            api.kill()
            raise SystemExit("the API did not come up")
        time.sleep(0.3)


def measure(rate: float, args: argparse.Namespace, png: bytes) -> list[dict]:
    """One rate against a fresh API process (a backlog left by one rate never slows the next)."""
    tag = f"impress-bench-{uuid.uuid4().hex[:8]}"
    store = redis.Redis.from_url(args.redis_url)
    api, base_url = start_api(args.redis_url, tag)
    try:
        return asyncio.run(warm_then_measure(base_url, rate, args.warmup, args.seconds, png))
    finally:
        api.terminate()
        api.wait(timeout=20)
        for key in store.scan_iter(f"*{tag}*"):  # job records, blobs, the queue and kombu's bindings
            store.delete(key)


def summarize(rate: float, records: list[dict], target_ms: float) -> dict:
    latencies = np.array([r["latency_ms"] for r in records])
    q = {k: round(float(np.percentile(latencies, k)), 2) for k in (50, 90, 99)}
    return {"rate_per_s": rate, "requests": len(records), "accepted_202": sum(r["status"] == 202 for r in records),
            "shed_503": sum(r["status"] == 503 for r in records),
            "other_statuses": sorted({str(r["status"]) for r in records if r["status"] not in (202, 503)}),
            "p50_ms": q[50], "p90_ms": q[90], "p99_ms": q[99], "max_ms": round(float(latencies.max()), 2),
            "meets_target": q[99] <= target_ms}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rates", type=float, nargs="+", default=[25.0, 50.0, 100.0], help="requests per second")
    p.add_argument("--seconds", type=float, default=15.0, help="measured seconds per rate")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds of load before each measured run")
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/12", help="a database index of its own")
    p.add_argument("--target-p99-ms", type=float, default=50.0)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args()
    png = photo_tile_png()
    runs = {rate: measure(rate, args, png) for rate in args.rates}
    store = redis.Redis.from_url(args.redis_url)
    for key in store.scan_iter("*impress-bench-*"):  # a straggler kombu binding of any earlier rate
        store.delete(key)
    rows = [summarize(rate, records, args.target_p99_ms) for rate, records in runs.items()]
    for row in rows:
        print(json.dumps(row))
    meta = {**run_meta("cpu"), "api": "one uvicorn process (impress api), Redis on loopback, no worker",
            "upload": "64x64 PNG photo tile, preset photoguard, iters 50", "seconds_per_rate": args.seconds,
            "target_p99_ms": args.target_p99_ms}
    lines = ["# Service: submit latency under load", "",
             f"{meta['api']}; each request {meta['upload']}; open-loop schedule, {args.seconds:g} s per rate after "
             f"{args.warmup:g} s of warm-up, a fresh API process per rate. The load generator shares the machine.", "",
             "| rate | requests | accepted (202) | shed (503) | p50 | p90 | p99 | max | p99 ≤ target |",
             "|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['rate_per_s']:g}/s | {r['requests']} | {r['accepted_202']} | {r['shed_503']} | {r['p50_ms']} ms | {r['p90_ms']} ms | "
              f"**{r['p99_ms']} ms** | {r['max_ms']} ms | {'yes' if r['meets_target'] else 'no'} |" for r in rows]
    write_results(args.out / "service-submit", meta, rows, lines, latency_figure(runs, args.target_p99_ms))


if __name__ == "__main__":
    main()
