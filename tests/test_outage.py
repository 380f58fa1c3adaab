"""Redis goes away and comes back under traffic: the API answers 503 with Retry-After meanwhile (never
a 500), and the API and the worker resume by themselves. Real processes, and a redis-server of the
test's own (stopped and restarted on the same port; it keeps no data, as a crashed one would not)."""
from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections import Counter

import httpx
import pytest
import redis

from tests.conftest import service_env, stop
from tests.support import answers, free_port, photo, png_bytes, poll, wait_for

pytestmark = pytest.mark.e2e
PNG = ("a.png", png_bytes(photo(32, 32)), "image/png")


def start_redis(port: int, folder) -> subprocess.Popen:
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--save", "", "--appendonly", "no",
                             "--dir", str(folder)], stdout=subprocess.DEVNULL)
    client = redis.Redis(port=port)
    wait_for(lambda: _pings(client), 20, f"redis-server on port {port}")
    return proc


def _pings(client: redis.Redis) -> bool:
    try:
        return client.ping()
    except redis.ConnectionError:
        return False


def traffic(client: httpx.Client, job_url: str) -> list[httpx.Response]:
    """One of each kind of request the service answers from Redis."""
    return [client.get(job_url), client.get(f"{job_url}/results/0"), client.delete(job_url),
            client.post("/v1/purify", files=[("images", PNG)], data={"iters": "2"}),
            client.post("/v1/detect", files=[("images", PNG)]),
            client.post("/v1/evaluate", files=[("clean", PNG)], data={"purifiers": "jpeg"})]


def submit_until_done(client: httpx.Client, timeout_s: float) -> tuple[float, float]:
    """Seconds until a purification is accepted, and until one has succeeded, from now."""
    t0 = time.monotonic()
    accepted = wait_for(lambda: (lambda r: r if r.status_code == 202 else None)(
        client.post("/v1/purify", files=[("images", PNG)], data={"iters": "2", "early_stop": "false"})),
        timeout_s, "a purification accepted", 0.2)
    t_accepted = time.monotonic() - t0
    wait_for(lambda: client.get(accepted.headers["location"]).json()["state"] == "succeeded", timeout_s,
             "the purification succeeding", 0.2)
    return t_accepted, time.monotonic() - t0


def test_redis_outage_is_503_and_service_recovers(small_vae_dir, tmp_path):
    port = free_port()
    tag = f"impress-outage-{uuid.uuid4().hex[:8]}"
    env = service_env(tag, small_vae_dir, IMPRESS_REDIS_URL=f"redis://127.0.0.1:{port}/0",
                      IMPRESS_DETECT_SYNC_TIMEOUT_S="20")
    server = start_redis(port, tmp_path)
    api_port = free_port()
    worker = subprocess.Popen([sys.executable, "-m", "cli", "worker", "--pool", "solo"], env=env,
                              stdout=open(tmp_path / "worker.log", "w"), stderr=subprocess.STDOUT)
    api = subprocess.Popen([sys.executable, "-m", "cli", "api", "--port", str(api_port)], env=env,
                           stdout=open(tmp_path / "api.log", "w"), stderr=subprocess.STDOUT)
    client = httpx.Client(base_url=f"http://127.0.0.1:{api_port}", timeout=30)
    try:
        wait_for(lambda: answers(client, "/readyz"), 60, "API ready with a worker alive", 0.5)
        before = client.post("/v1/detect", files=[("images", PNG)])
        assert before.status_code in (200, 202), before.text  # 202 when the first model load outlasts the wait
        job_url = f"/v1/jobs/{before.json()['id']}"
        assert poll(client, job_url, lambda j: j["state"] in ("succeeded", "failed"))["state"] == "succeeded"

        stop(server)
        seen: Counter = Counter()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            for r in traffic(client, job_url):
                seen[r.status_code] += 1
                assert r.status_code == 503, (r.request.method, r.request.url, r.status_code, r.text)
                assert r.json()["error"]["code"] == "service_unavailable" and int(r.headers["retry-after"]) > 0
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["redis"] is False

        server = start_redis(port, tmp_path)
        t_accepted, t_succeeded = submit_until_done(client, 180)
        assert worker.poll() is None and api.poll() is None
        print(f"\nRedis outage: statuses seen while down {dict(seen)} (every one a 503 with Retry-After); after Redis returned, "
              f"a purification was accepted in {t_accepted:.2f} s and had succeeded in {t_succeeded:.2f} s")
    finally:
        client.close()
        stop(api, worker)
        stop(server)
        print((tmp_path / "worker.log").read_text()[-3000:])
