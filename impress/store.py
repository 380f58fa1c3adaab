"""Job records and blobs in Redis: the source of truth for every job, and the key layout (`Keys`).

State changes are atomic (Lua scripts check the current state and write in one step), so a cancel
racing a worker's start, or two deliveries of one message, can never both win; and no script ever
writes to a job that has expired, so a late message cannot bring back a record without its TTL.
"""
from __future__ import annotations

import hashlib
import json
import math
import time
import uuid
from dataclasses import dataclass
from typing import Optional, Protocol, Sequence

import redis
import redis.asyncio
from pydantic import BaseModel
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry

from . import events, store_scripts
from .contract import ErrorCode, JobState, WorkerBeat
from .jobspec import job_spec
from .records import InputImage, JobError, JobRecord, JobResult, RejectedInput, WebhookEvent, WebhookTarget


class Keys:
    """Every key the service writes, under one prefix (a setting; tests use their own).

    {p}:job:{id}            hash   the job record: the scalar fields of records.JobRecord, and
                                   `params`, `inputs`, `result` as JSON; `error_code`, `error_message`
    {p}:job:{id}:cancel     string set when a running job must stop
    {p}:job:{id}:events     stream the hash after each change (state, progress): GET /v1/jobs/{id}/events
    {p}:job:{id}:gone       string the owner's key id, kept `tombstone_ttl_s` past the job: 410 after expiry
    {p}:job:{id}:completed-webhook  string set (NX) by the one sender of the job's `completed` webhook
    {p}:blob:{sha256}       bytes  an input or result image, content-addressed
    {p}:blob:{sha256}:jobs  set    the jobs holding it: it lives as long as the longest-lived one
    {p}:jobs                zset   job ids by creation time (for operators)
    {p}:owner:{key id}:jobs zset   one API key's job ids by creation time (GET /v1/jobs)
    {p}:owner:{key id}:active set  its job ids that were queued or running when last looked at
    {p}:owner:{key id}:bytes  string  input bytes it has stored that have not expired (its quota)
    {p}:owner:{key id}:stored zset  "{bytes}:{job id}" by expiry time: what `bytes` gives back then
    {p}:idempotency:{key id}:{idempotency key}  string  "pending:{fingerprint}", then
                                   "{job id}:{fingerprint}" (Idempotency-Key header)
    {p}:celery:*            Celery's keys (queues as lists, unacked messages, bindings)
    {p}:stats               hash   service-wide counters for /metrics: "{kind}:{state}" transitions
                                   into each state, "{kind}:seconds" compute time of succeeded jobs,
                                   "{kind}:image_iterations" their optimisation steps times images
                                   "webhook:{outcome}" delivery attempts by outcome
    {p}:worker:{name}       string a live worker's last WorkerBeat (JSON): its queues and model report;
                                   rewritten every heartbeat, it expires a few beats after the last
    {p}:workers             set    the names of workers that beat, with the result TTL (an expired
                                   worker's name is dropped when the set is read)
    {p}:development-signer  string the development certificate chain and key that sign manifests (JSON)
                                   when no IMPRESS_SIGNING_CERT is set; made once, kept
    A job's keys have its own TTL (expires_in, at most the result TTL), counted from its last change;
    its blobs live as long as their longest-lived job; indexes have the result TTL, counters (a fixed
    set of fields) none; the job lists keep unexpired ids only, the newest MAX_LISTED_JOBS.
    """

    def __init__(self, prefix: str):
        self.prefix = prefix

    def job(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}"

    def cancel(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}:cancel"

    def events(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}:events"

    def tombstone(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}:gone"

    def completed_webhook(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}:completed-webhook"

    def blob(self, digest: str) -> str:
        return f"{self.prefix}:blob:{digest}"

    def jobs(self) -> str:
        return f"{self.prefix}:jobs"

    def stats(self) -> str:
        return f"{self.prefix}:stats"

    def owner_jobs(self, owner: str) -> str:
        return f"{self.prefix}:owner:{owner or '-'}:jobs"

    def owner_active(self, owner: str) -> str:
        return f"{self.prefix}:owner:{owner or '-'}:active"

    def owner_bytes(self, owner: str) -> str:
        return f"{self.prefix}:owner:{owner or '-'}:bytes"

    def owner_stored(self, owner: str) -> str:
        return f"{self.prefix}:owner:{owner or '-'}:stored"

    def idempotency(self, owner: str, key: str) -> str:
        return f"{self.prefix}:idempotency:{owner or '-'}:{key}"

    def celery_prefix(self) -> str:
        return f"{self.prefix}:celery:"

    def worker(self, name: str) -> str:
        return f"{self.prefix}:worker:{name}"

    def workers(self) -> str:
        return f"{self.prefix}:workers"

    def development_signer(self) -> str:
        return f"{self.prefix}:development-signer"

# Jobs each job list keeps (the newest): GET /v1/jobs shows at most 200.
MAX_LISTED_JOBS = 1000


class TooManyUnfinishedJobs(Exception):
    def __init__(self, unfinished: int):
        super().__init__(f"{unfinished} jobs of this key are queued or running")
        self.unfinished = unfinished


class StorageQuotaExceeded(Exception):
    def __init__(self, stored: int, adding: int, quota: int):
        super().__init__(f"this key stores {stored} bytes; {adding} more would pass its quota of {quota}")
        self.stored, self.adding, self.quota = stored, adding, quota


WEBHOOK_STATS = "webhook"   # the stats field prefix of webhook delivery attempts


def blob_digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def now() -> float:
    return round(time.time(), 3)


class JobEvents(Protocol):
    """Told of every transition a job's webhook can be about (impress.webhooks.WebhookNotifier)."""

    def __call__(self, store: "JobStore", job_id: str, event: WebhookEvent) -> None: ...


@dataclass(frozen=True)
class Retention:
    """How long the store keeps things: jobs at most `ttl_s` (each its own expires_in), their tombstones
    `tombstone_ttl_s` longer, at most `max_events` entries on a job's event stream."""

    ttl_s: int
    tombstone_ttl_s: int = 7 * 24 * 3600
    max_events: int = 1000

    @classmethod
    def from_settings(cls, settings) -> "Retention":
        return cls(settings.result_ttl_s, settings.tombstone_ttl_s, settings.max_job_events)


class JobStore:
    def __init__(self, client: redis.Redis, prefix: str, retention: Retention | int,
                 events: Optional[JobEvents] = None, aio: Optional[redis.asyncio.Redis] = None):
        self.r = client
        self.aio = aio     # the same Redis for async readers (event streams, Prefer: wait)
        self.keys = Keys(prefix)
        self.retention = retention if isinstance(retention, Retention) else Retention(retention)
        self.ttl_s = self.retention.ttl_s
        self.events = events
        self._transition = client.register_script(store_scripts.TRANSITION)
        self._start = client.register_script(store_scripts.START)
        self._create = client.register_script(store_scripts.CREATE)
        self._progress = client.register_script(store_scripts.PROGRESS)
        self._hold = client.register_script(store_scripts.HOLD)
        self._delete_data = client.register_script(store_scripts.DELETE_DATA)

    @classmethod
    def from_url(cls, url: str, prefix: str, retention: Retention | int,
                 events: Optional[JobEvents] = None) -> "JobStore":
        # After Redis restarts, pooled connections are dead: one quick retry on a fresh connection
        # hides that, while a Redis that is down still fails fast (connection refused) and the API
        # answers 503. Timeouts are not retried: they already took their time.
        retry = Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,))
        options = dict(socket_connect_timeout=2, health_check_interval=30)
        # The async client's reads block (XREAD BLOCK, at most event_stream.MAX_BLOCK_S): a longer timeout.
        return cls(redis.Redis.from_url(url, socket_timeout=5, retry=retry, **options), prefix, retention, events,
                   aio=redis.asyncio.Redis.from_url(url, socket_timeout=30, retry=AsyncRetry(NoBackoff(), 1), **options))

    def _touch_args(self, at: Optional[float] = None) -> list:
        """ARGV[1..4] of every script that changes a job (impress/store_scripts.py)."""
        return [at or now(), self.ttl_s, self.retention.tombstone_ttl_s, self.retention.max_events]

    # ------------------------------------------------------------ blobs
    def put_blob(self, data: bytes) -> str:
        digest = blob_digest(data)
        # Content-addressed: a second upload of the same bytes only refreshes the TTL.
        self.r.set(self.keys.blob(digest), data, ex=self.ttl_s)
        return digest

    def get_blob(self, digest: str) -> Optional[bytes]:
        return self.r.get(self.keys.blob(digest))

    # ------------------------------------------------------------ jobs
    def create(self, kind: str, params: BaseModel, inputs: list[InputImage], *, vae: str, perceptual: str,
               owner: str = "", max_unfinished: int = 0, rejected_inputs: Sequence[RejectedInput] = (),
               webhook: Optional[WebhookTarget] = None, request_id: Optional[str] = None,
               blobs: Sequence[bytes] = (), max_stored_bytes: int = 0, expires_in: Optional[int] = None) -> JobRecord:
        """Write a queued job and its input `blobs` (named by blob_digest in `inputs`) in one step, kept
        `expires_in` seconds after each change (at most, and by default, the store's TTL); nothing is
        written when its owner already has `max_unfinished` jobs queued or running (TooManyUnfinishedJobs)
        or the blobs would take its stored bytes past `max_stored_bytes` (StorageQuotaExceeded); 0: no limit."""
        ttl = min(expires_in or self.ttl_s, self.ttl_s)
        record = JobRecord(id=uuid.uuid4().hex, kind=kind, state=JobState.queued, params=params, vae=vae,
                           perceptual=perceptual, inputs=inputs, owner=owner,
                           rejected_inputs=list(rejected_inputs), webhook=webhook, request_id=request_id,
                           created_at=now(), ttl_s=ttl)
        fields = [v for pair in _to_hash(record).items() for v in pair]
        outcome, value = self._create(
            keys=[self.keys.job(record.id), self.keys.jobs(), self.keys.stats(), self.keys.owner_active(owner),
                  self.keys.owner_jobs(owner), self.keys.owner_bytes(owner), self.keys.owner_stored(owner),
                  *(self.keys.blob(blob_digest(data)) for data in blobs)],
            args=[*self._touch_args(record.created_at), self.ttl_s, max_unfinished, record.id, record.created_at,
                  record.kind, self.keys.job(""), max_stored_bytes, MAX_LISTED_JOBS, len(blobs), *blobs, *fields])
        if outcome == 1:
            raise TooManyUnfinishedJobs(int(value))
        if outcome == 2:
            raise StorageQuotaExceeded(int(value), sum(map(len, blobs)), max_stored_bytes)
        self.hold_blobs(record.id, ttl, [item.blob for item in inputs])
        return record.model_copy(update={"expires_at": record.created_at + ttl})

    def hold_blobs(self, job_id: str, ttl_s: int, blobs: Sequence[str]) -> None:
        """The job holds these blobs: each lives as long as the longest-lived job holding it."""
        if blobs:
            self._hold(keys=[self.keys.blob(b) for b in dict.fromkeys(blobs)], args=[job_id, ttl_s, self.keys.job("")])

    def delete_data(self, record: JobRecord) -> bool:
        """A finished job's inputs, results and event stream deleted now (bytes another live job holds
        stay for it); the record keeps its metadata and `data_deleted_at`. False: not finished yet."""
        blobs = [item.blob for item in record.inputs]
        if record.result is not None:
            blobs += [im.blob for im in record.result.images] + [f.blob for f in record.result.files]
        outcome = self._delete_data(keys=[self.keys.job(record.id)],
                                    args=[record.id, self.keys.job(""), now(), *map(self.keys.blob, blobs)])
        return outcome == 1

    def owner_of_gone(self, job_id: str) -> Optional[str]:
        """The owner of a job that existed and expired (its tombstone), else None."""
        owner = self.r.get(self.keys.tombstone(job_id))
        return owner.decode() if owner is not None else None

    def stored_bytes(self, owner: str) -> int:
        """Input bytes `owner` stored that may not have expired yet (expired ones leave at its next create)."""
        return int(self.r.get(self.keys.owner_bytes(owner)) or 0)

    def recent(self, owner: str, limit: int) -> list[JobRecord]:
        """The owner's most recent jobs, newest first (expired ones left out)."""
        ids = [i.decode() for i in self.r.zrevrange(self.keys.owner_jobs(owner), 0, max(limit, 1) - 1)]
        with self.r.pipeline(transaction=False) as p:
            for job_id in ids:
                p.hgetall(self.keys.job(job_id))
            raws = p.execute()
        return [record_from_hash({k.decode(): v.decode() for k, v in raw.items()}) for raw in raws if raw]

    def get(self, job_id: str) -> Optional[JobRecord]:
        raw = self.r.hgetall(self.keys.job(job_id))
        return record_from_hash({k.decode(): v.decode() for k, v in raw.items()}) if raw else None

    def transition(self, job_id: str, allowed: tuple[JobState, ...], to: JobState,
                   counters: Optional[dict[str, float]] = None, **fields) -> bool:
        """Move the job to `to` if it is in one of `allowed`, writing `fields` and adding `counters`
        to the service-wide stats, all in one atomic step."""
        counters = counters or {}
        args = [*self._touch_args(), ",".join(s.value for s in allowed), to.value, len(counters)]
        for k, v in counters.items():
            args += [k, v]
        for k, v in fields.items():
            args += [k, v]
        return self._transition(keys=[self.keys.job(job_id), self.keys.stats()], args=args) == 1

    def record(self, event: events.JobEvent) -> bool:
        """Apply what a worker reports, atomically. True when the job goes on as the event says: it
        runs now (Started), it goes on (Progress: False once it was cancelled or expired), or it
        reached that final state (Done, Failed, Canceled: False when it had already left `running`)."""
        match event:
            case events.Started():
                return self.start(event.job_id, event.max_attempts)[0]
            case events.Progress():
                return not self.progress(event.job_id, event.step, event.total)
            case events.Done():
                return self.succeed(event.job_id, event.result)
            case events.Failed():
                return self.fail(event.job_id, event.error.code, event.error.message)
            case events.Canceled():
                return self.finish_canceled(event.job_id)
        raise TypeError(f"not a job event: {event!r}")

    def start(self, job_id: str, max_attempts: int) -> tuple[bool, int]:
        """queued -> running, counting attempts; a redelivered running job (its worker died) restarts
        until max_attempts. Returns (started, attempt); a job that expired is (False, 0)."""
        outcome, attempt = self._start(keys=[self.keys.job(job_id), self.keys.stats()],
                                       args=[*self._touch_args(), max_attempts])
        if outcome in (1, 2):   # running, or failed just now (worker_lost)
            self.emit(job_id, WebhookEvent.start if outcome == 1 else WebhookEvent.completed)
        return outcome == 1, int(attempt)

    def progress(self, job_id: str, step: int, total: int) -> bool:
        """Record progress; True when the job must stop (cancel requested, or the job is gone)."""
        stop = self._progress(keys=[self.keys.job(job_id), self.keys.cancel(job_id)],
                              args=[*self._touch_args(), step, total]) != 0
        if not stop:
            self.emit(job_id, WebhookEvent.progress)
        return stop

    def succeed(self, job_id: str, result: JobResult) -> bool:
        counters = {"seconds": result.seconds, "image_iterations": sum(im.iterations for im in result.images)}
        moved = self.transition(job_id, (JobState.running,), JobState.succeeded, counters=counters,
                                finished_at=now(), result=result.model_dump_json())
        if moved and (record := self.get(job_id)) is not None:
            self.hold_blobs(job_id, record.ttl_s or self.ttl_s,
                            [im.blob for im in result.images] + [f.blob for f in result.files])
        return self.finished(job_id, moved)

    def finished(self, job_id: str, moved: bool) -> bool:
        """After a transition into a final state: the `completed` event when it happened."""
        if moved:
            self.emit(job_id, WebhookEvent.completed)
        return moved

    def emit(self, job_id: str, event: WebhookEvent) -> None:
        if self.events is not None:
            self.events(self, job_id, event)

    def count_webhook(self, outcome: str) -> None:
        self.r.hincrby(self.keys.stats(), f"{WEBHOOK_STATS}:{outcome}", 1)

    def stats(self) -> dict[str, float]:
        """The service-wide counters (Keys.stats)."""
        return {k.decode(): float(v) for k, v in self.r.hgetall(self.keys.stats()).items()}

    def queue_length(self, queue: str) -> int:
        """Messages waiting in a Celery queue (the Redis transport keeps each queue as a list)."""
        return int(self.r.llen(self.keys.celery_prefix() + queue))

    def fail(self, job_id: str, code: ErrorCode, message: str) -> bool:
        return self.finished(job_id, self.transition(job_id, (JobState.queued, JobState.running), JobState.failed,
                                                     finished_at=now(), error_code=code.value,
                                                     error_message=message[:2000]))

    def cancel(self, job_id: str) -> Optional[JobRecord]:
        """A queued job is canceled at once (it will never run); a running one gets the flag its
        loop checks. Returns the record after the call, None for an unknown job."""
        if not self.finished(job_id, self.transition(job_id, (JobState.queued,), JobState.canceled, finished_at=now())):
            self.r.set(self.keys.cancel(job_id), 1, ex=self.ttl_s)
        return self.get(job_id)

    def finish_canceled(self, job_id: str) -> bool:
        return self.finished(job_id, self.transition(job_id, (JobState.running,), JobState.canceled, finished_at=now()))

    def claim_completed_webhook(self, job_id: str) -> bool:
        """True for exactly one caller per job: the job's `completed` webhook is sent at most once,
        even when the job ran twice (a worker died after finishing it, before the ack)."""
        return bool(self.r.set(self.keys.completed_webhook(job_id), 1, nx=True, ex=self.ttl_s))

    def cancel_requested(self, job_id: str) -> bool:
        return bool(self.r.exists(self.keys.cancel(job_id)))

    # ------------------------------------------------------------ worker heartbeats
    def beat(self, beat: WorkerBeat, alive_s: float) -> None:
        """This worker counts as alive for `alive_s` more seconds, unless it beats again."""
        alive_ms = max(1, round(alive_s * 1000))
        with self.r.pipeline() as p:
            p.set(self.keys.worker(beat.name), beat.model_dump_json(), px=alive_ms)
            p.sadd(self.keys.workers(), beat.name)
            # Names only (an expired worker's is dropped when read): kept as long as the indexes, so a
            # worker with a shorter beat never cuts the set from under one with a longer.
            p.expire(self.keys.workers(), max(self.ttl_s, math.ceil(alive_s)))
            p.execute()

    def end_beats(self, name: str) -> None:
        """A worker that stops is not alive from now on (rather than until its last beat expires)."""
        with self.r.pipeline() as p:
            p.delete(self.keys.worker(name))
            p.srem(self.keys.workers(), name)
            p.execute()

    def live_workers(self) -> list[WorkerBeat]:
        """The last beat of every worker whose beat has not expired, by name."""
        names = sorted(name.decode() for name in self.r.smembers(self.keys.workers()))
        if not names:
            return []
        found = self.r.mget([self.keys.worker(name) for name in names])
        # A killed worker's name outlives its key in the set: dropped here (every beat adds it back).
        if expired := [name for name, raw in zip(names, found) if raw is None]:
            self.r.srem(self.keys.workers(), *expired)
        return [WorkerBeat.model_validate_json(raw) for raw in found if raw is not None]


# The hash keeps scalars as they are and the nested parts as JSON, so a poll reads one key.
_JSON_FIELDS = ("params", "inputs", "result", "rejected_inputs", "webhook")


def _to_hash(record: JobRecord) -> dict[str, str | int | float]:
    data = record.model_dump(mode="json", exclude_none=True, exclude={"error", *_JSON_FIELDS})
    data.update(params=record.params.model_dump_json(),
                inputs=json.dumps([item.model_dump(mode="json") for item in record.inputs]),
                rejected_inputs=json.dumps([item.model_dump(mode="json") for item in record.rejected_inputs]))
    if record.webhook is not None:
        data["webhook"] = record.webhook.model_dump_json()
    return data


def record_from_hash(raw: dict[str, str]) -> JobRecord:
    """A record from its hash (or from an entry of its event stream, which copies the hash)."""
    spec = job_spec(raw["kind"])
    error = JobError(code=raw["error_code"], message=raw.get("error_message", "")) if "error_code" in raw else None
    result = JobResult.model_validate_json(raw["result"]) if "result" in raw else None
    scalars = {k: v for k, v in raw.items() if k in JobRecord.model_fields and k not in _JSON_FIELDS}
    webhook = WebhookTarget.model_validate_json(raw["webhook"]) if "webhook" in raw else None
    return JobRecord(**scalars, params=spec.params.model_validate_json(raw["params"]),
                     inputs=json.loads(raw["inputs"]), rejected_inputs=json.loads(raw.get("rejected_inputs", "[]")),
                     webhook=webhook, error=error, result=result)
