"""`impress api`, `impress worker`, `impress serve` (all of it on one machine) and `impress openapi`."""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

from impress.api_keys import api_key_id, new_api_key
from impress.queue import worker_queues
from impress.settings import get_settings
from impress.webhooks import key_webhook_secret, new_webhook_secret

from .common import CommandFailed


def add_parsers(sub) -> None:
    api = sub.add_parser("api", help="run the HTTP API (uvicorn)")
    api.add_argument("--host")
    api.add_argument("--port", type=int)
    api.set_defaults(func=run_api)

    wrk = sub.add_parser("worker", help="run a Celery worker")
    wrk.add_argument("--queues", help="comma-separated queues: IMPRESS_QUEUE for a GPU worker, "
                     "IMPRESS_DETECT_QUEUE for a triage worker (default: both)")
    wrk.add_argument("--concurrency", type=int, default=1, help="processes: one per GPU")
    wrk.add_argument("--pool", default="prefork", choices=("prefork", "solo"))
    wrk.add_argument("--hostname", help="worker node name, unique per machine (Celery's -n, e.g. gpu@%%h)")
    wrk.set_defaults(func=run_worker)

    srv = sub.add_parser("serve", help="API + a GPU worker + a triage worker (+ Redis) on this machine")
    srv.add_argument("--host", default="127.0.0.1")
    srv.add_argument("--port", type=int, default=8000)
    srv.add_argument("--redis-port", type=int, default=6390)
    srv.set_defaults(func=run_serve)

    oa = sub.add_parser("openapi", help="write (or --check) the OpenAPI document")
    oa.add_argument("--path", default="openapi/openapi.json")
    oa.add_argument("--check", action="store_true")
    oa.set_defaults(func=run_openapi)


def run_api(args: argparse.Namespace) -> int:
    import uvicorn

    settings = get_settings()
    # log_config=None: uvicorn's lines go through the process's logging (impress.logs), ids included.
    uvicorn.run("app.asgi:app", host=args.host or settings.api_host, port=args.port or settings.api_port,
                log_level="info", log_config=None)
    return 0


def worker_argv(args: argparse.Namespace) -> list[str]:
    # prefork with one process per GPU: time limits work (solo has none) and each child has its
    # own CUDA context and model cache, created after the fork.
    settings = get_settings()
    queues = args.queues or ",".join(worker_queues(settings))
    # A webhook worker beside a job worker on one host needs a node name of its own: RabbitMQ gives
    # each name's control queue to one connection only.
    hostname = args.hostname or ("webhooks@%h" if queues == settings.webhook_queue else None)
    return ["-A", "worker.tasks", "worker", "--loglevel", "INFO", "-Q", queues, "--concurrency", str(args.concurrency),
            "--pool", args.pool, *(["--hostname", hostname] if hostname else [])]


def run_worker(args: argparse.Namespace) -> int:
    from worker.tasks import celery_app

    celery_app.worker_main(worker_argv(args))
    return 0


def start_redis(port: int) -> subprocess.Popen:
    server = shutil.which("redis-server")
    if server is None:
        raise CommandFailed("no IMPRESS_REDIS_URL set and no redis-server binary found. Install Redis "
                            "(apt-get install redis-server, or docker run -p 6379:6379 redis:7) or set "
                            "IMPRESS_REDIS_URL=redis://HOST:6379/0")
    proc = start_child([server, "--port", str(port), "--save", "", "--appendonly", "no"], dict(os.environ),
                       stdout=subprocess.DEVNULL)
    print(f"started redis-server on port {port}")
    return proc


def start_child(argv: list[str], env: dict[str, str], **kwargs) -> subprocess.Popen:
    # Its own process group: a terminal's Ctrl-C reaches only `serve`, which stops the children in
    # order (Redis last), and a worker's pool processes can be stopped with it as one group.
    return subprocess.Popen(argv, env=env, start_new_session=True, **kwargs)


def run_serve(args: argparse.Namespace) -> int:
    """API and a worker per role on this machine: GPU work, triage (so a detect never waits behind a
    purification) and webhook deliveries, with a Redis started here when none is configured and an API
    key made up when none is (printed). Ctrl-C or SIGTERM stops everything it started."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):  # before any child exists, so none can be left behind
        signal.signal(sig, lambda *_: stop.set())
    env = dict(os.environ)
    settings = get_settings()
    key = None
    if not env.get("IMPRESS_API_KEYS") and env.get("IMPRESS_AUTH") != "disabled":
        env["IMPRESS_API_KEYS"] = key = new_api_key()
        print(f"API key for this run (send 'Authorization: Bearer <key>'): {key}")
    if not env.get("IMPRESS_WEBHOOK_SECRET"):
        env["IMPRESS_WEBHOOK_SECRET"] = new_webhook_secret()
        if key or not env.get("IMPRESS_API_KEYS"):
            own = key_webhook_secret(settings.model_copy(update={"webhook_secret": env["IMPRESS_WEBHOOK_SECRET"]}),
                                     api_key_id(key) if key else "")
            print(f"webhook signing secret of {'this key' if key else 'this service'} (verify with "
                  f"impress.client.verify_webhook): {own}")
        print("each API key's webhook signing secret: GET /v1/webhook-secret with that key")
    redis_server: list[subprocess.Popen] = []
    services: list[subprocess.Popen] = []
    try:
        if "IMPRESS_REDIS_URL" not in env:
            redis_server.append(start_redis(args.redis_port))
            env["IMPRESS_REDIS_URL"] = f"redis://127.0.0.1:{args.redis_port}/0"
        cli = [sys.executable, "-m", "cli"]
        # Webhook deliveries (HTTP only) get a light solo worker, never behind a purification.
        for role, queue, pool in (("gpu", settings.queue, "prefork"), ("triage", settings.detect_queue, "prefork"),
                                  ("webhooks", settings.webhook_queue, "solo")):
            services.append(start_child(cli + ["worker", "--queues", queue, "--hostname", f"{role}@%h", "--pool", pool],
                                        env))
        services.append(start_child(cli + ["api", "--host", args.host, "--port", str(args.port)], env))
        print(f"Console on http://{args.host}:{args.port}/console  API docs on http://{args.host}:{args.port}/docs  "
              "(Ctrl-C stops everything)", flush=True)
        while not stop.wait(0.5) and all(p.poll() is None for p in redis_server + services):
            pass
    finally:
        stop_all(services)      # the API and the workers first,
        stop_all(redis_server)  # then the Redis they use
    return 0


def stop_all(children: list[subprocess.Popen], timeout_s: float = 15) -> None:
    """Stop the children; kill the process groups of those that do not stop in time (a worker
    finishing a long job), and whatever is left in the groups of those that did (pool processes)."""
    for proc in children:
        if proc.poll() is None:
            proc.terminate()
    for proc in children:
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            print(f"pid {proc.pid} did not stop in {timeout_s:.0f}s: killed", file=sys.stderr)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # whatever is left of its group (pool children)
        proc.wait()


def run_openapi(args: argparse.Namespace) -> int:
    from app.main import create_app

    text = json.dumps(create_app(get_settings()).openapi(), indent=2, sort_keys=True) + "\n"
    if args.check:
        current = Path(args.path).read_text() if Path(args.path).exists() else ""
        if current != text:
            print(f"{args.path} differs from the app's OpenAPI: run `impress openapi`", file=sys.stderr)
            return 1
        return 0
    Path(args.path).write_text(text)
    return 0
