"""The HTTP and failure half of scripts/compose_smoke.sh, against a running compose project.

Through the API only, with the project's client (impress.client): purify a PNG (same size back),
detect, a small evaluation; then kill the worker container that runs a job (the job finishes
on the other worker, attempt 2) and restart the Redis container (finished jobs and their results
are still there, from its append-only file). Prints one JSON line: what was measured, merged with
the build figures the shell script passes in.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import subprocess
import sys
import time

import httpx
from PIL import Image

from impress.client import ImpressClient
from impress.contract import EvaluateParams, JobState, PurifyOverrides
from impress.views import JobView
from tests.support import photo, png_bytes  # the tests' synthetic photos


@contextlib.contextmanager
def phase(name: str):
    """Names the phase on stderr, and the phase that failed (the shell script then prints the logs)."""
    print(f"compose smoke: phase: {name}", file=sys.stderr)
    try:
        yield
    except BaseException as exc:
        print(f"compose smoke: phase '{name}' failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        raise


def png(width: int, height: int, seed: int) -> bytes:
    return png_bytes(photo(width, height, seed))


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


def succeeded(client: ImpressClient, job) -> JobView:
    view = client.wait(job, timeout_s=600)
    if view.state is not JobState.succeeded:
        raise SystemExit(f"compose smoke: job {view.id} {view.state.value}: {view.error}")
    return view


def purify(client: ImpressClient, iters: int, width: int = 48, height: int = 40):
    return client.purify([("photo.png", png(width, height, iters))],
                         params=PurifyOverrides(preset="photoguard", iters=iters, early_stop=False, seed=1))


def round_trips(client: ImpressClient) -> tuple[dict, JobView]:
    """Seconds from submission to the finished answer, per kind; and the purify job itself."""
    seconds = {}
    start = time.monotonic()
    job = succeeded(client, purify(client, iters=20))
    out = Image.open(io.BytesIO(client.result(job, 0)))
    assert out.size == (48, 40), f"purified image is {out.size}, sent 48x40"
    seconds["purify"] = time.monotonic() - start

    start = time.monotonic()
    detect = succeeded(client, client.detect([("a.png", png(32, 32, 1))]))
    assert detect.detections and detect.detections[0].score > 0, detect
    seconds["detect"] = time.monotonic() - start

    start = time.monotonic()
    evaluation = succeeded(client, client.evaluate([(f"c{i}.png", png(32, 32, i)) for i in range(2)], params=EvaluateParams(
        protections=["photoguard-8"], purifiers=["jpeg-75"], size=32, attack_steps=2)))
    assert len(evaluation.metrics.cells) == 2, evaluation.metrics
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


def worker_kill(client: ImpressClient, project: str, seconds_per_iter: float) -> dict:
    """Kill the container running a job: it must finish on the other worker, attempt 2."""
    iters = max(200, int(20 / max(seconds_per_iter, 1e-3)))  # ~20 s of work: killed well before the end
    job_id = purify(client, iters).id
    wait(lambda: client.job(job_id).progress.step >= 10, 120, "the job running")
    victim = wait(lambda: running_on(project, job_id), 60, "the worker running the job", 0.5)
    killed = time.monotonic()  # RabbitMQ redelivers while `docker kill` is still returning
    subprocess.run(["docker", "kill", victim], check=True, capture_output=True)
    wait(lambda: (lambda j: j.attempts == 2 and j.state is JobState.running)(client.job(job_id)), 120,
         "the job running again on the other worker")
    rerun = time.monotonic() - killed
    job = succeeded(client, job_id)
    assert job.attempts == 2 and job.results[0].iterations == iters, job
    return {"iters": iters, "redelivered_s": round(rerun, 2), "finished_s": round(time.monotonic() - killed, 2),
            "attempts": job.attempts}


def redis_restart(client: ImpressClient, http: httpx.Client, project: str, done: JobView) -> dict:
    """Restart the Redis container: the finished job and its result are read back afterwards."""
    before = client.result(done, 0)
    time.sleep(1.5)  # appendfsync everysec: the last second is on disk
    restarted = time.monotonic()
    subprocess.run(["docker", "restart", *containers(project, "redis")], check=True, capture_output=True)
    wait(lambda: http.get("/readyz").status_code == 200, 120, "the API ready again")
    ready = time.monotonic() - restarted
    job = client.job(done.id)
    assert job.state is JobState.succeeded and client.result(done, 0) == before, job
    again = succeeded(client, purify(client, iters=5))  # and new work flows again
    return {"ready_s": round(ready, 2), "new_job_s": round(time.monotonic() - restarted, 2),
            "kept_job": job.id, "new_job_state": again.state.value}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--api", required=True)
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--project", required=True)
    parser.add_argument("--measured", default="{}", help="JSON of the shell script's figures, merged into the output")
    args = parser.parse_args()
    started = time.monotonic()
    with ImpressClient(args.api, api_key=args.api_key, timeout_s=30) as client, \
            httpx.Client(base_url=args.api, timeout=30) as http:
        with phase("ready"):   # a cold first start (images' first run, RabbitMQ's first boot) is the slow one
            wait(lambda: sum(not report["missing"] for report in http.get("/readyz").json()["models"].values()) >= 2,
                 600, "two job workers ready with their models", 1)
        ready_s = time.monotonic() - started
        with phase("round trips"):
            roundtrip, done = round_trips(client)
        with phase("worker kill"):
            kill = worker_kill(client, args.project, done.seconds / 20)
        with phase("redis restart"):
            restart = redis_restart(client, http, args.project, done)
    print(json.dumps({**json.loads(args.measured), "ready_s": round(ready_s, 2), "roundtrip_s": roundtrip,
                      "worker_kill": kill, "redis_restart": restart, "ok": True}))


if __name__ == "__main__":
    main()
