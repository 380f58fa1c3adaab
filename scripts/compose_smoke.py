"""The HTTP and failure half of scripts/compose_smoke.sh, against a running compose project.

Through the API only (httpx; the project has no HTTP client module yet): purify a PNG (same size
back), detect, a small evaluation; then kill the worker container that runs a job (the job finishes
on the other worker, attempt 2) and restart the Redis container (finished jobs and their results
are still there, from its append-only file). Prints one JSON line: what was measured, merged with
the build figures the shell script passes in.
"""
from __future__ import annotations

import argparse
import io
import json
import subprocess
import time

import httpx
import numpy as np
from PIL import Image

FINISHED = ("succeeded", "failed", "canceled")


def png(width: int, height: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width] / max(width, height)
    rgb = np.stack([np.sin(3 * xx + rng.uniform(0, 3)), np.cos(4 * yy + rng.uniform(0, 3)), xx * yy], -1)
    rgb = (rgb - rgb.min()) / (np.ptp(rgb) + 1e-9) * 255
    buf = io.BytesIO()
    Image.fromarray(rgb.astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def wait(predicate, timeout_s: float, what: str, interval_s: float = 0.2):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except httpx.HTTPError:
            value = None
        if value:
            return value
        time.sleep(interval_s)
    raise SystemExit(f"compose smoke: timed out after {timeout_s:.0f}s waiting for {what}")


def finished(api: httpx.Client, url: str, timeout_s: float = 600) -> dict:
    job = wait(lambda: (lambda j: j if j["state"] in FINISHED else None)(api.get(url).json()), timeout_s, f"job {url}")
    if job["state"] != "succeeded":
        raise SystemExit(f"compose smoke: job {job['id']} {job['state']}: {job.get('error')}")
    return job


def purify(api: httpx.Client, iters: int, width: int = 48, height: int = 40) -> str:
    r = api.post("/v1/purify", files=[("images", ("photo.png", png(width, height, iters), "image/png"))],
                 data={"preset": "photoguard", "iters": str(iters), "early_stop": "false", "seed": "1"})
    r.raise_for_status()
    return r.headers["location"]


def round_trips(api: httpx.Client) -> tuple[dict, dict]:
    """Seconds from submission to the finished answer, per kind; and the purify job itself."""
    seconds = {}
    start = time.monotonic()
    job = finished(api, purify(api, iters=20))
    out = Image.open(io.BytesIO(api.get(job["results"][0]["url"]).content))
    assert out.size == (48, 40), f"purified image is {out.size}, sent 48x40"
    seconds["purify"] = time.monotonic() - start

    start = time.monotonic()
    r = api.post("/v1/detect", files=[("images", ("a.png", png(32, 32, 1), "image/png"))])
    r.raise_for_status()
    detect = r.json() if r.status_code == 200 else finished(api, r.headers["location"])
    assert detect["state"] == "succeeded" and detect["metrics"]["images"][0]["consistency_error"] > 0, detect
    seconds["detect"] = time.monotonic() - start

    start = time.monotonic()
    files = [("clean", (f"c{i}.png", png(32, 32, i), "image/png")) for i in range(2)]
    r = api.post("/v1/evaluate", files=files, data={"protections": ["photoguard-8"], "purifiers": ["jpeg-75"],
                                                    "size": "32", "attack_steps": "2"})
    r.raise_for_status()
    evaluation = finished(api, r.headers["location"])
    assert len(evaluation["metrics"]["cells"]) == 2, evaluation["metrics"]
    seconds["evaluate"] = time.monotonic() - start
    return {k: round(v, 2) for k, v in seconds.items()}, job


def containers(project: str, service: str) -> list[str]:
    out = subprocess.run(["docker", "ps", "-q", "--filter", f"label=com.docker.compose.project={project}",
                          "--filter", f"label=com.docker.compose.service={service}"],
                         capture_output=True, text=True, check=True).stdout
    return out.split()


def running_on(project: str, job_id: str) -> str | None:
    """The worker container whose log says it started the job."""
    for container in containers(project, "worker-cpu"):
        logs = subprocess.run(["docker", "logs", container], capture_output=True, text=True)
        if any(f"job {job_id} (" in line and " started" in line for line in (logs.stdout + logs.stderr).splitlines()):
            return container
    return None


def worker_kill(api: httpx.Client, project: str, seconds_per_iter: float) -> dict:
    """Kill the container running a job: it must finish on the other worker, attempt 2."""
    iters = max(200, int(20 / max(seconds_per_iter, 1e-3)))  # ~20 s of work: killed well before the end
    url = purify(api, iters)
    job_id = url.rsplit("/", 1)[1]
    wait(lambda: api.get(url).json()["progress"]["step"] >= 10, 120, "the job running")
    victim = wait(lambda: running_on(project, job_id), 30, "the worker running the job")
    killed = time.monotonic()  # RabbitMQ redelivers while `docker kill` is still returning
    subprocess.run(["docker", "kill", victim], check=True, capture_output=True)
    wait(lambda: (lambda j: j["attempts"] == 2 and j["state"] == "running")(api.get(url).json()), 120,
         "the job running again on the other worker")
    rerun = time.monotonic() - killed
    job = finished(api, url)
    assert job["attempts"] == 2 and job["results"][0]["iterations"] == iters, job
    assert running_on(project, job_id) != victim
    return {"iters": iters, "redelivered_s": round(rerun, 2), "finished_s": round(time.monotonic() - killed, 2),
            "attempts": job["attempts"]}


def redis_restart(api: httpx.Client, project: str, done: dict) -> dict:
    """Restart the Redis container: the finished job and its result are read back afterwards."""
    before = api.get(done["results"][0]["url"]).content
    time.sleep(1.5)  # appendfsync everysec: the last second is on disk
    restarted = time.monotonic()
    subprocess.run(["docker", "restart", *containers(project, "redis")], check=True, capture_output=True)
    wait(lambda: api.get("/readyz").status_code == 200, 120, "the API ready again")
    ready = time.monotonic() - restarted
    job = api.get(f"/v1/jobs/{done['id']}").json()
    assert job["state"] == "succeeded" and api.get(done["results"][0]["url"]).content == before, job
    again = finished(api, purify(api, iters=5))  # and new work flows again
    return {"ready_s": round(ready, 2), "new_job_s": round(time.monotonic() - restarted, 2),
            "kept_job": job["id"], "new_job_state": again["state"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--api", required=True)
    parser.add_argument("--project", required=True)
    parser.add_argument("--measured", default="{}", help="JSON of the shell script's figures, merged into the output")
    args = parser.parse_args()
    started = time.monotonic()
    with httpx.Client(base_url=args.api, timeout=30) as api:
        wait(lambda: len(api.get("/readyz").json().get("workers", [])) >= 2, 300, "two workers ready", 1)
        ready_s = time.monotonic() - started
        roundtrip, done = round_trips(api)
        kill = worker_kill(api, args.project, done["seconds"] / 20)
        restart = redis_restart(api, args.project, done)
    print(json.dumps({**json.loads(args.measured), "ready_s": round(ready_s, 2), "roundtrip_s": roundtrip,
                      "worker_kill": kill, "redis_restart": restart, "ok": True}))


if __name__ == "__main__":
    main()
