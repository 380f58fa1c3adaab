"""Reading a job's event stream (`Keys.events`): what GET /v1/jobs/{id}/events sends, and what a
`Prefer: wait=N` POST waits on. Each entry is the job's hash right after one state change or progress
write, written by the same Lua step (impress/store_scripts.py), so an event is the job exactly as it
was then, and its entry id is where a reader resumes (Last-Event-ID).

Reads block on Redis (XREAD BLOCK) through the store's async client: a waiting reader holds no thread.
"""
from __future__ import annotations

import asyncio
import re
from typing import AsyncIterator, Optional

from pydantic import BaseModel

from .records import JobRecord
from .store import JobStore, record_from_hash

EVENT_ID = re.compile(r"\d{1,20}-\d{1,20}")   # a stream entry id: milliseconds-sequence
MAX_BLOCK_S = 5.0    # the longest one read blocks: a job that expires meanwhile is noticed this soon


class JobSnapshot(BaseModel):
    id: Optional[str]       # the stream entry id; None for the current record of a job without a stream
    record: JobRecord


async def read_events(store: JobStore, job_id: str, after: str, block_s: float) -> list[JobSnapshot]:
    """Entries after `after` ("0-0": from the first kept), waiting up to `block_s` for one."""
    answer = await store.aio.xread({store.keys.events(job_id): after},
                                   block=max(1, int(min(block_s, MAX_BLOCK_S) * 1000)))
    return [JobSnapshot(id=entry_id.decode(), record=record_from_hash({k.decode(): v.decode() for k, v in fields.items()}))
            for _, entries in answer for entry_id, fields in entries]


async def current(store: JobStore, job_id: str) -> Optional[JobRecord]:
    raw = await store.aio.hgetall(store.keys.job(job_id))
    return record_from_hash({k.decode(): v.decode() for k, v in raw.items()}) if raw else None


async def follow(store: JobStore, job_id: str, after: Optional[str] = None,
                 block_s: float = 15.0) -> AsyncIterator[Optional[JobSnapshot]]:
    """The job's events after entry `after` (all kept ones when None), in order; None after every
    `block_s` (at most MAX_BLOCK_S) without one. Ends after the event of a final state, or when the
    job is gone; a job without a stream (its data deleted) yields its current record once."""
    if not await store.aio.exists(store.keys.events(job_id)):
        record = await current(store, job_id)
        if record is None:
            return
        yield JobSnapshot(id=None, record=record)
        if record.state.finished:
            return
    cursor = after or "0-0"
    while True:
        events = await read_events(store, job_id, cursor, block_s)
        for event in events:
            yield event
            if event.record.state.finished:
                return
        if events:
            cursor = events[-1].id
            continue
        record = await current(store, job_id)
        if record is None or record.state.finished:   # expired, or resumed after its last event
            return
        yield None


async def wait_finished(store: JobStore, job_id: str, timeout_s: float) -> Optional[JobRecord]:
    """The job once finished, if that happens within `timeout_s`; else None."""
    async def finished() -> Optional[JobRecord]:
        async for event in follow(store, job_id, block_s=timeout_s):
            if event is not None and event.record.state.finished:
                return event.record
        return None

    try:
        return await asyncio.wait_for(finished(), timeout_s) if timeout_s > 0 else None
    except asyncio.TimeoutError:
        return None
