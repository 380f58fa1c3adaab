"""Finding 5: each API key's webhooks are signed with its own secret, shown only to it, so tenant A can
neither forge a webhook to B's receiver nor have the service sign one for it."""
from __future__ import annotations

from impress.client import ImpressClient
from impress.records import WebhookEvent
from impress.settings import Settings
from impress.ssrf import AllowList, UrlGuard
from impress.webhooks import DeliveryOutcome, build_delivery, deliver
from tests.hostile.conftest import IMAGE, TENANT_A, TENANT_B, bearer, served
from tests.loopback import WEBHOOK_SECRET, WebhookReceiver


def test_each_key_has_its_own_secret_and_cannot_sign_for_another(keyed_api):
    client, store, queue, settings = keyed_api(webhook_secret=WEBHOOK_SECRET, webhook_allowed_hosts="127.0.0.1")
    assert client.get("/v1/webhook-secret").status_code == 401
    secret_a = client.get("/v1/webhook-secret", headers=bearer(TENANT_A)).json()["secret"]
    secret_b = client.get("/v1/webhook-secret", headers=bearer(TENANT_B)).json()["secret"]
    assert len({secret_a, secret_b, WEBHOOK_SECRET}) == 3 and secret_b.startswith("whsec_")
    with served(client.app) as (host, port), ImpressClient(f"http://{host}:{port}", TENANT_A) as impress:
        assert impress.webhook_secret() == secret_a
    guard = UrlGuard(AllowList.parse("127.0.0.1"), https_only=False)
    with WebhookReceiver(secret_b) as receiver_b:
        # A aims its own job's webhook at B's receiver and cancels the job: the service signs A's event...
        submitted = client.post("/v1/purify", headers=bearer(TENANT_A), files={"images": ("a.png", IMAGE)},
                                data={"webhook": receiver_b.url})
        assert submitted.status_code == 202, submitted.text
        client.delete(f"/v1/jobs/{submitted.json()['id']}", headers=bearer(TENANT_A))
        (delivery,) = queue.webhooks
        # ... with A's secret, which B's receiver refuses; B's own job's webhook is accepted.
        assert deliver(delivery, settings, guard) == DeliveryOutcome.gave_up and receiver_b.refused == 1
        own = client.post("/v1/purify", headers=bearer(TENANT_B), files={"images": ("b.png", IMAGE)},
                          data={"webhook": receiver_b.url})
        assert deliver(build_delivery(store.get(own.json()["id"]), WebhookEvent.completed), settings, guard) \
            == DeliveryOutcome.delivered
        assert [hook.payload.data.id for hook in receiver_b.received] == [own.json()["id"]]


def test_configured_key_secret_wins(keyed_api):
    configured = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo0NTY3ODk="
    client, *_ = keyed_api(webhook_secret=WEBHOOK_SECRET, webhook_key_secrets=f"{TENANT_A}={configured}")
    assert client.get("/v1/webhook-secret", headers=bearer(TENANT_A)).json()["secret"] == configured
    assert Settings(_env_file=None, webhook_key_secrets=f"{TENANT_A}={configured}").webhook_secret is None
