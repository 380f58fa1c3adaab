"""image_url inputs, the API in process against loopback servers: 127.0.0.1 is allow-listed, 127.0.0.2
is the loopback address nobody named. One bad URL is left out with its own code; the rest run."""
from __future__ import annotations

import time

import pytest

from impress.contract import ErrorCode
from tests.loopback import IMAGE, IMAGES_ALLOWED, images, internal, loopback_guards  # noqa: F401 (fixtures)

SETTINGS = {"url_allowed_hosts": IMAGES_ALLOWED, "url_fetch_timeout_s": 3.0}


@pytest.fixture
def url_api(make_fast_api):
    client, store, queue, settings = make_fast_api(**SETTINGS)
    client.app.state.url_guards = loopback_guards(settings)   # no lookup ever leaves this machine
    return client, store, queue, settings


def test_one_bad_url_is_reported_while_the_others_run(url_api, images, internal):
    client, store, queue, _ = url_api
    urls = [images.url("/cat.png"), images.url("/missing.png"), images.url("/to-internal"), images.url("/to-cat")]
    r = client.post("/v1/purify", data={"image_url": urls, "iters": "3"})
    assert r.status_code == 202, r.text
    record = store.get(r.json()["id"])
    assert [(item.name, item.url, item.width) for item in record.inputs] == [
        ("cat.png", urls[0], 40), ("to-cat", urls[3], 40)]
    assert [(item.url, item.error.code) for item in record.rejected_inputs] == [
        (urls[1], ErrorCode.image_fetch_failed), (urls[2], ErrorCode.url_not_allowed)]
    assert client.get(r.headers["location"]).json()["rejected_inputs"][1]["error"]["code"] == "url_not_allowed"
    assert internal.hits == [] and len(queue.sent) == 1


def test_uploads_and_urls_together(url_api, images):
    client, store, _, _ = url_api
    r = client.post("/v1/purify", files=[("images", ("up.png", IMAGE, "image/png"))],
                    data={"image_url": images.url("/cat.png")})
    assert [item.name for item in store.get(r.json()["id"]).inputs] == ["up.png", "cat.png"]


@pytest.mark.parametrize("path, code", [
    ("/text", "unsupported_image_format"),          # checked exactly like an upload
    ("/huge", "payload_too_large"),
    ("/slow", "image_fetch_failed"),
    ("/to-metadata", "url_not_allowed"),
])
def test_hostile_url_bodies_are_per_image_errors(url_api, images, path, code):
    client, _, queue, _ = url_api
    start = time.monotonic()
    r = client.post("/v1/detect", data={"image_url": [images.url(path)]})
    # Nothing usable: the request is refused with the image's own code, and the time limit held.
    assert r.status_code == 422 and r.json()["error"]["code"] == code, r.text
    assert r.json()["error"]["details"][0]["url"] == images.url(path)
    assert time.monotonic() - start < 10 and queue.sent == []


def test_urls_to_unnamed_or_private_hosts_are_refused_unconnected(url_api, internal):
    client, _, _, _ = url_api
    for url in (internal.url("/secret.png"), internal.url("/secret.png").replace("http:", "https:"),
                "https://169.254.169.254/latest/meta-data/iam", "https://[::1]/x.png", "file:///etc/passwd",
                "https://images.example.com/a.png"):   # a name: refused here, as it does not resolve
        r = client.post("/v1/purify", data={"image_url": url})
        assert r.json()["error"]["code"] == "url_not_allowed", (url, r.text)
    assert internal.hits == []


def test_urls_count_towards_the_image_limit(url_api, images):
    client, _, _, settings = url_api
    r = client.post("/v1/purify", data={"image_url": [images.url("/cat.png")] * (settings.max_images_per_job + 1)})
    assert r.json()["error"]["code"] == "too_many_images" and images.hits == []


def test_an_idempotent_retry_fetches_nothing_again(url_api, images):
    client, _, queue, _ = url_api
    form = {"image_url": [images.url("/cat.png")], "webhook_events": "completed"}
    first = client.post("/v1/purify", data=form, headers={"Idempotency-Key": "urls-1"})
    again = client.post("/v1/purify", data=form, headers={"Idempotency-Key": "urls-1"})
    assert again.json()["id"] == first.json()["id"] and images.hits == ["/cat.png"] and len(queue.sent) == 1
    other = client.post("/v1/purify", data={"image_url": [images.url("/to-cat")]}, headers={"Idempotency-Key": "urls-1"})
    assert other.status_code == 422 and other.json()["error"]["code"] == "idempotency_key_reused"
