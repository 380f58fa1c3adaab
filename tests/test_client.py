"""impress.client in process: the async client against the app on fakeredis (ASGI transport), the
sync client's retries and polling against a scripted transport, and webhook verification."""
from __future__ import annotations

import asyncio
import json

import httpx
import pytest
import standardwebhooks

from impress.client import AsyncImpressClient, Backoff, ImpressClient, ImpressError, verify_webhook
from impress.contract import ErrorCode, JobState, PurifyOverrides
from impress.records import WebhookEvent
from impress.views import Accepted, JobView
from impress.webhooks import WebhookDelivery, signed_headers
from tests.loopback import WEBHOOK_SECRET as SECRET
from tests.support import photo, png_bytes, run_job_later

IMAGE = ("a.png", png_bytes(photo()))
QUICK = Backoff(first_s=0.001, max_s=0.01, retries=3)


def test_async_client_submits_polls_and_cancels(make_fast_api):
    client, store, queue, _ = make_fast_api(webhook_secret=SECRET, webhook_allowed_hosts="127.0.0.1")

    async def scenario():
        transport = httpx.ASGITransport(app=client.app)
        async with AsyncImpressClient("http://api.test", api_key="unused-in-open-mode", transport=transport) as impress:
            first = await impress.purify([IMAGE], params=PurifyOverrides(iters=5, schedule="fast"),
                                         idempotency_key="batch-1/a", webhook="http://127.0.0.1:9/hook",
                                         webhook_events=[WebhookEvent.start, "completed"])
            again = await impress.purify([IMAGE], params=PurifyOverrides(iters=5, schedule="fast"),
                                         idempotency_key="batch-1/a", webhook="http://127.0.0.1:9/hook",
                                         webhook_events=[WebhookEvent.start, "completed"])
            view = await impress.job(first)
            canceled = await impress.cancel(first.id)
            with pytest.raises(ImpressError) as refused:
                await impress.purify([("x.txt", b"not an image")])
            return first, again, view, canceled, refused.value

    first, again, view, canceled, refused = asyncio.run(scenario())
    assert isinstance(first, Accepted) and again.id == first.id and len(queue.sent) == 1
    record = store.get(first.id)
    assert record.params.iters == 5 and record.webhook.events == [WebhookEvent.start, WebhookEvent.completed]
    assert isinstance(view, JobView) and view.state == JobState.queued and canceled.state == JobState.canceled
    assert (refused.status, refused.code) == (415, ErrorCode.unsupported_image_format)


def scripted(answers: list[httpx.Response], seen: list[httpx.Request]) -> httpx.MockTransport:
    replies = iter(answers)
    return httpx.MockTransport(lambda request: (seen.append(request), next(replies))[1])


def job_json(state: str) -> dict:
    return {"id": "j1", "kind": "purify", "state": state, "progress": {"step": 0, "total": 0, "fraction": 0},
            "created_at": 1.0, "attempts": 1, "params": {}, "vae": "v", "perceptual": "dssim", "inputs": []}


def test_refusals_for_now_are_retried_after_their_retry_after():
    seen: list[httpx.Request] = []
    answers = [httpx.Response(503, headers={"Retry-After": "0"}, json={"error": {"code": "service_overloaded",
                                                                                "message": "busy"}}),
               httpx.Response(429, headers={"Retry-After": "0"}, json={"error": {"code": "rate_limited",
                                                                                "message": "slow down"}}),
               httpx.Response(202, json={"id": "j1", "state": "queued", "url": "http://api.test/v1/jobs/j1"})]
    with ImpressClient("http://api.test", api_key="k-123", backoff=QUICK, transport=scripted(answers, seen)) as impress:
        accepted = impress.detect(image_urls=["https://images.example/a.png"], idempotency_key="k1")
    assert accepted.id == "j1" and len(seen) == 3
    assert seen[-1].headers["authorization"] == "Bearer k-123" and seen[-1].headers["idempotency-key"] == "k1"
    assert seen[-1].read() == b"image_url=https%3A%2F%2Fimages.example%2Fa.png"


def test_refusals_that_last_raise_with_their_code():
    seen: list[httpx.Request] = []
    busy = httpx.Response(503, headers={"Retry-After": "0"}, json={"error": {"code": "service_overloaded",
                                                                            "message": "busy"}})
    with ImpressClient("http://api.test", backoff=QUICK, transport=scripted([busy] * 4, seen)) as impress:
        with pytest.raises(ImpressError) as refused:
            impress.job("j1")
    assert refused.value.code == ErrorCode.service_overloaded and len(seen) == QUICK.retries + 1


def test_wait_polls_until_the_job_is_finished():
    seen: list[httpx.Request] = []
    answers = [httpx.Response(200, json=job_json(state)) for state in ("queued", "running", "succeeded")]
    with ImpressClient("http://api.test", backoff=QUICK, transport=scripted(answers, seen)) as impress:
        assert impress.wait("j1").state == JobState.succeeded
    assert [r.url.path for r in seen] == ["/v1/jobs/j1"] * 3


def test_verify_webhook_gives_the_typed_payload():
    body = json.dumps({"type": "job.completed", "timestamp": "2026-01-01T00:00:00Z", "data": job_json("succeeded")})
    headers = signed_headers(SECRET, WebhookDelivery(id="msg_j1_completed", url="https://x.test/", body=body))
    payload = verify_webhook(body.encode(), headers, SECRET)
    assert payload.type == "job.completed" and payload.data.state == JobState.succeeded
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        verify_webhook(body.replace("succeeded", "failed"), headers, SECRET)


def test_the_client_sends_its_key_and_jobs_stay_with_it(make_fast_api):
    client, _, _, _ = make_fast_api(api_keys="key-a,key-b")
    transport = httpx.ASGITransport(app=client.app)

    async def scenario():
        async with AsyncImpressClient("http://api.test", transport=transport) as anonymous, \
                AsyncImpressClient("http://api.test", api_key="key-a", transport=transport) as owner, \
                AsyncImpressClient("http://api.test", api_key="key-b", transport=transport) as other:
            with pytest.raises(ImpressError) as unauthorized:
                await anonymous.purify([IMAGE])
            accepted = await owner.purify([IMAGE])
            with pytest.raises(ImpressError) as hidden:
                await other.job(accepted)
            return unauthorized.value, (await owner.job(accepted)).state, hidden.value

    unauthorized, state, hidden = asyncio.run(scenario())
    assert (unauthorized.status, unauthorized.code) == (401, ErrorCode.unauthorized)
    assert state == JobState.queued and (hidden.status, hidden.code) == (404, ErrorCode.job_not_found)


def sse_body(*events: tuple[str, dict]) -> bytes:
    return b"".join(f": ping\nid: {event_id}\ndata: {json.dumps(view)}\n\n".encode() for event_id, view in events)


def test_sync_events_resume_after_the_last_event_when_the_stream_drops():
    seen: list[httpx.Request] = []
    dropped = httpx.Response(200, headers={"content-type": "text/event-stream"},
                             content=sse_body(("1-0", job_json("queued")), ("2-0", job_json("running"))))
    rest = httpx.Response(200, headers={"content-type": "text/event-stream"},
                          content=sse_body(("3-0", job_json("succeeded"))))
    with ImpressClient("http://api.test", backoff=QUICK, transport=scripted([dropped, rest], seen)) as impress:
        events = list(impress.events("j1"))
    assert [(e.id, e.job.state.value) for e in events] == [("1-0", "queued"), ("2-0", "running"), ("3-0", "succeeded")]
    assert seen[0].url.path == "/v1/jobs/j1/events" and "last-event-id" not in seen[0].headers
    assert seen[1].headers["last-event-id"] == "2-0" and seen[1].headers["accept"] == "text/event-stream"


def test_async_events_follow_a_job_and_prefer_wait_answers_the_finished_job(make_fast_api):
    client, store, queue, _ = make_fast_api()

    async def scenario():
        transport = httpx.ASGITransport(app=client.app)
        async with AsyncImpressClient("http://api.test", transport=transport) as impress:
            accepted = await impress.purify([IMAGE], expires_in=600)
            worker = run_job_later(store, accepted.id, 0.2)
            states = [event.job.state.value async for event in impress.events(accepted)]
            worker.join()
            quick = await impress.purify([IMAGE], prefer_wait=1)
            with pytest.raises(ImpressError) as gone:
                await impress.delete_data(accepted)
                await impress.result(accepted, 0)
            return accepted, states, quick, gone.value

    accepted, states, quick, gone = asyncio.run(scenario())
    assert states == ["queued", "running", "running", "running", "succeeded"]
    assert store.get(accepted.id).ttl_s == 600
    assert isinstance(quick, Accepted)     # nothing ran it within the second
    assert (gone.status, gone.code) == (410, ErrorCode.gone)
