"""Running one job from its Redis record: the Celery task's only logic. Usable without Celery.

`run_job` owns what every kind shares: the start, the inputs, progress and cancel, the failure codes.
The kind's handler (its JobSpec names it, worker/handlers/) turns a typed `JobContext` into a
JobResult; it passes `ctx.reporter` to every engine loop, which raises `Canceled` when the job was
cancelled. The runner turns that into the `canceled` state and returns, so the worker takes its
next job. Everything the runner writes goes to the store as a typed event (impress.events).
"""
from __future__ import annotations

import functools
import importlib
import logging
from dataclasses import dataclass
from typing import Callable, Generic, TypeVar

import torch
from pydantic import BaseModel

from impress import events
from impress.contract import ErrorCode, JobState
from impress.images import DecodedImage, ImageRejected, decode_image
from impress.jobspec import JobSpec, job_spec
from impress.logs import job_context
from impress.progress import Canceled, Reporter, Throttled
from impress.records import InputImage, InputRole, JobError, JobRecord, JobResult, ResultFile
from impress.settings import Settings
from impress.store import JobStore

from .engine.models import ModelUnavailable
from .engine.purify import NonFiniteLoss

log = logging.getLogger("impress.worker")

P = TypeVar("P", bound=BaseModel)


@dataclass
class JobInput:
    meta: InputImage
    image: DecodedImage


@dataclass
class JobContext(Generic[P]):
    """What a handler gets: its parameters (its kind's model), the record, its decoded inputs by role,
    the service's settings, the store for its result blobs, and the reporter its loops report to."""

    params: P
    record: JobRecord
    inputs: dict[InputRole, list[JobInput]]
    settings: Settings
    store: JobStore
    reporter: Reporter

    def role(self, role: InputRole) -> list[JobInput]:
        return self.inputs.get(role, [])

    def put_file(self, name: str, data: bytes, media_type: str) -> ResultFile:
        return ResultFile(name=name, blob=self.store.put_blob(data), media_type=media_type)


Handler = Callable[[JobContext], JobResult]


@functools.cache
def handler_of(path: str) -> Handler:
    """The function a JobSpec's `handler` ("module:function") names, imported on first use."""
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def load_inputs(store: JobStore, settings: Settings, record: JobRecord) -> dict[InputRole, list[JobInput]]:
    """Every input of the job decoded, by role; ImageRejected(input_expired) when a blob is gone."""
    inputs: dict[InputRole, list[JobInput]] = {}
    for item in record.inputs:
        data = store.get_blob(item.blob)
        if data is None:
            raise ImageRejected(ErrorCode.input_expired, f"input {item.name} expired before the job ran")
        decoded = decode_image(data, max_bytes=settings.max_upload_bytes, max_pixels=settings.max_pixels)
        inputs.setdefault(item.role, []).append(JobInput(item, decoded))
    return inputs


def store_reporter(store: JobStore, settings: Settings, job_id: str) -> Reporter:
    """Progress written to the job's record (a few times a second at most), which also reads its cancel flag."""
    return Throttled(lambda step, total: not store.record(events.Progress(job_id=job_id, step=step, total=total)),
                     every_s=settings.progress_interval_s)


def release_device_memory() -> None:
    """Give cached GPU memory back after an out-of-memory failure, so the next job starts clean."""
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def run_job(store: JobStore, settings: Settings, job_id: str, on_time_limit: type[BaseException]) -> str:
    """Run the job; returns its final state. Every failure ends in the record, never in the worker.
    Log lines about the job carry its id and the id of the request that created it."""
    with job_context(job_id):
        started = store.record(events.Started(job_id=job_id, max_attempts=settings.max_attempts))
        record = store.get(job_id)
        if record is None:  # a late message for a job that expired: nothing to do, nothing to recreate
            log.info("job %s expired before it ran; message dropped", job_id)
            return "expired"
    with job_context(job_id, record.request_id):
        if not started:
            log.info("job %s not started (state %s, attempt %d)", job_id, record.state.value, record.attempts)
            return record.state.value
        log.info("job %s (%s) started, attempt %d, %d inputs", job_id, record.kind, record.attempts,
                 len(record.inputs))
        return run_started(store, settings, record, on_time_limit)


class ImagesFailed(Exception):
    """Every image of the job failed on its own (a handler's per-image errors): the job fails with the
    first one's error."""

    def __init__(self, error: JobError):
        super().__init__(error.message)
        self.error = error


def failure(exc: BaseException, settings: Settings, on_time_limit: type[BaseException]) -> JobError:
    """The stable code and message a failure is recorded with."""
    if isinstance(exc, ImagesFailed):
        return exc.error
    if isinstance(exc, ModelUnavailable):
        return JobError(code=ErrorCode.model_unavailable, message=str(exc))
    if isinstance(exc, ImageRejected):
        return JobError(code=exc.code, message=exc.message)
    if isinstance(exc, NonFiniteLoss):
        return JobError(code=ErrorCode.numerical_error, message=str(exc))
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):   # larger batches were split already
        release_device_memory()
        return JobError(code=ErrorCode.out_of_memory, message=f"out of memory even with one image per batch: {exc}")
    if isinstance(exc, on_time_limit):
        return JobError(code=ErrorCode.time_limit_exceeded, message=f"the job ran past {settings.soft_time_limit_s}s")
    log.error("job failed", exc_info=exc)
    return JobError(code=ErrorCode.internal_error, message=f"{type(exc).__name__}: {exc}"[:2000])


def run_started(store: JobStore, settings: Settings, record: JobRecord, on_time_limit: type[BaseException]) -> str:
    """The started job's handler, and its outcome recorded: succeeded, canceled, or failed with a code."""
    job_id = record.id
    try:
        spec: JobSpec = job_spec(record.kind)
        ctx = JobContext(params=record.params, record=record, inputs=load_inputs(store, settings, record),
                         settings=settings, store=store, reporter=store_reporter(store, settings, job_id))
        result = handler_of(spec.handler)(ctx)
        if store.cancel_requested(job_id):   # cancelled after the loops' last report
            raise Canceled
        store.record(events.Done(job_id=job_id, result=result))
        log.info("job %s succeeded in %.2fs on %s with %s", job_id, result.seconds, result.device,
                 result.model.name if result.model else "no model")
        return JobState.succeeded.value
    except Canceled:
        store.record(events.Canceled(job_id=job_id))
        log.info("job %s canceled", job_id)
        return JobState.canceled.value
    except (Exception, on_time_limit) as exc:  # the record must say what happened; the worker stays up
        error = failure(exc, settings, on_time_limit)
        store.record(events.Failed(job_id=job_id, error=error))
        log.info("job %s failed: %s", job_id, error.code.value)
        return JobState.failed.value
