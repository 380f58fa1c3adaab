"""Finding 4: one overall deadline per image URL fetch and per webhook delivery attempt, whatever the
server trickles; a per-key limit on fetches in progress; a hard time limit on webhook tasks."""
from __future__ import annotations

import threading
import time

from impress.contract import ErrorCode
from impress.records import WebhookEvent
from impress.ssrf import AllowList, UrlGuard
from impress.webhooks import DeliveryOutcome, build_delivery, deliver
from tests.hostile.conftest import IMAGE, TENANT_A, TENANT_B, bearer
from tests.loopback import WEBHOOK_SECRET, TricklingServer, loopback_guards
from tests.support import wait_for

FETCH_S = 1.5


def url_api(keyed_api, server: TricklingServer, fetch_s: float = FETCH_S, **overrides):
    client, store, queue, settings = keyed_api(url_allowed_hosts=f"127.0.0.1:{server.port}",
                                               url_fetch_timeout_s=fetch_s, **overrides)
    client.app.state.url_guards = loopback_guards(settings)
    return client, store, queue, settings


def test_a_trickling_image_url_is_given_up_at_its_deadline(keyed_api):
    with TricklingServer(every_s=0.05) as server:
        client, *_ = url_api(keyed_api, server)
        start = time.monotonic()
        r = client.post("/v1/purify", headers=bearer(TENANT_A), data={"image_url": server.url("/a.png")})
        given_up_after = time.monotonic() - start
    assert r.status_code == 422 and r.json()["error"]["code"] == ErrorCode.image_fetch_failed
    assert r.json()["error"]["details"][0]["error"]["message"] == "the image could not be fetched"
    # Bound: IMPRESS_URL_FETCH_TIMEOUT_S plus scheduling slack (before: over 90 s with a 3 s setting).
    assert given_up_after < FETCH_S + 2, given_up_after


def test_fetches_in_progress_are_limited_per_key(keyed_api):
    with TricklingServer(every_s=0.05) as server:
        client, *_ = url_api(keyed_api, server, fetch_s=8, max_concurrent_fetches_per_key=2)
        slow = [threading.Thread(target=client.post, args=("/v1/purify",),
                                 kwargs={"headers": bearer(TENANT_A), "data": {"image_url": server.url(f"/{i}.png")}})
                for i in range(2)]
        for thread in slow:
            thread.start()
        wait_for(lambda: server.connections == 2, 5, "both fetches trickling")
        third = client.post("/v1/purify", headers=bearer(TENANT_A), data={"image_url": server.url("/3.png")})
        other = client.post("/v1/purify", headers=bearer(TENANT_B), files={"images": ("b.png", IMAGE)})
        for thread in slow:
            thread.join()
        after = client.post("/v1/purify", headers=bearer(TENANT_A), files={"images": ("a.png", IMAGE)})
    assert third.status_code == 429 and third.json()["error"]["code"] == ErrorCode.too_many_fetches
    assert other.status_code == 202 and after.status_code == 202   # the slots were given back
    assert server.connections == 2


def test_a_trickling_webhook_receiver_is_given_up_at_its_deadline(keyed_api):
    client, store, queue, settings = keyed_api(webhook_secret=WEBHOOK_SECRET, webhook_allowed_hosts="127.0.0.1",
                                               webhook_timeout_s=FETCH_S)
    with TricklingServer(every_s=0.05) as receiver:
        job = client.post("/v1/purify", headers=bearer(TENANT_A), files={"images": ("a.png", IMAGE)},
                          data={"webhook": receiver.url("/hook")}).json()["id"]
        start = time.monotonic()
        outcome = deliver(build_delivery(store.get(job), WebhookEvent.completed), settings,
                          UrlGuard(AllowList.parse("127.0.0.1"), https_only=False))
        given_up_after = time.monotonic() - start
    assert outcome == DeliveryOutcome.retry and given_up_after < FETCH_S + 2, given_up_after


def test_webhook_tasks_have_a_hard_time_limit():
    from impress.settings import get_settings
    from worker.tasks import webhook

    # Both limits set: a retry re-sends the task with them, and Celery refuses a soft limit above the hard.
    assert 0 < webhook.soft_time_limit < webhook.time_limit <= get_settings().webhook_timeout_s * 2 + 10
