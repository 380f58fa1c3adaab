"""One tenant's abuse does not reach another: a tenant's submit latency and its jobs' fate while strangers
and another tenant hammer the API (locust; target: the tenant's submit p99 <= 100 ms, every job it had
accepted reaches a final state).

    python -m bench.bench_hostile_load                  # 60 s
    python -m bench.bench_hostile_load --seconds 30 --strangers 50 --flooders 20

Starts the real API (`impress api`, one uvicorn process) and one solo CPU worker (the bundled tiny VAE)
on the local Redis, in a database index and key prefix of their own, with two API keys. First the
measured tenant runs alone (`--baseline-seconds`: what the shared machine gives it anyway); then, at once:
- `--strangers` unauthenticated slow clients: chunked POSTs to /v1/purify that trickle a byte a second;
- `--flooders` clients probing /readyz with no key, back to back;
- the abusive tenant, at its limits: uploads as fast as it is let, into its rate limit and its cap on
  unfinished jobs (429s), with the longest jobs it may ask for;
- the measured tenant: small purifications at a steady rate.
When the load stops, every job the measured tenant had accepted is polled until it is final. The
machine's load average is recorded (it is shared: run this once, briefly). Cleans up every key it made.
Results: bench/results/hostile-load.{json,md}.
"""
from __future__ import annotations

import locust  # noqa: I001  first: it monkey-patches the standard library for gevent

import argparse
import json
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
    """The measured tenant: small purifications at a steady rate; remembers every job accepted."""

    accepted: list[str] = []

    def wait_time(self):
        return constant_throughput(self.environment.parsed_options.tenant_rate)(self)

    @task
    def submit(self) -> None:
        with self.client.post("/v1/purify", name=MEASURED, catch_response=True,
                              headers={"Authorization": f"Bearer {TENANT}"},
                              files={"images": ("tile.png", TILE, "image/png")},
                              data={"iters": "2", "schedule": "fast"}) as r:
            if r.status_code == 202:
                Tenant.accepted.append(r.json()["id"])
                r.success()
            else:
                r.failure(f"{r.status_code} {r.text[:200]}")


def start_service(redis_url: str, tag: str, args: argparse.Namespace) -> tuple[list[subprocess.Popen], str]:
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "IMPRESS_REDIS_URL": redis_url, "IMPRESS_KEY_PREFIX": tag,
           "IMPRESS_QUEUE": tag, "IMPRESS_DETECT_QUEUE": f"{tag}-detect", "IMPRESS_API_KEYS": f"{TENANT},{ABUSER}",
           "IMPRESS_RATE_LIMIT": args.rate_limit, "IMPRESS_MAX_UNFINISHED_JOBS_PER_KEY": str(args.max_unfinished),
           "IMPRESS_MAX_ITERATIONS": str(args.abuser_iters), "IMPRESS_VAE": "impress-tiny-vae",
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


def wait_final(base_url: str, ids: list[str], timeout_s: float) -> dict[str, str]:
    """The state of each job once final, or its last state at the timeout."""
    states: dict[str, str] = {}
    deadline = time.monotonic() + timeout_s
    with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {TENANT}"}, timeout=30) as client:
        while time.monotonic() < deadline:
            for job_id in ids:
                if states.get(job_id) not in FINAL:
                    states[job_id] = client.get(f"/v1/jobs/{job_id}").json()["state"]
            if all(state in FINAL for state in states.values()):
                break
            time.sleep(1)
    return states


def run_load(base_url: str, args: argparse.Namespace, seconds: float, hostile: bool) -> Environment:
    """The measured tenant for `seconds`, with the hostile traffic or (the baseline) alone."""
    SlowStranger.fixed_count, ReadyzFlooder.fixed_count = args.strangers, args.flooders
    Abuser.fixed_count, Tenant.fixed_count = args.abusers, 1
    users = [SlowStranger, ReadyzFlooder, Abuser, Tenant] if hostile else [Tenant]
    env = Environment(user_classes=users, host=base_url, parsed_options=args)
    runner = env.create_local_runner()
    total = sum(user.fixed_count for user in users)
    runner.start(total, spawn_rate=total)
    gevent.sleep(seconds)
    runner.quit()
    return env


def summary(baseline: Environment, env: Environment, states: dict[str, str], args: argparse.Namespace,
            load: tuple) -> dict:
    def row(name: str, method: str, of: Environment = env) -> dict:
        entry = of.stats.get(name, method)
        return {"requests": entry.num_requests, "failures": entry.num_failures,
                "p50_ms": entry.get_response_time_percentile(0.5), "p99_ms": entry.get_response_time_percentile(0.99),
                "max_ms": round(entry.max_response_time or 0, 1)}

    measured = row(MEASURED, "POST")
    final = sum(state in FINAL for state in states.values())
    return {"command": command_line(), "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "seconds": args.seconds, "strangers": args.strangers, "flooders": args.flooders,
            "abusers": args.abusers, "tenant_rate_per_s": args.tenant_rate, "rate_limit": args.rate_limit,
            "max_unfinished": args.max_unfinished, "abuser_iters": args.abuser_iters,
            "load_average_before": load[0], "load_average_after": load[1], "cpus": os.cpu_count(),
            "baseline_seconds": args.baseline_seconds, "tenant_submit_alone": row(MEASURED, "POST", baseline),
            "tenant_submit": measured, "stranger_slow_upload": row("stranger slow upload", "POST"),
            "stranger_readyz": row("stranger /readyz", "GET"), "abuser_submit": row("abuser submit", "POST"),
            "refusals": {f"{e.name}: {e.error}"[:160]: e.occurrences for e in env.stats.errors.values()},
            "tenant_jobs_accepted": len(states), "tenant_jobs_final": final,
            "tenant_job_states": {s: list(states.values()).count(s) for s in sorted(set(states.values()))},
            "target_p99_ms": args.target_p99_ms,
            "meets_target": measured["p99_ms"] <= args.target_p99_ms and final == len(states) > 0}


def markdown(result: dict) -> list[str]:
    t = result
    lines = ["# Hostile load: one tenant's abuse does not reach another", "",
             f"`{t['command']}`", "",
             f"{t['date']}, {t['cpus']} CPUs shared with other work: load average {t['load_average_before']} before, "
             f"{t['load_average_after']} after. One API process, one solo CPU worker (tiny VAE), Redis on loopback; "
             f"locust in the same machine.", "",
             f"For {t['seconds']:g} s: {t['strangers']} unauthenticated slow uploads, {t['flooders']} /readyz "
             f"flooders, {t['abusers']} abusive-tenant clients (rate limit {t['rate_limit']}, "
             f"{t['max_unfinished']} unfinished jobs, {t['abuser_iters']}-iteration jobs), and the measured tenant "
             f"at {t['tenant_rate_per_s']:g} submissions/s.", "",
             "| traffic | requests | failures | p50 | p99 | max |", "|---|---|---|---|---|---|"]
    for name, key in ((f"baseline: the measured tenant alone ({t['baseline_seconds']:g} s before)", "tenant_submit_alone"),
                      ("measured tenant: POST /v1/purify", "tenant_submit"),
                      ("abusive tenant: POST /v1/purify (429 counted as answered)", "abuser_submit"),
                      ("strangers: GET /readyz", "stranger_readyz"),
                      ("strangers: slow chunked uploads, no key", "stranger_slow_upload")):
        r = t[key]
        lines.append(f"| {name} | {r['requests']} | {r['failures']} | {r['p50_ms']} ms | {r['p99_ms']} ms | "
                     f"{r['max_ms']} ms |")
    lines += ["", "Refusals and failures by kind: " + (", ".join(f"{k} ({v})" for k, v in t["refusals"].items()) or "none") + ".",
              "", f"The measured tenant's jobs: {t['tenant_jobs_accepted']} accepted, {t['tenant_jobs_final']} reached "
              f"a final state ({t['tenant_job_states']}).", "",
              f"Target (submit p99 <= {t['target_p99_ms']:g} ms and every accepted job final): "
              f"**{'met' if t['meets_target'] else 'not met'}**."]
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--baseline-seconds", type=float, default=20.0, help="the measured tenant alone, first")
    p.add_argument("--strangers", type=int, default=50)
    p.add_argument("--flooders", type=int, default=20)
    p.add_argument("--abusers", type=int, default=2)
    p.add_argument("--tenant-rate", type=float, default=1.0, help="the measured tenant's submissions per second")
    p.add_argument("--rate-limit", default="600/minute", help="IMPRESS_RATE_LIMIT of both keys")
    p.add_argument("--max-unfinished", type=int, default=8, help="IMPRESS_MAX_UNFINISHED_JOBS_PER_KEY")
    p.add_argument("--abuser-iters", type=int, default=5, help="IMPRESS_MAX_ITERATIONS, what the abuser asks for")
    p.add_argument("--final-timeout", type=float, default=600.0, help="seconds to wait for the tenant's jobs")
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/12")
    p.add_argument("--target-p99-ms", type=float, default=100.0)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args()
    tag = f"impress-hostile-{uuid.uuid4().hex[:8]}"
    procs, base_url = start_service(args.redis_url, tag, args)
    try:
        baseline = run_load(base_url, args, args.baseline_seconds, hostile=False)
        before = os.getloadavg()
        env = run_load(base_url, args, args.seconds, hostile=True)
        after = os.getloadavg()
        states = wait_final(base_url, list(Tenant.accepted), args.final_timeout)
    finally:
        stop(*procs, timeout_s=30)
        store = redis.Redis.from_url(args.redis_url)
        for key in store.scan_iter(f"*{tag}*"):
            store.delete(key)
    result = summary(baseline, env, states, args, (tuple(round(x, 2) for x in before), tuple(round(x, 2) for x in after)))
    print(json.dumps(result))
    (args.out / "hostile-load.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "hostile-load.md").write_text("\n".join(markdown(result)) + "\n")


if __name__ == "__main__":
    main()
