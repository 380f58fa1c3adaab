"""Data that lives as long as the caller says (fast layer): expires_in / expires_at, DELETE
/v1/jobs/{id}/data, 410 gone after deletion and after expiry, 404 for other keys and unknown ids."""
from __future__ import annotations

import time

from impress.contract import JobState, StopReason
from impress.records import JobResult, ResultImage
from tests.support import photo, png_bytes

PNG = ("a.png", png_bytes(photo()), "image/png")
KEYS = {"api_keys": "key-a,key-b"}
A, B = {"Authorization": "Bearer key-a"}, {"Authorization": "Bearer key-b"}


def finish(store, job_id: str, data: bytes = b"purified") -> None:
    assert store.start(job_id, 2)[0]
    image = ResultImage(name="a.png", blob=store.put_blob(data), width=48, height=40, iterations=1,
                        stop_reason=StopReason.completed, trace=[])
    assert store.succeed(job_id, JobResult(images=[image], model={"name": "m"}, seconds=0.1, device="cpu"))


def test_expires_in_sets_the_ttl_of_the_job_and_its_blobs(fast_api):
    client, store, _, settings = fast_api
    before = time.time()
    job = client.post("/v1/purify", files=[("images", PNG)], data={"expires_in": "120"}).json()
    view = client.get(job["url"]).json()
    assert before + 119 <= view["expires_at"] <= time.time() + 121
    assert 0 < store.r.ttl(store.keys.job(job["id"])) <= 120
    blob = store.get(job["id"]).inputs[0].blob
    assert 0 < store.r.ttl(store.keys.blob(blob)) <= 120
    finish(store, job["id"])
    assert client.get(job["url"]).json()["expires_at"] >= view["expires_at"]   # counted from the last change
    default = client.post("/v1/purify", files=[("images", PNG)]).json()
    assert client.get(default["url"]).json()["expires_at"] >= before + store.ttl_s - 1


def test_expires_in_beyond_the_service_ttl_is_422(fast_api):
    client, _, queue, settings = fast_api
    r = client.post("/v1/purify", files=[("images", PNG)], data={"expires_in": str(settings.result_ttl_s + 1)})
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_parameter"
    assert "expires_in" in r.text and queue.sent == []
    assert client.post("/v1/detect", files=[("images", PNG)], data={"expires_in": "0"}).status_code == 422


def test_delete_data_answers_410_for_results_afterwards_and_404_to_others(make_fast_api):
    client, store, _, _ = make_fast_api(**KEYS)
    job = client.post("/v1/purify", files=[("images", PNG)], headers=A).json()
    assert client.delete(f"{job['url']}/data", headers=A).json()["error"]["code"] == "job_not_finished"
    finish(store, job["id"])
    assert client.get(f"{job['url']}/results/0", headers=A).content == b"purified"
    assert client.delete(f"{job['url']}/data", headers=B).status_code == 404
    r = client.delete(f"{job['url']}/data", headers=A)
    assert r.status_code == 204 and r.content == b""
    record = store.get(job["id"])
    assert store.get_blob(record.inputs[0].blob) is None and store.get_blob(record.result.images[0].blob) is None
    gone = client.get(f"{job['url']}/results/0", headers=A)
    assert gone.status_code == 410 and gone.json()["error"]["code"] == "gone"
    assert client.get(f"{job['url']}/results/0", headers=B).status_code == 404
    view = client.get(job["url"], headers=A).json()
    assert view["state"] == "succeeded" and view["data_deleted_at"] is not None
    assert client.delete(f"{job['url']}/data", headers=A).status_code == 204   # again: nothing left, still 204


def test_bytes_another_job_holds_survive_a_delete(fast_api):
    client, store, _, _ = fast_api
    first, second = (client.post("/v1/purify", files=[("images", PNG)]).json() for _ in range(2))
    for job in (first, second):
        finish(store, job["id"])
    assert client.delete(f"{first['url']}/data").status_code == 204
    assert client.get(f"{first['url']}/results/0").status_code == 410
    assert client.get(f"{second['url']}/results/0").content == b"purified"
    assert store.get_blob(store.get(second["id"]).inputs[0].blob) is not None


def test_an_expired_job_is_410_to_its_owner_and_404_to_others(make_fast_api):
    client, store, _, _ = make_fast_api(**KEYS)
    job = client.post("/v1/purify", files=[("images", PNG)], headers=A).json()
    store.r.delete(store.keys.job(job["id"]))    # what its TTL does
    for url in (job["url"], f"{job['url']}/results/0", f"{job['url']}/events"):
        r = client.get(url, headers=A)
        assert r.status_code == 410 and r.json()["error"]["code"] == "gone", url
        assert client.get(url, headers=B).status_code == 404
    assert client.get("/v1/jobs/0123456789abcdef", headers=A).json()["error"]["code"] == "job_not_found"
    assert 0 < store.r.ttl(store.keys.tombstone(job["id"])) <= 3600 + 7 * 24 * 3600


def test_webhook_payloads_show_expires_at(make_fast_api):
    from impress.webhooks import new_webhook_secret

    client, store, queue, _ = make_fast_api(webhook_secret=new_webhook_secret(), webhook_allowed_hosts="127.0.0.1")
    job = client.post("/v1/purify", files=[("images", PNG)],
                      data={"webhook": "http://127.0.0.1:9/hook", "expires_in": "300"}).json()
    finish(store, job["id"])
    from impress.views import WebhookPayload

    payload = WebhookPayload.model_validate_json(queue.webhooks[-1].body)
    assert payload.data.state == JobState.succeeded and payload.data.expires_at > time.time() + 290
