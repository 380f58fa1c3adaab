"""Per-key slots for image URL fetches in progress, counted in Redis so every API replica holds a key
to the same number (IMPRESS_MAX_CONCURRENT_FETCHES_PER_KEY). A slot expires on its own after the
fetch's deadline, so a replica that died mid-fetch leaks nothing.

Key: {p}:owner:{key id}:fetching  zset  slot token -> the time it expires at
"""
from __future__ import annotations

import time
import uuid
from typing import Optional

import redis

# KEYS[1] the owner's slots; ARGV[1] now, ARGV[2] expiry time, ARGV[3] limit, ARGV[4] slots wanted,
# ARGV[5] token. Expired slots are dropped first. Returns 1 when the slots were taken, else 0.
_ACQUIRE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
local wanted = tonumber(ARGV[4])
if redis.call('ZCARD', KEYS[1]) + wanted > tonumber(ARGV[3]) then return 0 end
for i = 1, wanted do redis.call('ZADD', KEYS[1], ARGV[2], ARGV[5] .. ':' .. i) end
redis.call('EXPIREAT', KEYS[1], math.ceil(tonumber(ARGV[2])))
return 1
"""


class FetchSlots:
    def __init__(self, client: redis.Redis, prefix: str):
        self.r, self.prefix = client, prefix
        self._acquire = client.register_script(_ACQUIRE)

    def key(self, owner: str) -> str:
        return f"{self.prefix}:owner:{owner or '-'}:fetching"

    def acquire(self, owner: str, wanted: int, limit: int, hold_s: float) -> Optional[list[str]]:
        """`wanted` slots for at most `hold_s`, or None when the owner would pass `limit`."""
        now, token = time.time(), uuid.uuid4().hex
        if not self._acquire(keys=[self.key(owner)], args=[now, now + hold_s, limit, wanted, token]):
            return None
        return [f"{token}:{i}" for i in range(1, wanted + 1)]

    def release(self, owner: str, slots: list[str]) -> None:
        if slots:
            self.r.zrem(self.key(owner), *slots)
