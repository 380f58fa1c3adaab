"""The engine's progress/cancel reporter (impress.progress) and the worker's events to the store
(impress.events, JobStore.record), in-process."""
from __future__ import annotations

import pytest

from impress import events
from impress.contract import ErrorCode, JobKind, JobState, PurifyOverrides
from impress.progress import SILENT, Canceled, Reporter, Span, Throttled, spans
from impress.records import InputImage, JobError, JobResult


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Recorder:
    def __init__(self, stop_at: int | None = None):
        self.seen: list[tuple[int, int]] = []
        self.stop_at = stop_at

    def __call__(self, step: int, total: int) -> bool:
        self.seen.append((step, total))
        return self.stop_at is not None and step >= self.stop_at

    def advance(self, step: int, total: int, loss=None) -> None:
        self.seen.append((step, total))


def test_throttled_writes_at_most_once_per_interval_and_always_the_last_step():
    clock, sink = Clock(), Recorder()
    reporter = Throttled(sink, every_s=1.0, clock=clock)
    for step in range(1, 11):
        clock.now = step * 0.3
        reporter.advance(step, 10)
    # the first step, then one a second, then the last
    assert sink.seen == [(1, 10), (5, 10), (9, 10), (10, 10)]


def test_throttled_raises_canceled_when_the_sink_says_stop():
    clock = Clock()
    reporter = Throttled(Recorder(stop_at=3), every_s=0, clock=clock)
    reporter.advance(1, 10)
    reporter.advance(2, 10)
    with pytest.raises(Canceled):
        reporter.advance(3, 10)


def test_silent_and_throttled_are_reporters():
    assert isinstance(SILENT, Reporter) and isinstance(Throttled(Recorder()), Reporter)
    SILENT.advance(1, 2, loss=0.5)


def test_spans_count_parts_as_one_whole():
    whole = Recorder()
    first, second = spans(whole, [4, 6])
    first.advance(2, 2)      # the first part done: 4 of 10
    second.advance(1, 3)     # a third of the second part: 4 + 2
    second.advance(3, 3)
    assert whole.seen == [(4, 10), (6, 10), (10, 10)]
    assert isinstance(Span(whole, 0, 1, 1), Reporter)


IMAGE = InputImage(name="a.png", blob="0" * 64, width=4, height=4, format="PNG")


def job(store):
    return store.create(JobKind.purify, PurifyOverrides(iters=5).resolve(), [IMAGE], vae="impress-tiny-vae",
                        perceptual="dssim")


def test_store_applies_each_event(fast_store):
    one = job(fast_store)
    assert fast_store.record(events.Started(job_id=one.id, max_attempts=2))
    assert fast_store.record(events.Progress(job_id=one.id, step=2, total=5))
    assert fast_store.get(one.id).progress_step == 2
    result = JobResult(model={"name": "m"}, seconds=1.0, device="cpu")
    assert fast_store.record(events.Done(job_id=one.id, result=result))
    assert fast_store.get(one.id).state == JobState.succeeded
    assert not fast_store.record(events.Done(job_id=one.id, result=result))   # already final

    two = job(fast_store)
    fast_store.record(events.Started(job_id=two.id, max_attempts=2))
    fast_store.cancel(two.id)
    assert not fast_store.record(events.Progress(job_id=two.id, step=3, total=5))   # stop: cancelled
    assert fast_store.record(events.Canceled(job_id=two.id))
    assert fast_store.get(two.id).state == JobState.canceled

    three = job(fast_store)
    fast_store.record(events.Started(job_id=three.id, max_attempts=2))
    error = JobError(code=ErrorCode.numerical_error, message="the loss is not finite")
    assert fast_store.record(events.Failed(job_id=three.id, error=error))
    assert fast_store.get(three.id).error == error


def test_events_travel_as_json_with_their_type():
    event = events.Progress(job_id="j", step=1, total=2)
    assert events.JOB_EVENT.validate_json(event.model_dump_json()) == event
    assert '"type":"progress"' in event.model_dump_json()
