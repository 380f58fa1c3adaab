"""GET /v1/webhook-secret: the secret that signs the webhooks of the caller's jobs, shown to the key's
owner only (each key has its own: impress.webhooks.key_webhook_secret)."""
from __future__ import annotations

from fastapi import APIRouter, Depends

from impress.contract import ErrorCode
from impress.settings import Settings
from impress.views import WebhookSecret
from impress.webhooks import key_webhook_secret

from ..auth import Caller, authorize
from ..deps import get_settings
from ..errors import ApiError, error_responses

router = APIRouter(prefix="/v1", tags=["webhooks"])


@router.get("/webhook-secret", response_model=WebhookSecret, responses=error_responses(422),
            summary="The signing secret of this API key's webhooks")
def get_webhook_secret(settings: Settings = Depends(get_settings), caller: Caller = Depends(authorize)) -> WebhookSecret:
    secret = key_webhook_secret(settings, caller.owner)
    if not secret:
        raise ApiError(422, ErrorCode.webhooks_disabled, "this service has no webhook secret (IMPRESS_WEBHOOK_SECRET)")
    return WebhookSecret(secret=secret)
