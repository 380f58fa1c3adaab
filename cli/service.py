"""`impress api`, `impress worker`, `impress serve` (all of it on one machine) and `impress openapi`."""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from impress.keys import new_api_key
from impress.settings import Settings
from impress.webhooks import new_webhook_secret

from .common import CommandFailed


def add_parsers(sub) -> None:
    api = sub.add_parser("api", help="run the HTTP API (uvicorn)")
    api.add_argument("--host")
    api.add_argument("--port", type=int)
    api.set_defaults(func=run_api)

    wrk = sub.add_parser("worker", help="run a Celery worker")
    wrk.add_argument("--queues", help="comma-separated queues (default: the queue setting)")
    wrk.add_argument("--concurrency", type=int, default=1, help="processes: one per GPU")
    wrk.add_argument("--pool", default="prefork", choices=("prefork", "solo"))
    wrk.set_defaults(func=run_worker)

    srv = sub.add_parser("serve", help="API + worker (+ Redis) on this machine, for a first try")
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

    settings = Settings()
    uvicorn.run("app.asgi:app", host=args.host or settings.api_host, port=args.port or settings.api_port,
                log_level="info")
    return 0


def worker_argv(args: argparse.Namespace) -> list[str]:
    # prefork with one process per GPU: time limits work (solo has none) and each child has its
    # own CUDA context and model cache, created after the fork.
    return ["-A", "worker.tasks", "worker", "--loglevel", "INFO", "-Q", args.queues or Settings().queue,
            "--concurrency", str(args.concurrency), "--pool", args.pool]


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
    proc = subprocess.Popen([server, "--port", str(port), "--save", "", "--appendonly", "no"],
                            stdout=subprocess.DEVNULL)
    print(f"started redis-server on port {port}")
    return proc


def run_serve(args: argparse.Namespace) -> int:
    """API + one worker on this machine, with a Redis started here when none is configured and an API
    key made up when none is (printed). Stopping it (Ctrl-C or SIGTERM) stops everything it started."""
    env = dict(os.environ)
    children: list[subprocess.Popen] = []
    if not env.get("IMPRESS_API_KEYS") and env.get("IMPRESS_AUTH") != "disabled":
        env["IMPRESS_API_KEYS"] = key = new_api_key()
        print(f"API key for this run (send 'Authorization: Bearer <key>'): {key}")
    if not env.get("IMPRESS_WEBHOOK_SECRET"):
        env["IMPRESS_WEBHOOK_SECRET"] = secret = new_webhook_secret()
        print(f"webhook signing secret for this run (verify with impress.client.verify_webhook): {secret}")
    if "IMPRESS_REDIS_URL" not in env:
        children.append(start_redis(args.redis_port))
        env["IMPRESS_REDIS_URL"] = f"redis://127.0.0.1:{args.redis_port}/0"
    cli = [sys.executable, "-m", "cli"]
    children += [subprocess.Popen(cli + ["worker", "--concurrency", "1"], env=env),
                 # Webhook deliveries (HTTP only) on their own light worker, never behind a purification.
                 subprocess.Popen(cli + ["worker", "--pool", "solo", "--queues", Settings().webhook_queue], env=env),
                 subprocess.Popen(cli + ["api", "--host", args.host, "--port", str(args.port)], env=env)]
    print(f"Console on http://{args.host}:{args.port}/console  API docs on http://{args.host}:{args.port}/docs  "
          "(Ctrl-C stops everything)", flush=True)
    # SIGTERM ends this process the way Ctrl-C does, so the finally below always runs.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        while all(p.poll() is None for p in children):
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        stop_all(children)
    return 0


def stop_all(children: list[subprocess.Popen]) -> None:
    """Stop the API and workers first, then the Redis they use; kill what does not stop in time."""
    for proc in reversed(children):
        if proc.poll() is None:
            proc.terminate()
    for proc in reversed(children):
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def run_openapi(args: argparse.Namespace) -> int:
    from app.main import create_app

    text = json.dumps(create_app(Settings()).openapi(), indent=2, sort_keys=True) + "\n"
    if args.check:
        current = Path(args.path).read_text() if Path(args.path).exists() else ""
        if current != text:
            print(f"{args.path} differs from the app's OpenAPI: run `impress openapi`", file=sys.stderr)
            return 1
        return 0
    Path(args.path).write_text(text)
    return 0
