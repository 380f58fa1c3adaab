"""Finding 10: every key the service writes expires (the counters hash is a fixed set of fields), and
a key's job lists keep unexpired ids only, the newest MAX_LISTED_JOBS, however many jobs it creates."""
from __future__ import annotations

import time

import fakeredis

from impress.contract import DetectParams, JobKind, ModelReport, WorkerBeat
from impress.store import JobStore
from tests.hostile.conftest import IMAGE, TENANT_A, bearer

TTL_S = 3600


def create(store: JobStore, owner: str, created_at: float | None = None) -> str:
    record = store.create(JobKind.detect, DetectParams(threshold=0.1), [], vae="v", perceptual="dssim", owner=owner)
    if created_at is not None:   # an old job: as if created long ago
        for key in (store.keys.jobs(), store.keys.owner_jobs(owner)):
            store.r.zadd(key, {record.id: created_at})
    return record.id


def test_every_key_has_a_ttl(keyed_api):
    client, store, *_ = keyed_api()
    store.beat(WorkerBeat(name="worker@test", queues=["impress"], models=ModelReport(present=["vae"])), 30)
    job = client.post("/v1/purify", headers={**bearer(TENANT_A), "Idempotency-Key": "ttl-1"},
                      files={"images": ("a.png", IMAGE)})
    client.delete(f"/v1/jobs/{job.json()['id']}", headers=bearer(TENANT_A))
    without_ttl = [key.decode() for key in store.r.scan_iter(f"{store.keys.prefix}:*")
                   if store.r.ttl(key) < 0 and key.decode() != store.keys.stats()]
    assert without_ttl == []


def test_job_lists_are_trimmed_to_unexpired_and_bounded(monkeypatch):
    import impress.store

    monkeypatch.setattr(impress.store, "MAX_LISTED_JOBS", 5)
    store = JobStore(fakeredis.FakeRedis(), "impress-ttl", TTL_S)
    old = [create(store, "k", created_at=time.time() - 2 * TTL_S) for _ in range(3)]
    recent = [create(store, "k") for _ in range(8)]
    listed = [i.decode() for i in store.r.zrange(store.keys.owner_jobs("k"), 0, -1)]
    # Bound: at most MAX_LISTED_JOBS ids, the newest, none expired (before: every id ever, TTL refreshed).
    assert listed == recent[-5:] and not set(old) & set(listed)
    assert store.r.zcard(store.keys.jobs()) == 5
