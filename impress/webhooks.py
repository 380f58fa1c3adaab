"""Webhooks, per the Standard Webhooks spec (https://www.standardwebhooks.com).

The store tells `WebhookNotifier` of every transition (start, progress, a final state); the notifier
builds the body from the job record -- the job exactly as `GET /v1/jobs/{id}` shows it
(impress.views) -- and sends one `WebhookDelivery` message to the webhook queue. A light worker
serving that queue runs `deliver` (HTTP only, through the SSRF guard), retried with exponential
backoff. The GPU worker's loop never waits on a receiver.

Each delivery is signed with the secret of the API key that created the job (`key_webhook_secret`:
its IMPRESS_WEBHOOK_KEY_SECRETS entry, else derived from the master IMPRESS_WEBHOOK_SECRET and the
key's id; an open service signs with the master), so no tenant can sign, or have the service sign,
what another tenant's receiver accepts. Headers `webhook-id` (the same on
every retry, so receivers can drop repeats), `webhook-timestamp` (of the attempt) and
`webhook-signature` = `v1,<base64 HMAC-SHA256 of id.timestamp.body>`, by the `standardwebhooks`
package (`impress.client.verify_webhook` checks them). A job's `completed` webhook is sent at most
once (JobStore.claim_completed_webhook), however often its task ran.
"""
from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import logging
import random
import secrets
import time
from datetime import datetime, timezone
from typing import Callable, Optional

import httpx
import standardwebhooks
from pydantic import BaseModel

from .api_keys import parse_key_secrets
from .records import JobRecord, WebhookEvent
from .settings import Settings
from .ssrf import UrlGuard, UrlRefused
from .store import JobStore
from .views import WebhookPayload, job_view

log = logging.getLogger("impress.webhooks")

MAX_RETRY_DELAY_S = 600.0


class WebhookDelivery(BaseModel):
    """One event for one receiver: the webhook queue's message."""

    id: str       # webhook-id: the same on every retry of this event
    url: str
    body: str     # JSON of a WebhookPayload, signed and sent byte for byte
    owner: str = ""   # the id of the key whose job it is: its secret signs


DERIVATION_LABEL = b"impress webhook secret of key "


def key_webhook_secret(settings: Settings, owner: str) -> Optional[str]:
    """The secret that signs the webhooks of `owner`'s jobs (None: webhooks are off for it)."""
    configured = parse_key_secrets(settings.webhook_key_secrets).get(owner)
    if configured or not settings.webhook_secret or not owner:
        return configured or settings.webhook_secret
    master = base64.b64decode(settings.webhook_secret.removeprefix("whsec_"))
    return "whsec_" + base64.b64encode(hmac.new(master, DERIVATION_LABEL + owner.encode(), hashlib.sha256).digest()).decode()


class DeliveryOutcome(str, enum.Enum):
    delivered = "delivered"
    retry = "retry"          # no answer, a timeout, 408, 429 or 5xx
    gave_up = "gave_up"      # refused by the SSRF guard, any other 3xx/4xx, or no secret to sign with


def new_webhook_secret() -> str:
    """A fresh signing secret in the whsec_<base64> form (32 random bytes)."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def build_delivery(record: JobRecord, event: WebhookEvent) -> WebhookDelivery:
    assert record.webhook is not None
    suffix = {WebhookEvent.start: f"_{record.attempts}", WebhookEvent.progress: f"_{record.progress_step}",
              WebhookEvent.completed: ""}[event]
    payload = WebhookPayload(type=f"job.{event.value}", timestamp=datetime.now(timezone.utc),
                             data=job_view(record, f"{record.webhook.jobs_url}/{record.id}"))
    return WebhookDelivery(id=f"msg_{record.id}_{event.value}{suffix}", url=record.webhook.url,
                           body=payload.model_dump_json(), owner=record.owner)


def signed_headers(secret: str, delivery: WebhookDelivery, at: Optional[datetime] = None) -> dict[str, str]:
    at = at or datetime.now(timezone.utc)
    signature = standardwebhooks.Webhook(secret).sign(delivery.id, at, delivery.body)
    return {"webhook-id": delivery.id, "webhook-timestamp": str(int(at.timestamp())),
            "webhook-signature": signature, "content-type": "application/json"}


def deliver(delivery: WebhookDelivery, settings: Settings, guard: Optional[UrlGuard] = None) -> DeliveryOutcome:
    """One attempt; the caller retries on DeliveryOutcome.retry."""
    secret = key_webhook_secret(settings, delivery.owner)
    if not secret:
        log.error("webhook %s not sent: no secret to sign it with (IMPRESS_WEBHOOK_SECRET)", delivery.id)
        return DeliveryOutcome.gave_up
    guard = guard or UrlGuard.for_webhooks(settings)
    try:
        status = guard.post(delivery.url, delivery.body.encode(), signed_headers(secret, delivery),
                            timeout_s=settings.webhook_timeout_s)
    except UrlRefused as exc:
        log.warning("webhook %s refused: %s", delivery.id, exc.message)
        return DeliveryOutcome.gave_up
    except httpx.HTTPError as exc:
        log.info("webhook %s to %s failed: %s", delivery.id, delivery.url, exc)
        return DeliveryOutcome.retry
    log.info("webhook %s to %s: HTTP %d", delivery.id, delivery.url, status)
    if 200 <= status < 300:
        return DeliveryOutcome.delivered
    return DeliveryOutcome.retry if status in (408, 429) or status >= 500 else DeliveryOutcome.gave_up


def retry_delay(retries: int, base_s: float) -> float:
    """Exponential backoff with jitter (half to all of base * 2^retries), at most 10 minutes."""
    return min(base_s * 2 ** retries, MAX_RETRY_DELAY_S) * random.uniform(0.5, 1.0)


class WebhookNotifier:
    """The store's JobEvents: turns a job's transitions into deliveries on the webhook queue.
    Progress events of a job are at least `progress_every_s` apart (counted in this process)."""

    def __init__(self, send: Callable[[WebhookDelivery], None], progress_every_s: float):
        self.send = send
        self.progress_every_s = progress_every_s
        self._last_progress: dict[str, float] = {}

    def __call__(self, store: JobStore, job_id: str, event: WebhookEvent) -> None:
        if event is WebhookEvent.progress and not self._progress_due(job_id):
            return
        try:
            self._notify(store, job_id, event)
        except Exception:  # a webhook must never fail the job or the request that moved it
            log.exception("webhook %s of job %s not queued", event.value, job_id)

    def _notify(self, store: JobStore, job_id: str, event: WebhookEvent) -> None:
        if event is WebhookEvent.completed:
            self._last_progress.pop(job_id, None)
        record = store.get(job_id)
        if record is None or record.webhook is None or event not in record.webhook.events:
            return
        if event is WebhookEvent.completed and not store.claim_completed_webhook(job_id):
            log.info("completed webhook of job %s already sent", job_id)
            return
        self.send(build_delivery(record, event))

    def _progress_due(self, job_id: str) -> bool:
        now = time.monotonic()
        if now - self._last_progress.get(job_id, float("-inf")) < self.progress_every_s:
            return False
        self._last_progress[job_id] = now
        return True
