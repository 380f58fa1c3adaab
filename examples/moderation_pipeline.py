"""A moderation pipeline on the IMPRESS service, written with impress.client:

1. triage every image of a folder with `detect` (in batches the service answers inline),
2. purify the images flagged 'protected' (one job each, with an Idempotency-Key, so a rerun of this
   script after a crash makes no duplicate jobs),
3. learn that each purification finished from its `completed` webhook, received here on a local
   receiver that checks the Standard Webhooks signature (polling is the fallback),
4. collect the purified PNGs and a summary (summary.json) in the output folder.

Start a service that may call this machine back, then run the pipeline with the key `impress serve`
prints (the key's webhook secret is asked of the service, or give the one `impress serve` printed):

    IMPRESS_WEBHOOK_ALLOWED_HOSTS=127.0.0.1 impress serve
    python examples/moderation_pipeline.py photos/ --api-key KEY --threshold 0.02
"""
from __future__ import annotations

import argparse
import hashlib
import json
import queue
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Optional

from impress.client import ImpressClient, verify_webhook
from impress.contract import DetectParams, JobState, PurifyOverrides
from impress.images import IMAGE_SUFFIXES
from impress.records import Verdict, WebhookEvent
from impress.views import JobView, WebhookPayload


class WebhookInbox:
    """A local HTTP receiver: every POST whose signature verifies is queued; others get 401."""

    def __init__(self, secret: str, host: str = "127.0.0.1", port: int = 0):
        self.payloads: "queue.Queue[WebhookPayload]" = queue.Queue()
        inbox = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                try:
                    inbox.payloads.put(verify_webhook(body, dict(self.headers.items()), secret))
                    self.send_response(204)
                except Exception:   # a bad signature, a stale timestamp, not our payload
                    self.send_response(401)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.url = f"http://{host}:{self.server.server_address[1]}/impress"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def completed(self, job_ids: set[str], timeout_s: float) -> dict[str, JobView]:
        """The jobs among `job_ids` whose completed webhook arrives within `timeout_s` each."""
        seen: dict[str, JobView] = {}
        while set(seen) != job_ids:
            try:
                payload = self.payloads.get(timeout=timeout_s)
            except queue.Empty:
                break
            if payload.type == "job.completed" and payload.data.id in job_ids:
                seen[payload.data.id] = payload.data
        return seen


def triage(client: ImpressClient, paths: list[Path], params: DetectParams, batch: int) -> list[Path]:
    """The images detect flags 'protected'."""
    flagged = []
    for start in range(0, len(paths), batch):
        chunk = paths[start:start + batch]
        done = client.wait(client.detect(chunk, params=params))
        if done.state != JobState.succeeded:
            raise SystemExit(f"detect failed: {done.error}")
        flagged += [path for path, d in zip(chunk, done.detections) if d.verdict == Verdict.protected]
    return flagged


def purify_all(client: ImpressClient, paths: list[Path], params: PurifyOverrides, inbox: WebhookInbox,
               timeout_s: float) -> list[JobView]:
    jobs = {}
    for path in paths:
        key = f"moderation/{hashlib.sha256(path.read_bytes()).hexdigest()[:32]}/{params.model_dump_json()}"
        accepted = client.purify([path], params=params, idempotency_key=key[:255],
                                 webhook=inbox.url, webhook_events=[WebhookEvent.completed])
        jobs[accepted.id] = path
    by_webhook = inbox.completed(set(jobs), timeout_s)
    print(f"{len(by_webhook)} of {len(jobs)} purifications reported by webhook")
    return [by_webhook.get(job_id) or client.wait(job_id) for job_id in jobs]


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--api-key")
    parser.add_argument("--webhook-secret", help="this API key's webhook secret (default: asked of the service, "
                                                 "GET /v1/webhook-secret)")
    parser.add_argument("--threshold", type=float, help="detect threshold (default: the service's calibrated one)")
    parser.add_argument("--batch", type=int, default=2, help="images per detect request")
    parser.add_argument("--iters", type=int, help="purification steps (default: the fast schedule's)")
    parser.add_argument("--out", type=Path, default=Path("moderation-out"))
    parser.add_argument("--webhook-timeout", type=float, default=600.0)
    args = parser.parse_args(argv)

    paths = sorted(p for p in args.folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    with ImpressClient(args.url, api_key=args.api_key) as client:
        inbox = WebhookInbox(args.webhook_secret or client.webhook_secret())
        flagged = triage(client, paths, DetectParams(threshold=args.threshold), args.batch)
        print(f"{len(flagged)} of {len(paths)} images flagged 'protected'")
        params = PurifyOverrides(schedule="fast", iters=args.iters)
        jobs = purify_all(client, flagged, params, inbox, args.webhook_timeout)
        summary = []
        for path, job in zip(flagged, jobs):
            written = client.download_results(job, args.out) if job.state == JobState.succeeded else []
            summary.append({"image": path.name, "job": job.id, "state": job.state.value,
                            "error": job.error.model_dump(mode="json") if job.error else None,
                            "purified": [p.name for p in written], "model": job.model.model_dump(mode="json") if job.model else None})
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"results and summary.json in {args.out}")
    return 0 if all(item["state"] == "succeeded" for item in summary) else 1


if __name__ == "__main__":
    raise SystemExit(main())
