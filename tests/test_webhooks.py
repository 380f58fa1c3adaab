"""Webhooks in process: signing as the Standard Webhooks package verifies it, the submit fields, the
at-most-once `completed` marker, and one delivery attempt's outcome (a recording transport)."""
from __future__ import annotations

import base64
import json
from datetime import datetime, timedelta, timezone

import httpx
import pytest
import standardwebhooks

from impress.contract import JobKind, JobState, PurifyParams
from impress.records import InputImage, JobResult, WebhookEvent, WebhookTarget
from impress.settings import Settings
from impress.ssrf import AllowList, UrlGuard
from impress.views import WebhookPayload
from impress.webhooks import (DeliveryOutcome, WebhookDelivery, WebhookNotifier, build_delivery, deliver, retry_delay,
                              signed_headers)
from tests.loopback import WEBHOOK_SECRET as SECRET
from tests.support import RecordingQueue, photo, png_bytes

HOOKS = {"webhook_secret": SECRET, "webhook_allowed_hosts": "127.0.0.1"}
PNG = ("a.png", png_bytes(photo()), "image/png")
PARAMS = PurifyParams(preset="photoguard", iters=4, lr=0.01, alpha=0.01, delta=0.05, noise=0.05)


def create_job(store, events=(WebhookEvent.completed,)):
    target = WebhookTarget(url="http://127.0.0.1:9/hook", events=list(events), jobs_url="http://api.test/v1/jobs")
    inputs = [InputImage(name="a.png", blob=store.put_blob(PNG[1]), width=48, height=40, format="PNG")]
    return store.create(JobKind.purify, PARAMS, inputs, vae="v", perceptual="dssim", webhook=target)


def test_signatures_verify_with_the_standard_webhooks_package():
    delivery = WebhookDelivery(id="msg_1_completed", url="https://x.test/", body='{"type":"job.completed"}')
    headers = signed_headers(SECRET, delivery)
    assert headers["webhook-signature"].startswith("v1,") and headers["webhook-id"] == delivery.id
    receiver = standardwebhooks.Webhook(SECRET)
    assert receiver.verify(delivery.body, headers) == {"type": "job.completed"}
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        receiver.verify(delivery.body.replace("completed", "started"), headers)
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        standardwebhooks.Webhook("whsec_" + base64.b64encode(b"another-secret").decode()).verify(delivery.body, headers)
    stale = signed_headers(SECRET, delivery, datetime.now(timezone.utc) - timedelta(hours=1))
    with pytest.raises(standardwebhooks.WebhookVerificationError):   # replayed long after: refused
        receiver.verify(delivery.body, stale)


def test_completed_is_sent_once_even_when_the_job_ran_twice(fast_store):
    queue = RecordingQueue()
    fast_store.events = WebhookNotifier(queue.send_webhook, progress_every_s=0)
    job = create_job(fast_store, [WebhookEvent.start, WebhookEvent.completed])
    assert fast_store.start(job.id, max_attempts=2) == (True, 1)
    assert fast_store.start(job.id, max_attempts=2) == (True, 2)    # redelivered: the first worker died
    fast_store.progress(job.id, 1, 4)                                # not asked for: nothing sent
    assert fast_store.succeed(job.id, JobResult(model={"name": "v"}, seconds=1.0, device="cpu"))
    fast_store.events(fast_store, job.id, WebhookEvent.completed)   # a second run ending (after a lost ack)
    assert [d.id for d in queue.webhooks] == [f"msg_{job.id}_start_1", f"msg_{job.id}_start_2",
                                              f"msg_{job.id}_completed"]
    payload = WebhookPayload.model_validate_json(queue.webhooks[-1].body)
    assert payload.type == "job.completed" and payload.data.state == JobState.succeeded
    assert fast_store.r.exists(fast_store.keys.completed_webhook(job.id))


def test_worker_lost_failure_sends_completed(fast_store):
    queue = RecordingQueue()
    fast_store.events = WebhookNotifier(queue.send_webhook, progress_every_s=0)
    job = create_job(fast_store)
    fast_store.start(job.id, max_attempts=1)
    assert fast_store.start(job.id, max_attempts=1) == (False, 2)
    (delivery,) = queue.webhooks
    assert WebhookPayload.model_validate_json(delivery.body).data.error.code.value == "worker_lost"


def test_progress_webhooks_are_throttled(fast_store):
    queue = RecordingQueue()
    fast_store.events = WebhookNotifier(queue.send_webhook, progress_every_s=3600)
    job = create_job(fast_store, [WebhookEvent.progress])
    fast_store.start(job.id, max_attempts=1)
    for step in range(1, 5):
        fast_store.progress(job.id, step, 4)
    assert [d.id for d in queue.webhooks] == [f"msg_{job.id}_progress_1"]


@pytest.fixture
def hooks_api(make_fast_api):
    """The app with a signing secret, and 127.0.0.1 allow-listed."""
    return make_fast_api(**HOOKS)


def test_submit_records_the_webhook_and_a_cancel_sends_completed(hooks_api):
    client, store, queue, _ = hooks_api
    r = client.post("/v1/purify", files=[("images", PNG)],
                    data={"webhook": "http://127.0.0.1:9/hook", "webhook_events": ["start", "completed"]})
    assert r.status_code == 202, r.text
    record = store.get(r.json()["id"])
    assert record.webhook.url == "http://127.0.0.1:9/hook"
    assert record.webhook.events == [WebhookEvent.start, WebhookEvent.completed]
    view = client.delete(r.headers["location"]).json()
    (delivery,) = queue.webhooks
    assert json.loads(delivery.body)["data"] == client.get(r.headers["location"]).json() == view


@pytest.mark.parametrize("webhook, code", [
    ("http://169.254.169.254/latest/meta-data/", "url_not_allowed"),
    ("http://127.0.0.2:9/hook", "url_not_allowed"),
    ("http://[::1]:9/hook", "url_not_allowed"),
    ("ftp://127.0.0.1/hook", "url_not_allowed"),
])
def test_webhooks_to_private_addresses_are_refused_at_submission(hooks_api, webhook, code):
    client, _, queue, _ = hooks_api
    r = client.post("/v1/detect", files=[("images", PNG)], data={"webhook": webhook})
    assert r.status_code == 422 and r.json()["error"]["code"] == code, r.text
    assert queue.sent == []


def test_a_webhook_needs_a_signing_secret(fast_api):
    client, _, queue, _ = fast_api
    r = client.post("/v1/purify", files=[("images", PNG)], data={"webhook": "https://hooks.example/x"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "webhooks_disabled" and queue.sent == []


def test_unknown_webhook_events_are_refused(hooks_api):
    client, _, _, _ = hooks_api
    r = client.post("/v1/purify", files=[("images", PNG)],
                    data={"webhook": "http://127.0.0.1:9/hook", "webhook_events": "finished"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_parameter"


@pytest.mark.parametrize("status, outcome", [(204, DeliveryOutcome.delivered), (200, DeliveryOutcome.delivered),
                                             (503, DeliveryOutcome.retry), (429, DeliveryOutcome.retry),
                                             (400, DeliveryOutcome.gave_up), (302, DeliveryOutcome.gave_up)])
def test_one_delivery_attempt(fast_store, status, outcome):
    seen: list[httpx.Request] = []
    guard = UrlGuard(AllowList.parse("127.0.0.1"), https_only=False, resolver=lambda host, port: ["127.0.0.1"],
                     transport=httpx.MockTransport(lambda request: (seen.append(request), httpx.Response(status))[1]))
    delivery = build_delivery(create_job(fast_store), WebhookEvent.completed)
    assert deliver(delivery, Settings(_env_file=None, **HOOKS), guard) == outcome
    (request,) = seen
    standardwebhooks.Webhook(SECRET).verify(request.content, dict(request.headers))


def test_a_delivery_to_a_refused_address_is_dropped_unsent(fast_store):
    seen: list[httpx.Request] = []
    guard = UrlGuard(AllowList(), https_only=False, resolver=lambda host, port: ["169.254.169.254"],
                     transport=httpx.MockTransport(lambda request: (seen.append(request), httpx.Response(204))[1]))
    delivery = build_delivery(create_job(fast_store), WebhookEvent.completed)
    assert deliver(delivery, Settings(_env_file=None, **HOOKS), guard) == DeliveryOutcome.gave_up and seen == []


def test_retry_delays_grow_and_stay_bounded():
    assert 1 <= retry_delay(0, 2.0) <= 2 and 8 <= retry_delay(3, 2.0) <= 16 and retry_delay(30, 2.0) <= 600


def test_the_webhook_worker_loads_no_torch():
    import subprocess
    import sys

    code = "import sys, worker.tasks; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_delivery_outcomes_are_service_metrics(fast_api):
    client, store, _, _ = fast_api
    for outcome in (DeliveryOutcome.retry, DeliveryOutcome.delivered, DeliveryOutcome.delivered):
        store.count_webhook(outcome.value)
    text = client.get("/metrics").text
    assert 'impress_webhook_deliveries_total{outcome="delivered"} 2.0' in text
    assert 'impress_webhook_deliveries_total{outcome="retry"} 1.0' in text
    assert 'impress_job_transitions_total{kind="webhook"' not in text
