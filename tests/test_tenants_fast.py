"""API keys, tenant isolation, per-key limits and idempotency, in-process on fakeredis."""
from __future__ import annotations

import hashlib

import pytest

from impress.records import JobResult
from tests.support import photo, png_bytes

KEY_A, KEY_B = "key-alice", "key-bob"
PNG = ("a.png", png_bytes(photo()), "image/png")


def bearer(key):
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def keyed(make_fast_api):
    # Bob's key is configured as its hash only: a deployment need not keep plain keys.
    return make_fast_api(api_keys=f"{KEY_A},sha256:{hashlib.sha256(KEY_B.encode()).hexdigest()}")


def test_every_v1_endpoint_needs_a_valid_key_and_health_stays_open(keyed):
    client, _, queue, _ = keyed
    for method, path in [("post", "/v1/purify"), ("post", "/v1/detect"), ("post", "/v1/evaluate"),
                         ("get", "/v1/jobs"), ("get", "/v1/jobs/x"), ("get", "/v1/jobs/x/results/0"),
                         ("get", "/v1/jobs/x/files/report.html"), ("delete", "/v1/jobs/x")]:
        for headers in ({}, bearer("wrong"), {"X-API-Key": "wrong"}):
            r = client.request(method, path, headers=headers)
            assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized", (method, path, r.text)
            assert r.headers["www-authenticate"] == "Bearer"
    assert queue.sent == []
    assert client.get("/healthz").status_code == 200 and client.get("/metrics").status_code == 200
    assert client.post("/v1/purify", files=[("images", PNG)], headers={"X-API-Key": KEY_B}).status_code == 202


def test_a_job_is_invisible_to_every_other_key(keyed):
    client, store, _, _ = keyed
    url = client.post("/v1/purify", files=[("images", PNG)], headers=bearer(KEY_A)).headers["location"]
    job_id = url.rsplit("/", 1)[1]
    store.start(job_id, 2)
    store.succeed(job_id, JobResult(model={"name": "m"}, seconds=1, device="cpu"))
    for path in (url, f"{url}/results/0", f"{url}/files/report.html"):
        r = client.get(path, headers=bearer(KEY_B))
        assert r.status_code == 404 and r.json()["error"]["code"] == "job_not_found", r.text
    assert client.delete(url, headers=bearer(KEY_B)).status_code == 404
    assert client.get("/v1/jobs", headers=bearer(KEY_B)).json()["jobs"] == []
    assert [j["id"] for j in client.get("/v1/jobs", headers=bearer(KEY_A)).json()["jobs"]] == [job_id]
    assert client.get(url, headers=bearer(KEY_A)).json()["state"] == "succeeded"
    assert KEY_A not in str(store.r.hgetall(store.keys.job(job_id)))  # the owner is the key's hash


def test_rate_limit_is_a_429_with_headers(make_fast_api):
    client, _, _, _ = make_fast_api(api_keys=KEY_A, rate_limit="3/minute")
    answers = [client.get("/v1/jobs", headers=bearer(KEY_A)) for _ in range(4)]
    assert [r.status_code for r in answers] == [200, 200, 200, 429]
    assert answers[0].headers["ratelimit-limit"] == "3" and answers[0].headers["ratelimit-remaining"] == "2"
    refused = answers[3]
    assert refused.json()["error"]["code"] == "rate_limited" and int(refused.headers["retry-after"]) >= 1
    assert refused.headers["ratelimit-remaining"] == "0"


def test_unfinished_jobs_per_key_are_capped(make_fast_api):
    client, store, queue, _ = make_fast_api(api_keys=f"{KEY_A},{KEY_B}", max_unfinished_jobs_per_key=2)
    codes = [client.post("/v1/purify", files=[("images", PNG)], headers=bearer(KEY_A)).status_code for _ in range(3)]
    assert codes == [202, 202, 429]
    assert client.post("/v1/purify", files=[("images", PNG)], headers=bearer(KEY_B)).status_code == 202
    first = queue.sent[0][1]
    store.cancel(first)  # one finishes: room for another
    r = client.post("/v1/purify", files=[("images", PNG)], headers=bearer(KEY_A))
    assert r.status_code == 202, r.text


def test_idempotency_key_returns_the_same_job(keyed):
    client, _, queue, _ = keyed
    headers = {**bearer(KEY_A), "Idempotency-Key": "order-17"}
    first = client.post("/v1/purify", files=[("images", PNG)], data={"iters": "5"}, headers=headers)
    again = client.post("/v1/purify", files=[("images", PNG)], data={"iters": "5"}, headers=headers)
    assert first.status_code == again.status_code == 202 and first.json()["id"] == again.json()["id"]
    assert len(queue.sent) == 1
    other = client.post("/v1/purify", files=[("images", PNG)], data={"iters": "6"}, headers=headers)
    assert other.status_code == 422 and other.json()["error"]["code"] == "idempotency_key_reused"
    # The same key of another tenant is another key.
    bob = client.post("/v1/purify", files=[("images", PNG)], data={"iters": "6"},
                      headers={**bearer(KEY_B), "Idempotency-Key": "order-17"})
    assert bob.status_code == 202 and bob.json()["id"] != first.json()["id"]


def test_idempotency_key_in_use_and_bad_keys(keyed):
    client, store, _, _ = keyed
    from impress.api_keys import api_key_id

    store.r.set(store.keys.idempotency(api_key_id(KEY_A), "busy"), "pending:whatever")
    r = client.post("/v1/purify", files=[("images", PNG)], headers={**bearer(KEY_A), "Idempotency-Key": "busy"})
    assert r.status_code == 409 and r.json()["error"]["code"] == "idempotency_key_in_use"
    assert r.headers["retry-after"] == "1"
    for bad in ("", "has space", "x" * 256):
        r = client.post("/v1/purify", files=[("images", PNG)], headers={**bearer(KEY_A), "Idempotency-Key": bad})
        assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_parameter", bad


def test_a_failed_submission_frees_its_idempotency_key(keyed):
    client, _, queue, _ = keyed
    headers = {**bearer(KEY_A), "Idempotency-Key": "retry-me"}
    bad = client.post("/v1/purify", files=[("images", ("x.txt", b"not an image", "text/plain"))], headers=headers)
    assert bad.status_code == 415
    good = client.post("/v1/purify", files=[("images", ("x.txt", b"not an image", "text/plain"))], headers=headers)
    assert good.status_code == 415  # decoded again, not answered from a half-made claim


def test_metrics_can_require_a_key(make_fast_api):
    client, _, _, _ = make_fast_api(api_keys=KEY_A, metrics_require_key=True)
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers=bearer(KEY_A)).status_code == 200


def test_disabled_auth_is_open_even_with_keys(make_fast_api):
    client, _, _, _ = make_fast_api(api_keys=KEY_A, auth="disabled")
    assert client.post("/v1/purify", files=[("images", PNG)]).status_code == 202
