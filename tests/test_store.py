"""The job store's atomic transitions, on fakeredis (the same Lua scripts Redis runs)."""
from __future__ import annotations

from impress.contract import DetectParams, ErrorCode, JobKind, JobState, PurifyOverrides, PurifyParams
from impress.records import InputImage, JobResult

IMAGE = InputImage(name="a.png", blob="0" * 64, width=4, height=4, format="PNG")


def make(store, kind=JobKind.purify, params=None):
    params = params or PurifyOverrides(iters=5).resolve()
    return store.create(kind, params, [IMAGE], vae="taef2", perceptual="dssim")


def test_record_round_trips_typed(fast_store):
    created = make(fast_store)
    record = fast_store.get(created.id)
    assert record == created
    assert isinstance(record.params, PurifyParams) and record.params.iters == 5
    detect = make(fast_store, JobKind.detect, DetectParams(threshold=0.1))
    assert isinstance(fast_store.get(detect.id).params, DetectParams)
    assert fast_store.get("nope") is None


def test_start_counts_attempts_and_fails_when_spent(fast_store):
    job = make(fast_store)
    assert fast_store.start(job.id, max_attempts=2) == (True, 1)
    assert fast_store.start(job.id, max_attempts=2) == (True, 2)  # redelivered after a worker died
    assert fast_store.start(job.id, max_attempts=2) == (False, 3)
    record = fast_store.get(job.id)
    assert record.state == JobState.failed and record.error.code == ErrorCode.worker_lost


def test_late_message_for_an_expired_job_recreates_nothing(fast_store, fake_redis):
    job = make(fast_store)
    fake_redis.delete(fast_store.keys.job(job.id))  # the TTL ran out before the message arrived
    assert fast_store.start(job.id, max_attempts=2) == (False, 0)
    assert fast_store.progress(job.id, 3, 10) is True  # the loop is told to stop
    assert not fake_redis.exists(fast_store.keys.job(job.id))
    assert fast_store.get(job.id) is None


def test_cancel_wins_once_and_a_finished_job_stays_finished(fast_store):
    job = make(fast_store)
    assert fast_store.cancel(job.id).state == JobState.canceled
    assert fast_store.start(job.id, max_attempts=2) == (False, 0)
    running = make(fast_store)
    fast_store.start(running.id, 2)
    assert fast_store.cancel(running.id).state == JobState.running  # the loop sees the flag
    assert fast_store.progress(running.id, 2, 10) is True
    assert fast_store.finish_canceled(running.id)
    assert not fast_store.succeed(running.id, JobResult(model={"name": "m"}, seconds=1, device="cpu"))


def test_success_counts_in_the_same_step(fast_store):
    job = make(fast_store)
    fast_store.start(job.id, 2)
    assert fast_store.progress(job.id, 5, 5) is False
    assert fast_store.succeed(job.id, JobResult(model={"name": "m"}, seconds=1.5, device="cpu"))
    stats = fast_store.stats()
    assert stats["purify:succeeded"] == 1 and stats["purify:seconds"] == 1.5
    assert fast_store.get(job.id).result.seconds == 1.5
    assert fast_store.r.ttl(fast_store.keys.job(job.id)) > 0
