"""Idempotency-Key (IETF httpapi draft): a retried POST returns the job the first one made.

The key is claimed atomically (SET NX) with the request's fingerprint, then pointed at the job once
it exists; it expires with the job. While the first request with the key is still being accepted,
any other is 409; after, the same key with another body is 422.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Optional

from pydantic import BaseModel

from impress.contract import ErrorCode
from impress.records import InputImage
from impress.store import JobStore

from .errors import ApiError

IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,255}")  # printable ASCII without spaces
PENDING = "pending"


def fingerprint(kind: str, params: BaseModel, uploads: list[tuple[bytes, InputImage]], named: str = "") -> str:
    """What makes two submissions the same request: kind, parameters, each image's role, name and
    bytes (not the multipart encoding, whose boundary differs on every send), and what the request
    `named` (image URLs, webhook)."""
    digest = hashlib.sha256(f"{kind}\n{params.model_dump_json()}\n{named}".encode())
    for data, meta in uploads:
        digest.update(f"\n{meta.role.value}:{meta.name}:".encode() + hashlib.sha256(data).digest())
    return digest.hexdigest()


@dataclass
class Claim:
    """An Idempotency-Key claimed for one submission: `existing` is the job an earlier identical
    request made (then nothing else is to be done)."""

    store: JobStore
    redis_key: str
    request_print: str
    ttl_s: int
    existing: Optional[str] = None

    def complete(self, job_id: str) -> None:
        self.store.r.set(self.redis_key, f"{job_id}:{self.request_print}", ex=self.ttl_s)

    def release(self) -> None:
        """The submission failed: a retry with the key may try again."""
        self.store.r.delete(self.redis_key)


def claim(store: JobStore, owner: str, key: str, request_print: str, ttl_s: int) -> Claim:
    redis_key = store.keys.idempotency(owner, key)
    claimed = Claim(store, redis_key, request_print, ttl_s)
    if store.r.set(redis_key, f"{PENDING}:{request_print}", nx=True, ex=ttl_s):
        return claimed
    state, _, earlier_print = (store.r.get(redis_key) or f"{PENDING}:".encode()).decode().partition(":")
    if state == PENDING:
        raise ApiError(409, ErrorCode.idempotency_key_in_use, "a request with this Idempotency-Key is still "
                       "being accepted; retry shortly", headers={"Retry-After": "1"})
    if earlier_print != request_print:
        raise ApiError(422, ErrorCode.idempotency_key_reused,
                       "this Idempotency-Key was used with another request; use a new key for a new request")
    claimed.existing = state
    return claimed
