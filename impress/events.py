"""What a worker tells the store about a job, as small typed records (`JobStore.record` applies each
atomically): it started, it progressed, it is done, it failed, it was canceled.

Each event serialises to JSON with a `type` field (`JobEvent` parses any of them), so the same records
can travel further (a log line, an event stream) without a second format.
"""
from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from .records import JobError, JobResult


class _Event(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    job_id: str


class Started(_Event):
    """A worker takes the job (queued, or running on a worker that died: a redelivery), which may run
    `max_attempts` times in all; past that it fails `worker_lost`."""

    type: Literal["started"] = "started"
    max_attempts: int = Field(ge=1)


class Progress(_Event):
    """`step` of `total` done. Applying it tells whether the job goes on (not cancelled, not expired)."""

    type: Literal["progress"] = "progress"
    step: int = Field(ge=0)
    total: int = Field(ge=0)


class Done(_Event):
    type: Literal["done"] = "done"
    result: JobResult


class Failed(_Event):
    type: Literal["failed"] = "failed"
    error: JobError


class Canceled(_Event):
    """The running job stopped because it was cancelled."""

    type: Literal["canceled"] = "canceled"


JobEvent = Annotated[Union[Started, Progress, Done, Failed, Canceled], Field(discriminator="type")]
JOB_EVENT = TypeAdapter(JobEvent)   # JOB_EVENT.validate_json(text) -> the event it names
