"""Job records and blobs in Redis: the source of truth for every job (see contract.Keys).

State changes are atomic (a Lua script checks the current state and writes in one step), so a
cancel racing a worker's start, or two deliveries of one message, can never both win.
"""
from __future__ import annotations

import hashlib
import json
import time
import uuid
from typing import Optional

import redis

from .contract import ErrorCode, InputImage, JobKind, JobResult, JobState, Keys

# KEYS[1] job hash, KEYS[2] stats hash; ARGV[1] allowed current states (comma list); ARGV[2] new
# state; ARGV[3] TTL s; ARGV[4] n, then n counter/amount pairs, then field/value pairs. Counts the
# transition under "{kind}:{state}" and adds each amount under "{kind}:{counter}", in the same step
# as the state change, so /metrics never lags a finished job. Returns 1 when the transition
# happened, 0 otherwise.
_TRANSITION = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return -1 end
local allowed = ',' .. ARGV[1] .. ','
if not string.find(allowed, ',' .. state .. ',', 1, true) then return 0 end
local fields_from = 5 + 2 * tonumber(ARGV[4])
redis.call('HSET', KEYS[1], 'state', ARGV[2])
for i = fields_from, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
local kind = redis.call('HGET', KEYS[1], 'kind')
redis.call('HINCRBY', KEYS[2], kind .. ':' .. ARGV[2], 1)
for i = 5, fields_from - 1, 2 do redis.call('HINCRBYFLOAT', KEYS[2], kind .. ':' .. ARGV[i], ARGV[i + 1]) end
return 1
"""


def now() -> float:
    return round(time.time(), 3)


class JobStore:
    def __init__(self, client: redis.Redis, prefix: str, ttl_s: int):
        self.r = client
        self.keys = Keys(prefix)
        self.ttl_s = ttl_s
        self._transition = client.register_script(_TRANSITION)

    @classmethod
    def from_url(cls, url: str, prefix: str, ttl_s: int) -> "JobStore":
        return cls(redis.Redis.from_url(url, socket_timeout=5, health_check_interval=30), prefix, ttl_s)

    # ------------------------------------------------------------ blobs
    def put_blob(self, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        # Content-addressed: a second upload of the same bytes only refreshes the TTL.
        self.r.set(self.keys.blob(digest), data, ex=self.ttl_s)
        return digest

    def get_blob(self, digest: str) -> Optional[bytes]:
        return self.r.get(self.keys.blob(digest))

    # ------------------------------------------------------------ jobs
    def create(self, kind: JobKind, params: dict, inputs: list[InputImage]) -> str:
        job_id = uuid.uuid4().hex
        record = {
            "id": job_id, "kind": kind.value, "state": JobState.queued.value,
            "params": json.dumps(params), "inputs": json.dumps([i.model_dump() for i in inputs]),
            "created_at": now(), "progress_step": 0, "progress_total": 0, "attempts": 0,
        }
        key = self.keys.job(job_id)
        with self.r.pipeline() as p:
            p.hset(key, mapping=record)
            p.expire(key, self.ttl_s)
            p.zadd(self.keys.jobs(), {job_id: record["created_at"]})
            p.expire(self.keys.jobs(), self.ttl_s)
            p.hincrby(self.keys.stats(), f"{kind.value}:{JobState.queued.value}", 1)
            p.execute()
        return job_id

    def get(self, job_id: str) -> Optional[dict]:
        raw = self.r.hgetall(self.keys.job(job_id))
        if not raw:
            return None
        rec = {k.decode(): v.decode() for k, v in raw.items()}
        for field in ("params", "inputs", "result"):
            if field in rec:
                rec[field] = json.loads(rec[field])
        for field in ("progress_step", "progress_total", "attempts"):
            rec[field] = int(rec.get(field, 0))
        return rec

    def transition(self, job_id: str, allowed: tuple[JobState, ...], to: JobState,
                   counters: Optional[dict[str, float]] = None, **fields) -> bool:
        """Move the job to `to` if it is in one of `allowed`, writing `fields` and adding `counters`
        to the service-wide stats, all in one atomic step."""
        counters = counters or {}
        args = [",".join(s.value for s in allowed), to.value, self.ttl_s, len(counters)]
        for k, v in counters.items():
            args += [k, v]
        for k, v in fields.items():
            args += [k, v if isinstance(v, (str, int, float)) else json.dumps(v)]
        return self._transition(keys=[self.keys.job(job_id), self.keys.stats()], args=args) == 1

    def start(self, job_id: str, max_attempts: int) -> tuple[bool, int]:
        """queued -> running, counting attempts; a redelivered running job (its worker died) restarts
        until max_attempts. Returns (started, attempt)."""
        attempt = self.r.hincrby(self.keys.job(job_id), "attempts", 1)
        if attempt > max_attempts:
            self.transition(job_id, (JobState.queued, JobState.running), JobState.failed,
                            finished_at=now(), error_code=ErrorCode.worker_lost.value,
                            error_message=f"the worker running this job died {attempt - 1} times")
            return False, attempt
        started = self.transition(job_id, (JobState.queued, JobState.running), JobState.running,
                                  started_at=now(), progress_step=0)
        return started, attempt

    def progress(self, job_id: str, step: int, total: int) -> bool:
        """Record progress; True when the job must stop (cancel requested or job gone)."""
        key = self.keys.job(job_id)
        with self.r.pipeline() as p:
            p.hset(key, mapping={"progress_step": step, "progress_total": total})
            p.exists(self.keys.cancel(job_id))
            p.hget(key, "state")
            _, cancel, state = p.execute()
        return bool(cancel) or state != JobState.running.value.encode()

    def succeed(self, job_id: str, result: JobResult) -> bool:
        counters = {"seconds": result.seconds, "image_iterations": sum(im.iterations for im in result.images)}
        return self.transition(job_id, (JobState.running,), JobState.succeeded, counters=counters,
                               finished_at=now(), result=result.model_dump_json())

    def stats(self) -> dict[str, float]:
        """The service-wide counters (contract.Keys.stats)."""
        return {k.decode(): float(v) for k, v in self.r.hgetall(self.keys.stats()).items()}

    def queue_length(self, queue: str) -> int:
        """Messages waiting in a Celery queue (the Redis transport keeps each queue as a list)."""
        return int(self.r.llen(queue))

    def fail(self, job_id: str, code: ErrorCode, message: str) -> bool:
        return self.transition(job_id, (JobState.queued, JobState.running), JobState.failed,
                               finished_at=now(), error_code=code.value, error_message=message[:2000])

    def cancel(self, job_id: str) -> Optional[str]:
        """A queued job is canceled at once (it will never run); a running one gets the flag its
        loop checks. Returns the state after the call, None for an unknown job."""
        if self.transition(job_id, (JobState.queued,), JobState.canceled, finished_at=now()):
            return JobState.canceled.value
        self.r.set(self.keys.cancel(job_id), 1, ex=self.ttl_s)
        rec = self.get(job_id)
        return rec["state"] if rec else None

    def finish_canceled(self, job_id: str) -> bool:
        return self.transition(job_id, (JobState.running,), JobState.canceled, finished_at=now())

    def cancel_requested(self, job_id: str) -> bool:
        return bool(self.r.exists(self.keys.cancel(job_id)))

    def ping(self) -> bool:
        try:
            return bool(self.r.ping())
        except redis.RedisError:
            return False
