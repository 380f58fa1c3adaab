"""Request and job ids on every log line: X-Request-ID in and out, kept on the job record, set while
a worker runs the job; JSON lines when IMPRESS_LOG_FORMAT=json."""
from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
import uuid

import fakeredis
import httpx
import pytest

from impress.contract import DetectParams, JobKind
from impress.logs import configure_logging
from impress.records import InputImage
from impress.settings import Settings
from impress.store import JobStore
from tests.conftest import service_env, stop
from tests.support import TEST_REDIS_URL, answers, delete_prefix, free_port, photo, png_bytes, wait_for

PNG = ("a.png", png_bytes(photo()), "image/png")


@pytest.fixture
def json_logs():
    """This process's log lines as configured for IMPRESS_LOG_FORMAT=json, read back parsed with the
    returned function; the root logger restored after."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    configure_logging("json")
    written = io.StringIO()
    root.handlers[0].setStream(written)
    yield lambda: [json.loads(line) for line in written.getvalue().splitlines()]
    root.handlers, root.level = saved[0], saved[1]


def test_request_id_generated_echoed_or_replaced(fast_api):
    client = fast_api[0]
    generated = client.get("/healthz").headers["x-request-id"]
    assert len(generated) == 32 and generated != client.get("/healthz").headers["x-request-id"]
    assert client.get("/healthz", headers={"X-Request-ID": "trace-42.a:b"}).headers["x-request-id"] == "trace-42.a:b"
    for hostile in ("x" * 129, "two words", "a/../b", "{json}", ""):
        echoed = client.get("/healthz", headers={"X-Request-ID": hostile}).headers["x-request-id"]
        assert echoed != hostile and len(echoed) == 32


def test_the_job_keeps_the_request_id_of_its_submission(fast_api):
    client, store, _, _ = fast_api
    r = client.post("/v1/purify", files=[("images", PNG)], data={"iters": "3"}, headers={"X-Request-ID": "req-7"})
    assert r.status_code == 202 and r.headers["x-request-id"] == "req-7"
    assert store.get(r.json()["id"]).request_id == "req-7"


def test_worker_lines_carry_job_and_request_ids(json_logs, monkeypatch):
    import worker.runner as runner

    def handler(ctx):
        logging.getLogger("impress.engine").info("scoring %d images", len(ctx.inputs))
        raise RuntimeError("stop here")

    monkeypatch.setattr(runner, "handler_of", lambda path: handler)
    store = JobStore(fakeredis.FakeRedis(), "impress-logs", 3600)
    image = InputImage(name="a.png", blob=store.put_blob(PNG[1]), width=48, height=40, format="PNG")
    job_id = store.create(JobKind.detect, DetectParams(), [image], vae="v", perceptual="dssim", request_id="req-9").id
    runner.run_job(store, Settings(_env_file=None), job_id, on_time_limit=TimeoutError)
    lines = json_logs()
    assert {line["logger"] for line in lines} >= {"impress.worker", "impress.engine"}
    assert all((line["job_id"], line["request_id"]) == (job_id, "req-9") for line in lines), lines
    assert {"time", "level", "message"} <= set(lines[0])


@pytest.mark.e2e
def test_one_request_id_from_the_api_to_the_worker(small_vae_dir, tmp_path):
    """Real API and worker with JSON logs: the access line and the worker's lines about the job all
    name the request id the client sent."""
    tag = f"impress-logs-{uuid.uuid4().hex[:8]}"
    env = service_env(tag, small_vae_dir, IMPRESS_LOG_FORMAT="json", IMPRESS_DETECT_SYNC_TIMEOUT_S="60")
    port = free_port()
    cli = [sys.executable, "-m", "cli"]
    procs = [subprocess.Popen(cli + [role, *args], env=env, stdout=open(tmp_path / f"{role}.log", "w"),
                              stderr=subprocess.STDOUT)
             for role, args in (("worker", ["--pool", "solo"]), ("api", ["--port", str(port)]))]
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=90)
    try:
        wait_for(lambda: answers(client, "/readyz"), 90, "API ready with a worker alive", 0.5)
        r = client.post("/v1/detect", files=[("images", PNG)], headers={"X-Request-ID": "e2e-trace-1"})
        assert r.status_code == 200 and r.headers["x-request-id"] == "e2e-trace-1", r.text
    finally:
        client.close()
        stop(*procs)
        delete_prefix(TEST_REDIS_URL, tag)

    def json_lines(name):
        return [json.loads(line) for line in (tmp_path / name).read_text().splitlines() if line.startswith("{")]

    api_lines = [line for line in json_lines("api.log") if line.get("request_id") == "e2e-trace-1"]
    assert any(line["logger"] == "uvicorn.access" and "/v1/detect" in line["message"] for line in api_lines)
    job_lines = [line for line in json_lines("worker.log") if line.get("job_id") == r.json()["id"]]
    assert job_lines and all(line["request_id"] == "e2e-trace-1" for line in job_lines)
