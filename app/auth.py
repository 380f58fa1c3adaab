"""Who is calling: API keys (Authorization: Bearer <key>, or X-API-Key) and per-key rate limits.

Once keys are configured (IMPRESS_API_KEYS) every /v1 endpoint needs one; IMPRESS_AUTH=disabled, or
no keys at all, is an open service (logged loudly at start). A caller is known by its key's id
(impress.api_keys): jobs record it as their owner, and every job URL answers 404 to any other key.
Rate limits are counted in Redis with the `limits` library, so every API replica enforces the same
numbers; their state goes out as RateLimit-* headers (IETF draft), and past the limit a 429 with
Retry-After.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import anyio
import redis
from fastapi import Request
from limits import parse
from limits.storage import RedisStorage
from limits.strategies import SlidingWindowCounterRateLimiter

from impress.contract import ErrorCode
from impress.api_keys import known_key_id, parse_api_keys
from impress.settings import Settings

from .errors import ApiError

log = logging.getLogger("impress.api")


@dataclass(frozen=True)
class Caller:
    owner: str  # the key's id; "" in an open service


def presented_key(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return request.headers.get("x-api-key") or None


class Authenticator:
    def __init__(self, settings: Settings, client: redis.Redis):
        self.key_ids = parse_api_keys(settings.api_keys)
        self.required = settings.auth == "keys" and bool(self.key_ids)
        if not self.required:
            log.warning("the API is open: no API key is required (%s)",
                        "IMPRESS_AUTH=disabled" if settings.auth == "disabled" else "IMPRESS_API_KEYS is empty")
        self.rate = parse(settings.rate_limit)
        storage = RedisStorage("redis://", connection_pool=client.connection_pool,
                               key_prefix=f"{settings.key_prefix}:ratelimit")
        self.limiter = SlidingWindowCounterRateLimiter(storage)

    def identify(self, request: Request) -> Caller:
        """The caller, or 401 when a key is required and missing or wrong."""
        if not self.required:
            return Caller(owner="")
        key = presented_key(request)
        key_id = known_key_id(key, self.key_ids) if key else None
        if key_id is None:
            raise ApiError(401, ErrorCode.unauthorized,
                           "a valid API key is required: send it as 'Authorization: Bearer <key>' or 'X-API-Key'"
                           if key is None else "this API key is not valid",
                           headers={"WWW-Authenticate": "Bearer"})
        return Caller(owner=key_id)

    def admit(self, caller: Caller) -> dict[str, str]:
        """Count one request of `caller`: the RateLimit-* headers, or 429 past the limit."""
        allowed = self.limiter.hit(self.rate, caller.owner or "-")
        reset_at, remaining = self.limiter.get_window_stats(self.rate, caller.owner or "-")
        reset = max(0, math.ceil(reset_at - time.time()))
        headers = {"RateLimit-Limit": str(self.rate.amount), "RateLimit-Remaining": str(max(0, remaining)),
                   "RateLimit-Reset": str(reset)}
        if not allowed:
            raise ApiError(429, ErrorCode.rate_limited, f"rate limit of {self.rate} reached for this key; "
                           f"retry in {max(reset, 1)} s", headers={**headers, "Retry-After": str(max(reset, 1))})
        return headers


async def authorize(request: Request) -> Caller:
    """The /v1 routers' dependency: the caller (app.guard identified it from the headers, and counted a
    submission against its limit before its body was read) with this request counted. On the event loop:
    only counting a request not counted yet (Redis) goes to a thread."""
    auth: Authenticator = request.app.state.auth
    caller = getattr(request.state, "caller", None) or auth.identify(request)
    request.state.caller = caller
    if getattr(request.state, "rate_limit_headers", None) is None:
        request.state.rate_limit_headers = await anyio.to_thread.run_sync(auth.admit, caller)
    return caller
