"""One tenant's abuse does not reach another: a tenant's submit latency and its jobs' fate while strangers
and another tenant hammer the API (locust; target: the tenant's submit p99 <= 100 ms, every job it had
accepted reaches a final state).

    python -m bench.bench_hostile_load                      # 300 measured submits per phase, about 4 min
    python -m bench.bench_hostile_load --samples 30 --warmup-seconds 2 --strangers 5 --flooders 2  # a smoke run

Starts the real API (`impress api`, one uvicorn process) and one solo CPU worker (the bundled autoencoder)
on the local Redis, in a database index and key prefix of their own, with two API keys. Two phases, each
a warm-up (`--warmup-seconds`, not measured: the first requests pay for connections and first-call
imports) and then `--samples` measured submits of the tenant at `--tenant-rate`:
1. the baseline: the measured tenant alone;
2. the hostile phase, the measured tenant with, at once:
   - `--strangers` unauthenticated slow clients: chunked POSTs to /v1/purify that trickle a byte a second;
   - `--flooders` clients probing /readyz with no key, back to back;
   - the abusive tenant, at its limits: uploads as fast as it is let, into its rate limit and its cap on
     unfinished jobs (429s), with the longest jobs it may ask for.
The measured tenant keeps every `--keep-every`-th job it is given and cancels the others at once (an
untimed DELETE): at a rate high enough for a meaningful p99 its jobs would otherwise queue behind the
abuser's on the one worker and reach its own cap on unfinished jobs. When the load stops, every job the
tenant had accepted is polled until it is final. Submit latencies are the tenant's own exact timings;
the CPU time of the API, the worker and the load generator over each measured window, and the load
average, are recorded beside them. Cleans up every key it made. Results: bench/results/hostile-load.{json,md}.
"""
from __future__ import annotations

import locust  # noqa: I001  first: it monkey-patches the standard library for gevent

import argparse
import collections
import json
import math
import os
import select
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import gevent
import httpx
import psutil
import redis
from locust import FastHttpUser, User, between, constant_throughput, task
from locust.env import Environment

from bench.bench_service import free_port, photo_tile_png
from bench.results_io import RESULTS, command_line
from tests.support import stop

ROOT = Path(__file__).resolve().parent.parent
TENANT, ABUSER = "tenant-" + uuid.uuid4().hex, "abuser-" + uuid.uuid4().hex
FINAL = {"succeeded", "failed", "canceled"}
TILE = photo_tile_png()
MEASURED = "tenant submit"
CANCEL = "tenant cancel"
MODEL = "taef2"   # the bundled autoencoder: no download


class SlowStranger(User):
    """No key; a chunked upload that trickles a byte a second (answered 401 before its body)."""

    wait_time = between(0.5, 1.5)

    @task
    def trickle(self) -> None:
        host, port = self.host.removeprefix("http://").split(":")
        start = time.perf_counter()
        status, error = 0, None
        try:
            with socket.create_connection((host, int(port)), timeout=30) as sock:
                sock.sendall(b"POST /v1/purify HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                             b"Content-Type: multipart/form-data; boundary=b\r\n\r\n")
                for _ in range(5):   # a byte a second, until the answer comes
                    if select.select([sock], [], [], 1)[0]:
                        status = int(sock.recv(64).split(b" ", 2)[1])
                        break
                    sock.sendall(b"1\r\n-\r\n")
        except OSError as exc:
            error = exc
        if error is None and status != 401:
            error = RuntimeError(f"answered {status or 'nothing in 5 s'}, not 401")
        self.environment.events.request.fire(request_type="POST", name="stranger slow upload", response_time=(
            time.perf_counter() - start) * 1000, response_length=0, exception=error, context={"status": status})


class ReadyzFlooder(FastHttpUser):
    wait_time = between(0.05, 0.15)

    @task
    def probe(self) -> None:
        with self.client.get("/readyz", name="stranger /readyz", catch_response=True) as r:
            r.success() if r.status_code in (200, 503) else r.failure(str(r.status_code))


class Abuser(FastHttpUser):
    """The other tenant, at its limits: refusals (429) are what it gets, and they are fine."""

    wait_time = between(0, 0.02)

    @task
    def submit(self) -> None:
        with self.client.post("/v1/purify", name="abuser submit", catch_response=True,
                              headers={"Authorization": f"Bearer {ABUSER}"},
                              files={"images": ("tile.png", TILE, "image/png")},
                              data={"iters": str(self.environment.parsed_options.abuser_iters)}) as r:
            r.success() if r.status_code in (202, 429, 503) else r.failure(f"{r.status_code} {r.text[:200]}")


class Tenant(FastHttpUser):
    """The measured tenant: small purifications at a steady rate; keeps every `--keep-every`-th job and
    cancels the others at once; remembers the last known state of every job it was given."""

    states: dict[str, str] = {}
    kept: list[str] = []

    def wait_time(self):
        return constant_throughput(self.environment.parsed_options.tenant_rate)(self)

    @task
    def submit(self) -> None:
        with self.client.post("/v1/purify", name=MEASURED, catch_response=True,
                              headers={"Authorization": f"Bearer {TENANT}"},
                              files={"images": ("tile.png", TILE, "image/png")},
                              data={"iters": "2", "schedule": "fast"}) as r:
            if r.status_code != 202:
                r.failure(f"{r.status_code} {r.text[:200]}")
                return
            job_id = r.json()["id"]
            r.success()
        Tenant.states[job_id] = "queued"
        if len(Tenant.states) % self.environment.parsed_options.keep_every == 0:
            Tenant.kept.append(job_id)
            return
        with self.client.delete(f"/v1/jobs/{job_id}", name=CANCEL, catch_response=True,
                                headers={"Authorization": f"Bearer {TENANT}"}) as r:
            if r.status_code == 200:
                Tenant.states[job_id] = r.json()["state"]
            elif r.status_code == 409:   # it had already finished: polled at the end
                r.success()
            else:
                r.failure(f"{r.status_code} {r.text[:200]}")


def start_service(redis_url: str, tag: str, args: argparse.Namespace) -> tuple[list[subprocess.Popen], str]:
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "IMPRESS_REDIS_URL": redis_url, "IMPRESS_KEY_PREFIX": tag,
           "IMPRESS_QUEUE": tag, "IMPRESS_DETECT_QUEUE": f"{tag}-detect", "IMPRESS_API_KEYS": f"{TENANT},{ABUSER}",
           "IMPRESS_RATE_LIMIT": args.rate_limit, "IMPRESS_MAX_UNFINISHED_JOBS_PER_KEY": str(args.max_unfinished),
           "IMPRESS_MAX_ITERATIONS": str(args.abuser_iters), "IMPRESS_VAE": MODEL,
           "IMPRESS_PERCEPTUAL": "dssim", "IMPRESS_DEVICE": "cpu", "IMPRESS_LOG_FORMAT": "text"}
    log = open(Path(tempfile.gettempdir()) / f"{tag}.log", "w")
    procs = [subprocess.Popen([sys.executable, "-m", "cli", "api", "--port", str(port)], env=env, cwd=ROOT,
                              stdout=log, stderr=subprocess.STDOUT),
             subprocess.Popen([sys.executable, "-m", "cli", "worker", "--pool", "solo", "--queues", tag], env=env,
                              cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)]
    base_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base_url}/readyz", timeout=5).status_code == 200:
                return procs, base_url
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    stop(*procs)
    raise SystemExit(f"the service did not become ready (see {log.name})")


def wait_final(base_url: str, states: dict[str, str], timeout_s: float) -> dict[str, str]:
    """Each job's state once final, or its last state at the timeout; only jobs not known final are
    polled, a few a second (the tenant's rate limit holds for the polls too)."""
    states = dict(states)
    deadline = time.monotonic() + timeout_s
    with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {TENANT}"}, timeout=30) as client:
        while time.monotonic() < deadline and any(state not in FINAL for state in states.values()):
            for job_id in [j for j, state in states.items() if state not in FINAL]:
                r = client.get(f"/v1/jobs/{job_id}")
                if r.status_code == 200:
                    states[job_id] = r.json()["state"]
                time.sleep(0.2)
            time.sleep(1)
    return states


def cpu_seconds(procs: list[psutil.Process]) -> float:
    """User and system CPU time of the processes and their children so far."""
    total = 0.0
    for proc in procs:
        for p in (proc, *proc.children(recursive=True)):
            try:
                times = p.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += times.user + times.system
    return total


def run_load(base_url: str, args: argparse.Namespace, procs: dict[str, list[psutil.Process]], *, hostile: bool) -> dict:
    """One phase: the measured tenant (with the hostile traffic, or alone for the baseline) for a warm-up,
    then until `args.samples` measured submits were answered. Its stats, the tenant's exact submit
    times, the processes' CPU seconds and the load average over the measured window."""
    SlowStranger.fixed_count, ReadyzFlooder.fixed_count = args.strangers, args.flooders
    Abuser.fixed_count, Tenant.fixed_count = args.abusers, 1
    users = [SlowStranger, ReadyzFlooder, Abuser, Tenant] if hostile else [Tenant]
    env = Environment(user_classes=users, host=base_url, parsed_options=args)
    submits: list[float] = []
    statuses: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    measuring = False

    def on_request(name: str, response_time: float, response=None, context=None, **_) -> None:
        if not measuring:
            return
        if name == MEASURED:
            submits.append(response_time)
        statuses[name][getattr(response, "status_code", None) or (context or {}).get("status", 0)] += 1

    env.events.request.add_listener(on_request)
    runner = env.create_local_runner()
    total = sum(user.fixed_count for user in users)
    runner.start(total, spawn_rate=total)
    gevent.sleep(args.warmup_seconds)
    env.stats.reset_all()
    measuring = True
    load_before, cpu_before, start = os.getloadavg(), {k: cpu_seconds(v) for k, v in procs.items()}, time.monotonic()
    deadline = start + 3 * args.samples / args.tenant_rate + 30
    while len(submits) < args.samples and time.monotonic() < deadline:
        gevent.sleep(0.1)
    measuring = False
    seconds = time.monotonic() - start
    cpu = {k: round(cpu_seconds(v) - cpu_before[k], 1) for k, v in procs.items()}
    load_after = os.getloadavg()
    runner.quit()
    return {"env": env, "submits": submits, "seconds": round(seconds, 1), "cpu_seconds": cpu,
            "load_average": [tuple(round(x, 2) for x in load_before), tuple(round(x, 2) for x in load_after)],
            "load_generator_cpu_warning": runner.cpu_warning_emitted,
            "statuses": {name: dict(sorted(codes.items())) for name, codes in sorted(statuses.items())}}


def exact_row(times_ms: list[float]) -> dict:
    """Nearest-rank percentiles of the tenant's own submit times (locust's rounds them)."""
    ordered = sorted(times_ms)

    def rank(q: float) -> float:
        return round(ordered[max(0, math.ceil(q * len(ordered)) - 1)], 1) if ordered else 0.0

    return {"requests": len(ordered), "p50_ms": rank(0.5), "p90_ms": rank(0.9), "p99_ms": rank(0.99),
            "max_ms": rank(1.0)}


def summary(baseline: dict, hostile: dict, states: dict[str, str], args: argparse.Namespace) -> dict:
    env = hostile["env"]

    def row(name: str, method: str) -> dict:
        entry = env.stats.get(name, method)
        return {"requests": entry.num_requests, "failures": entry.num_failures,
                "p50_ms": entry.get_response_time_percentile(0.5), "p90_ms": entry.get_response_time_percentile(0.9),
                "p99_ms": entry.get_response_time_percentile(0.99), "max_ms": round(entry.max_response_time or 0, 1)}

    def submits(phase: dict) -> dict:
        return {**exact_row(phase["submits"]), "failures": phase["env"].stats.get(MEASURED, "POST").num_failures}

    def window(phase: dict) -> dict:
        return {k: phase[k] for k in ("seconds", "cpu_seconds", "load_average", "load_generator_cpu_warning",
                                      "statuses")}

    measured = submits(hostile)
    final = sum(state in FINAL for state in states.values())
    kept = [states[job_id] for job_id in Tenant.kept]
    return {"command": command_line(), "date": time.strftime("%Y-%m-%dT%H:%M:%S"), "model": MODEL,
            "cpus": os.cpu_count(), "samples": args.samples, "warmup_seconds": args.warmup_seconds,
            "strangers": args.strangers, "flooders": args.flooders, "abusers": args.abusers,
            "tenant_rate_per_s": args.tenant_rate, "keep_every": args.keep_every, "rate_limit": args.rate_limit,
            "max_unfinished": args.max_unfinished, "abuser_iters": args.abuser_iters,
            "baseline": window(baseline), "hostile": window(hostile),
            "tenant_submit_alone": submits(baseline), "tenant_submit": measured,
            "tenant_cancel": row(CANCEL, "DELETE"), "stranger_slow_upload": row("stranger slow upload", "POST"),
            "stranger_readyz": row("stranger /readyz", "GET"), "abuser_submit": row("abuser submit", "POST"),
            "refusals": {f"{e.name}: {e.error}"[:160]: e.occurrences for e in env.stats.errors.values()},
            "tenant_jobs_accepted": len(states), "tenant_jobs_final": final,
            "tenant_job_states": {s: list(states.values()).count(s) for s in sorted(set(states.values()))},
            "tenant_jobs_kept": len(kept), "tenant_kept_states": {s: kept.count(s) for s in sorted(set(kept))},
            "target_p99_ms": args.target_p99_ms,
            "meets_target": measured["p99_ms"] <= args.target_p99_ms and final == len(states) > 0}


def markdown(result: dict) -> list[str]:
    t = result
    alone, measured = t["tenant_submit_alone"], t["tenant_submit"]
    lines = ["# Hostile load: one tenant's abuse does not reach another", "",
             f"`{t['command']}`", "",
             f"{t['date']}, {t['cpus']} CPUs. One API process, one solo CPU worker ({t['model']}), Redis on loopback; "
             "the load generator (locust) on the same machine.", "",
             f"Each phase starts with {t['warmup_seconds']:g} s of warm-up that is not measured (the first "
             f"requests pay for connections and first-call imports), then measures {t['samples']} submits of the "
             f"tenant at {t['tenant_rate_per_s']:g}/s: small purifications, of which it keeps every "
             f"{t['keep_every']}th job and cancels the others at once (an untimed DELETE), so that its jobs, queued "
             f"behind the abuser's on the one worker, stay under its cap of {t['max_unfinished']} unfinished jobs. "
             f"The baseline is the tenant alone ({t['baseline']['seconds']:g} s measured); the hostile phase "
             f"({t['hostile']['seconds']:g} s measured) adds {t['strangers']} unauthenticated slow uploads, "
             f"{t['flooders']} /readyz flooders and {t['abusers']} abusive-tenant clients (rate limit "
             f"{t['rate_limit']}, {t['max_unfinished']} unfinished jobs, {t['abuser_iters']}-iteration jobs). The "
             "tenant's submit times are its own exact timings (nearest-rank "
             "percentiles); the other rows are locust's, which rounds them.", "",
             "| traffic | requests | failures | p50 | p90 | p99 | max |", "|---|---|---|---|---|---|---|"]
    for name, key in (("baseline: the measured tenant alone, POST /v1/purify", "tenant_submit_alone"),
                      ("measured tenant: POST /v1/purify", "tenant_submit"),
                      ("measured tenant: DELETE (cancel, not timed against the target)", "tenant_cancel"),
                      ("abusive tenant: POST /v1/purify (429 and 503 counted as answered)", "abuser_submit"),
                      ("strangers: GET /readyz", "stranger_readyz"),
                      ("strangers: slow chunked uploads, no key", "stranger_slow_upload")):
        r = t[key]
        lines.append(f"| {name} | {r['requests']} | {r['failures']} | {r['p50_ms']} ms | {r['p90_ms']} ms | "
                     f"{r['p99_ms']} ms | {r['max_ms']} ms |")
    lines += ["", "Answers in the hostile phase's measured window: " + "; ".join(
                  f"{name}: " + ", ".join(f"{code} ×{n}" for code, n in codes.items())
                  for name, codes in t["hostile"]["statuses"].items()) + ".",
              "", "Refusals and failures by kind: "
              + (", ".join(f"{k} ({v})" for k, v in t["refusals"].items()) or "none") + ".",
              "", "CPU time over each measured window (seconds; 100% is one core):", "",
              "| phase | window | API | worker | load generator | load average (1, 5, 15 min) before → after |",
              "|---|---|---|---|---|---|"]
    for name in ("baseline", "hostile"):
        w = t[name]
        cpu = {k: f"{v:g} s ({100 * v / w['seconds']:.0f}%)" for k, v in w["cpu_seconds"].items()}
        lines.append(f"| {name} | {w['seconds']:g} s | {cpu['api']} | {cpu['worker']} | {cpu['load generator']} | "
                     f"{', '.join(map(str, w['load_average'][0]))} → {', '.join(map(str, w['load_average'][1]))} |")
    warned = [name for name in ("baseline", "hostile") if t[name]["load_generator_cpu_warning"]]
    if warned:
        lines += ["", f"Locust warned that its own CPU use passed 90% ({', '.join(warned)}): its timings may include "
                      "its own scheduling delays."]
    lines += ["", f"The measured tenant's jobs: {t['tenant_jobs_accepted']} accepted, {t['tenant_jobs_final']} reached "
                  f"a final state ({t['tenant_job_states']}); of the {t['tenant_jobs_kept']} it kept: "
                  f"{t['tenant_kept_states']}.", "",
              f"Under the hostile traffic the tenant's submit p50 went from {alone['p50_ms']} ms (alone) to "
              f"{measured['p50_ms']} ms and its p99 from {alone['p99_ms']} ms to {measured['p99_ms']} ms, over "
              f"{alone['requests']} and {measured['requests']} measured submits.", "",
              f"Target (submit p99 <= {t['target_p99_ms']:g} ms and every accepted job final): "
              f"**{'met' if t['meets_target'] else 'not met'}**."]
    if alone["p99_ms"] > t["target_p99_ms"]:
        lines += ["", f"The tenant alone, with no hostile traffic, already had a p99 of {alone['p99_ms']} ms over "
                      f"{alone['requests']} submits, above the target before any abuse (the CPU and load figures above "
                      "are what the machine did meanwhile)."]
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=300, help="measured submits of the tenant in each phase")
    p.add_argument("--warmup-seconds", type=float, default=5.0, help="each phase's start, not measured")
    p.add_argument("--strangers", type=int, default=50)
    p.add_argument("--flooders", type=int, default=20)
    p.add_argument("--abusers", type=int, default=2)
    p.add_argument("--tenant-rate", type=float, default=3.0, help="the measured tenant's submissions per second")
    p.add_argument("--keep-every", type=int, default=10,
                   help="the tenant keeps every Nth job it is given and cancels the others at once")
    p.add_argument("--rate-limit", default="600/minute", help="IMPRESS_RATE_LIMIT of both keys")
    p.add_argument("--max-unfinished", type=int, default=8, help="IMPRESS_MAX_UNFINISHED_JOBS_PER_KEY")
    p.add_argument("--abuser-iters", type=int, default=5, help="IMPRESS_MAX_ITERATIONS, what the abuser asks for")
    p.add_argument("--final-timeout", type=float, default=600.0, help="seconds to wait for the tenant's jobs")
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/12")
    p.add_argument("--target-p99-ms", type=float, default=100.0)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args()
    tag = f"impress-hostile-{uuid.uuid4().hex[:8]}"
    service, base_url = start_service(args.redis_url, tag, args)
    api, worker = (psutil.Process(proc.pid) for proc in service)
    procs = {"api": [api], "worker": [worker], "load generator": [psutil.Process()]}
    try:
        baseline = run_load(base_url, args, procs, hostile=False)
        hostile = run_load(base_url, args, procs, hostile=True)
        states = wait_final(base_url, Tenant.states, args.final_timeout)
    finally:
        stop(*service, timeout_s=30)
        store = redis.Redis.from_url(args.redis_url)
        for key in store.scan_iter(f"*{tag}*"):
            store.delete(key)
    result = summary(baseline, hostile, states, args)
    print(json.dumps(result))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "hostile-load.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "hostile-load.md").write_text("\n".join(markdown(result)) + "\n")


if __name__ == "__main__":
    main()
