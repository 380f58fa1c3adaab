"""Live events, synchronous waits, deletion and expiry, signed manifests, end to end: real HTTP
(uvicorn) -> real Redis -> a real Celery worker process."""
from __future__ import annotations

import json
import time

import pytest

from impress.client import ImpressClient
from impress.manifest import read_manifest
from tests.support import photo, png_bytes

pytestmark = pytest.mark.e2e

FORM = {"preset": "photoguard", "iters": "6", "early_stop": "false"}


def purify(service, headers=None, **form):
    return service.post("/v1/purify", files=[("images", ("cat.png", png_bytes(photo(32, 32)), "image/png"))],
                        data={**FORM, **form}, headers=headers or {})


def test_the_event_stream_follows_a_job_to_its_end(service):
    url = purify(service).headers["location"]
    events = []
    with service.stream("GET", f"{url}/events", headers={"Accept": "text/event-stream"}, timeout=120) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data:"):
                events.append(json.loads(line.removeprefix("data:").strip()))
    states = [e["state"] for e in events]
    assert states[-1] == "succeeded" and "running" in states and states.index("running") < len(states) - 1
    steps = [e["progress"]["step"] for e in events if e["state"] == "running"]
    assert steps == sorted(steps) and max(steps) >= 2       # progress writes (every 2 steps here)
    assert events[-1] == service.get(url).json()

    with ImpressClient(str(service.base_url)) as client:    # the typed client replays the same stream
        assert [e.job.state.value for e in client.events(url.rsplit("/", 1)[1])] == states


def test_prefer_wait_answers_the_finished_job_with_a_signed_result(service, tmp_path):
    r = purify(service, headers={"Prefer": "wait=60"})
    assert r.status_code == 200, r.text
    assert r.headers["preference-applied"] == "wait=60"
    job = r.json()
    assert job["state"] == "succeeded" and job["images"][0]["state"] == "succeeded"
    png = service.get(job["results"][0]["url"]).content
    manifest = service.get(job["results"][0]["manifest_url"]).json()
    checked = read_manifest(png)
    embedded = checked.manifest.model_dump(mode="json")
    assert checked.valid and embedded["effect"] == pytest.approx(manifest.pop("effect"), rel=1e-6)  # CBOR floats
    assert {k: v for k, v in embedded.items() if k != "effect"} == manifest
    assert manifest["input"]["bytes"] == len(png_bytes(photo(32, 32))) and manifest["method"]["name"] == "impress"


def test_deleted_data_and_expired_jobs_answer_410(service):
    job = purify(service, headers={"Prefer": "wait=60"}, expires_in="600").json()
    url = f"/v1/jobs/{job['id']}"
    assert time.time() + 590 <= job["expires_at"] <= time.time() + 600
    assert service.delete(f"{url}/data").status_code == 204
    for link in (job["results"][0]["url"], job["results"][0]["manifest_url"]):
        assert service.get(link).json()["error"]["code"] == "gone"
    assert service.get(url).json()["data_deleted_at"] is not None

    short = purify(service, headers={"Prefer": "wait=60"}, expires_in="1").json()
    time.sleep(2)        # past expires_in: Redis expired the record; its tombstone remains
    r = service.get(f"/v1/jobs/{short['id']}")
    assert r.status_code == 410 and r.json()["error"]["code"] == "gone"
    assert service.get("/v1/jobs/ffffffffffffffffffffffffffffffff").status_code == 404
