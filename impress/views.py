"""What the HTTP API returns for a job, and what a webhook carries: one definition, on the ground
floor without FastAPI, so the API, the webhook sender in the workers and the client (impress.client)
build and read the same shapes."""
from __future__ import annotations

from datetime import datetime
from typing import Any, Optional

from pydantic import BaseModel, Field

from .contract import ErrorCode, JobState, StopReason
from .records import (DetectedImage, EngineReport, InputImage, InputRole, JobError, JobRecord, PurifierUsed,
                      RejectedInput, TracePoint, WebhookTarget)
from .results import MeasuredBudget, Metrics, ModelIdentity, PipelineIdentity


class Progress(BaseModel):
    step: int
    total: int
    fraction: float


class ResultLink(BaseModel):
    index: int
    name: str
    url: str
    width: int
    height: int
    iterations: int
    stop_reason: StopReason
    final: Optional[TracePoint] = None
    trace: list[TracePoint]
    budget: Optional[MeasuredBudget] = None   # protect: what the protection spent, on the 8-bit result
    path: Optional[list[str]] = None          # purify amortised/cascade: ["amortised"] or ["amortised", "impress"]
    seconds: Optional[float] = None           # purify amortised/cascade: this image's seconds
    detection_score: Optional[float] = None   # cascade: the detection score of the amortised output
    manifest_url: Optional[str] = Field(None, description="its signed manifest as JSON (also embedded in the PNG, C2PA)")


class ImageStatus(BaseModel):
    """One input image of the job: its own state, error and result, so a pipeline can act on the images
    that succeeded when another failed."""

    index: int = Field(description="its position among the job's image inputs")
    name: str
    state: JobState = Field(description="succeeded, failed (on its own, or with the job), or the job's state")
    error: Optional[JobError] = None
    result_url: Optional[str] = Field(None, description="its result PNG (purify, protect)")
    manifest_url: Optional[str] = None


class FileLink(BaseModel):
    name: str
    url: str
    media_type: str


class JobView(BaseModel):
    id: str
    kind: str = Field(description="the job kind: purify, detect, evaluate, mimicry, protect, or one the service "
                                  "registers (IMPRESS_JOB_KINDS)")
    state: JobState
    progress: Progress
    created_at: float
    started_at: Optional[float] = None
    finished_at: Optional[float] = None
    attempts: int
    expires_at: Optional[float] = Field(None, description="when the job and its data are deleted (unix seconds): "
                                        "expires_in (default: the service's TTL) after its last change")
    data_deleted_at: Optional[float] = Field(None, description="when DELETE /v1/jobs/{id}/data removed its inputs "
                                             "and results (their URLs answer 410 gone since)")
    params: dict
    vae: str
    perceptual: str
    inputs: list[InputImage]
    rejected_inputs: list[RejectedInput] = []    # image_url inputs the job went on without, with their codes
    webhook: Optional[WebhookTarget] = None
    error: Optional[JobError] = None
    results: list[ResultLink] = []
    images: list[ImageStatus] = Field([], description="each image input's own state, error code and result link")
    detections: list[DetectedImage] = []   # detect: score, verdict, thresholds and model of each image
    metrics: Optional[Metrics] = None   # evaluate, protect, mimicry: the figures (impress/results.py)
    files: list[FileLink] = []
    model: Optional[PipelineIdentity | ModelIdentity] = None   # the VAE (mimicry: the pipeline)
    seconds: Optional[float] = None
    device: Optional[str] = None
    engine: Optional[EngineReport] = None    # purify: batch sizes used, compiled or not, memory options, OOM splits
    purifier: Optional[PurifierUsed] = None   # purify: which method ran and, for the amortised network, its weights


class JobEventView(BaseModel):
    """One server-sent event of GET /v1/jobs/{id}/events, as the client yields it."""

    id: Optional[str] = None    # send back as Last-Event-ID to resume after this event
    job: JobView                # the job as GET /v1/jobs/{id} showed it at that moment


class JobList(BaseModel):
    jobs: list[JobView]


class ErrorBody(BaseModel):
    code: ErrorCode
    message: str
    details: Optional[Any] = None


class ErrorResponse(BaseModel):
    """Every 4xx/5xx answer: {"error": {"code": <stable code>, "message": ..., "details": ...}}."""

    error: ErrorBody


class Accepted(BaseModel):
    id: str
    state: JobState
    url: str


def job_view(record: JobRecord, base_url: str) -> JobView:
    step, total = record.progress_step, record.progress_total
    result = record.result
    results = [ResultLink(index=i, url=f"{base_url}/results/{i}",
                          manifest_url=f"{base_url}/results/{i}/manifest" if im.manifest else None,
                          **im.model_dump(include=set(ResultLink.model_fields)))
               for i, im in enumerate(result.images)] if result else []
    files = [FileLink(name=f.name, url=f"{base_url}/files/{f.name}", media_type=f.media_type)
             for f in result.files] if result else []
    return JobView(
        images=image_statuses(record, results),
        id=record.id, kind=record.kind, state=record.state,
        progress=Progress(step=step, total=total, fraction=round(step / total, 4) if total else 0.0),
        created_at=record.created_at, started_at=record.started_at, finished_at=record.finished_at,
        attempts=record.attempts, expires_at=record.expires_at, data_deleted_at=record.data_deleted_at,
        params=record.params.model_dump(mode="json"), vae=record.vae,
        perceptual=record.perceptual, inputs=record.inputs, rejected_inputs=record.rejected_inputs,
        webhook=record.webhook, error=record.error, results=results, files=files,
        **(result.model_dump(include={"detections", "metrics", "model", "seconds", "device", "engine",
                                      "purifier"}) if result else {}))


def image_statuses(record: JobRecord, results: list[ResultLink]) -> list[ImageStatus]:
    inputs = [item for item in record.inputs if item.role == InputRole.image]
    result = record.result
    linked = {(im.input_index if im.input_index is not None else i): link
              for i, (im, link) in enumerate(zip(result.images, results))} if result else {}
    failed = {f.input_index: f.error for f in result.failed_images} if result else {}
    statuses = []
    for i, item in enumerate(inputs):
        state = JobState.succeeded if i in linked else JobState.failed if i in failed else record.state
        statuses.append(ImageStatus(index=i, name=item.name, state=state,
                                    error=failed.get(i, record.error if state == JobState.failed else None),
                                    result_url=linked[i].url if i in linked else None,
                                    manifest_url=linked[i].manifest_url if i in linked else None))
    return statuses


class WebhookSecret(BaseModel):
    """GET /v1/webhook-secret: the secret that signs the caller's webhooks."""

    secret: str = Field(description="whsec_<base64>: verify this key's webhooks with it (Standard Webhooks), "
                                    "and check that the job id in the body is one of yours")


class WebhookPayload(BaseModel):
    """The body of every webhook (Standard Webhooks' type/timestamp/data): `data` is the job as
    `GET /v1/jobs/{id}` shows it at the moment of the event."""

    type: str              # job.start, job.progress, job.completed
    timestamp: datetime
    data: JobView
