"""The API in-process on fakeredis with a recording queue: validation, records, admission, views."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from impress.contract import JobKind, JobState, ModelReport, PurifyParams, WorkerBeat
from tests.support import photo, png_bytes, wait_for

PNG = ("a.png", png_bytes(photo()), "image/png")


def test_purify_is_queued_with_a_typed_record(fast_api):
    client, store, queue, _ = fast_api
    r = client.post("/v1/purify", files=[("images", PNG)], data={"preset": "glaze", "iters": "7", "schedule": "fast"})
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    assert r.headers["location"].endswith(f"/v1/jobs/{job_id}")
    assert queue.sent == [("purify", job_id)]
    record = store.get(job_id)
    assert isinstance(record.params, PurifyParams) and record.params.iters == 7
    assert record.params.early_stop is True  # fast stops on a plateau; published runs its full count
    assert record.vae == "stabilityai/stable-diffusion-2-1-base"  # the glaze preset's VAE, none configured
    view = client.get(f"/v1/jobs/{job_id}").json()
    assert view["state"] == "queued" and view["params"]["iters"] == 7 and view["inputs"][0]["width"] == 48


def test_published_schedule_runs_its_full_count_by_default(fast_api):
    client, store, _, _ = fast_api
    r = client.post("/v1/purify", files=[("images", PNG)], data={"preset": "photoguard"})
    params = store.get(r.json()["id"]).params
    assert (params.schedule, params.iters, params.early_stop) == ("published", 1000, False)


@pytest.mark.parametrize("files, form, status, code", [
    ([("x.txt", b"hello, not an image", "text/plain")], {}, 415, "unsupported_image_format"),
    ([("x.png", b"", "image/png")], {}, 422, "image_decode_failed"),
    ([("x.png", png_bytes(np.zeros((500, 500, 3), np.uint8)), "image/png")], {}, 413, "image_too_many_pixels"),
    ([PNG] * 5, {}, 422, "too_many_images"),
    ([PNG], {"preset": "mist"}, 422, "invalid_parameter"),
    ([PNG], {"iters": "200000"}, 422, "invalid_parameter"),
    ([PNG], {"colour": "red"}, 422, "invalid_parameter"),
])
def test_bad_submissions_are_refused_before_anything_is_queued(fast_api, files, form, status, code):
    client, _, queue, _ = fast_api
    r = client.post("/v1/purify", files=[("images", f) for f in files], data=form)
    assert r.status_code == status and r.json()["error"]["code"] == code, r.text
    assert queue.sent == []


def test_results_wait_for_success_and_cancel_stops_a_queued_job(fast_api):
    client, store, _, _ = fast_api
    url = client.post("/v1/purify", files=[("images", PNG)]).headers["location"]
    assert client.get(f"{url}/results/0").json()["error"]["code"] == "job_not_finished"
    assert client.delete(url).json()["state"] == "canceled"
    assert client.delete(url).status_code == 409
    assert client.get("/v1/jobs/unknown").status_code == 404


def test_overload_is_a_fast_503_and_reads_still_answer(fast_api):
    """Past IMPRESS_MAX_INFLIGHT_SUBMITS a submission is refused at once (503, Retry-After), unread."""
    client, _, queue, settings = fast_api
    admission = client.app.state.admission
    admission.inflight = admission.limit  # the limit is reached
    refused = client.post("/v1/purify", files=[("images", PNG)])
    assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
    assert refused.json()["error"]["code"] == "service_overloaded" and queue.sent == []
    assert client.get("/healthz").status_code == 200
    admission.inflight = 0
    assert client.post("/v1/purify", files=[("images", PNG)]).status_code == 202
    assert admission.inflight == 0


def test_a_waiting_sync_detect_holds_no_submission_slot(fast_api):
    """A sync detect polls for its answer after it was accepted: that wait must not turn other
    submissions into 503s."""
    client, _, queue, _ = fast_api
    admission = client.app.state.admission
    admission.limit = 1
    client.app.state.settings.detect_sync_timeout_s = 5.0
    waiting = threading.Thread(target=lambda: client.post("/v1/detect", files=[("images", PNG)]))
    waiting.start()
    try:
        wait_for(lambda: queue.sent, 30, "the detect job queued")
        assert queue.sent[0][0] == "detect"  # accepted, and about to poll for the answer
        wait_for(lambda: admission.inflight == 0, 2, "the detect's slot given back while it waits")
        assert client.post("/v1/purify", files=[("images", PNG)]).status_code == 202
    finally:
        waiting.join()


def test_detect_answered_inline_when_a_worker_finishes_in_time(fast_api):
    client, store, queue, _ = fast_api
    from impress.records import JobResult

    def worker():  # finishes the job as a worker would
        job_id = wait_for(lambda: queue.sent, 30, "the detect job queued")[0][1]
        store.start(job_id, 2)
        store.succeed(job_id, JobResult(model={"name": "m"}, seconds=0.1, device="cpu"))

    finisher = threading.Thread(target=worker)
    finisher.start()
    client.app.state.settings.detect_sync_timeout_s = 30.0
    r = client.post("/v1/detect", files=[("images", PNG)])
    finisher.join()
    assert r.status_code == 200 and r.json()["state"] == JobState.succeeded.value and r.json()["kind"] == JobKind.detect.value


def test_readiness_needs_a_live_worker_with_its_models_and_the_broker(make_fast_api):
    client, store, queue, _ = make_fast_api(readiness_cache_s=0)
    none = client.get("/readyz")
    assert none.status_code == 503 and int(none.headers["retry-after"]) > 0
    assert none.json() == {"ready": False, "redis": True, "broker": True, "workers": [], "queues": {}, "models": {}}
    store.beat(WorkerBeat(name="webhooks@a", queues=["webhooks"]), 60)   # needs no model, runs no job
    store.beat(WorkerBeat(name="celery@a", queues=["impress", "impress-detect"],
                          models=ModelReport(missing=["vae org/absent (hub cache: org/absent)"])), 60)
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.json()["models"]["celery@a"]["missing"]
    store.beat(WorkerBeat(name="celery@a", queues=["impress", "impress-detect"],
                          models=ModelReport(present=["vae taef2 (...)"])), 60)
    ready = client.get("/readyz")
    assert ready.status_code == 200 and "retry-after" not in ready.headers
    assert ready.json() == {"ready": True, "redis": True, "broker": True, "workers": ["celery@a", "webhooks@a"],
                            "queues": {"impress": ["celery@a"], "impress-detect": ["celery@a"],
                                       "webhooks": ["webhooks@a"]},
                            "models": {"celery@a": {"present": ["vae taef2 (...)"], "missing": []}}}
    queue.broker_up = False
    assert client.get("/readyz").json()["broker"] is False and client.get("/readyz").status_code == 503
    queue.broker_up = True
    store.end_beats("celery@a")    # a worker that stopped cleanly
    assert client.get("/readyz").json()["workers"] == ["webhooks@a"] and client.get("/readyz").status_code == 503
