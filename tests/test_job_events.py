"""Live events and synchronous waits (fast layer): GET /v1/jobs/{id}/events as server-sent events,
Last-Event-ID, tenant rules, and `Prefer: wait=N` on job POSTs."""
from __future__ import annotations

import json
import threading
import time

from tests.support import photo, png_bytes, run_job_later

PNG = ("a.png", png_bytes(photo()), "image/png")


def sse_events(response) -> list[dict]:
    """The events of a text/event-stream body: {"id", "data"} each (comments skipped)."""
    events, current = [], {}
    for line in response.iter_lines():
        if not line:
            if "data" in current:
                events.append(current)
            current = {}
        elif not line.startswith(":"):
            field, _, value = line.partition(":")
            current[field] = value.removeprefix(" ")
    return events


def test_event_stream_sends_every_change_and_ends_after_the_final_state(fast_api):
    client, store, _, _ = fast_api
    job = client.post("/v1/purify", files=[("images", PNG)]).json()
    worker = run_job_later(store, job["id"])
    with client.stream("GET", f"{job['url']}/events", headers={"Accept": "text/event-stream"}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = sse_events(r)
    worker.join()
    views = [json.loads(e["data"]) for e in events]
    assert [(v["state"], v["progress"]["step"]) for v in views] == [
        ("queued", 0), ("running", 0), ("running", 5), ("running", 10), ("succeeded", 10)]
    assert views[-1] == client.get(job["url"]).json()     # the job exactly as GET shows it
    assert all(e["id"] for e in events)

    with client.stream("GET", f"{job['url']}/events", headers={"Last-Event-ID": events[2]["id"]}) as r:
        resumed = sse_events(r)
    assert [e["id"] for e in resumed] == [e["id"] for e in events[3:]]


def test_event_stream_follows_tenant_rules_and_checks_last_event_id(make_fast_api):
    client, _, _, _ = make_fast_api(api_keys="key-a,key-b")
    job = client.post("/v1/purify", files=[("images", PNG)], headers={"X-API-Key": "key-a"}).json()
    assert client.get(f"{job['url']}/events", headers={"X-API-Key": "key-b"}).status_code == 404
    assert client.get(f"{job['url']}/events").status_code == 401
    r = client.get(f"{job['url']}/events", headers={"X-API-Key": "key-a", "Last-Event-ID": "x"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_parameter"


def test_prefer_wait_answers_the_finished_job_when_it_ends_in_time(fast_api):
    client, store, queue, _ = fast_api

    def submit_and_finish():   # the job id is known once the recording queue got it
        while not queue.sent:
            time.sleep(0.01)
        run_job_later(store, queue.sent[-1][1], 0.1).join()
    threading.Thread(target=submit_and_finish).start()
    r = client.post("/v1/purify", files=[("images", PNG)], headers={"Prefer": "respond-async, wait=5"})
    assert r.status_code == 200, r.text
    assert r.headers["preference-applied"] == "wait=5"
    assert r.json()["state"] == "succeeded" and r.json()["results"][0]["url"].endswith("/results/0")


def test_prefer_wait_is_202_when_the_job_runs_longer_and_is_capped(make_fast_api):
    client, _, _, _ = make_fast_api(prefer_wait_max_s=1)
    t0 = time.monotonic()
    r = client.post("/v1/purify", files=[("images", PNG)], headers={"Prefer": "wait=30"})
    assert r.status_code == 202 and "preference-applied" not in r.headers
    assert 0.9 <= time.monotonic() - t0 < 10     # waited the cap (1 s), not 30
    assert client.post("/v1/purify", files=[("images", PNG)], headers={"Prefer": "wait=soon"}).status_code == 202


def test_prefer_wait_on_detect_waits_for_any_number_of_images(make_fast_api):
    client, _, _, _ = make_fast_api(detect_sync_max_images=0)
    r = client.post("/v1/detect", files=[("images", PNG)], headers={"Prefer": "wait=1"})
    assert r.status_code == 202
