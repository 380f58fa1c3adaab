"""What the HTTP API returns for a job."""
from __future__ import annotations

from typing import Optional

from pydantic import BaseModel

from impress.contract import DetectedImage, InputImage, JobError, JobKind, JobRecord, JobState, StopReason, TracePoint


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


class FileLink(BaseModel):
    name: str
    url: str
    media_type: str


class JobView(BaseModel):
    id: str
    kind: JobKind
    state: JobState
    progress: Progress
    created_at: float
    started_at: Optional[float] = None
    finished_at: Optional[float] = None
    attempts: int
    params: dict
    vae: str
    perceptual: str
    inputs: list[InputImage]
    error: Optional[JobError] = None
    results: list[ResultLink] = []
    detections: list[DetectedImage] = []   # detect: score, verdict, thresholds and model of each image
    metrics: Optional[dict] = None
    files: list[FileLink] = []
    model: Optional[dict] = None
    seconds: Optional[float] = None
    device: Optional[str] = None
    engine: Optional[dict] = None    # purify: batch sizes used, compiled or not, memory options, OOM splits


class Accepted(BaseModel):
    id: str
    state: JobState
    url: str


def job_view(record: JobRecord, base_url: str) -> JobView:
    step, total = record.progress_step, record.progress_total
    result = record.result
    results = [ResultLink(index=i, url=f"{base_url}/results/{i}",
                          **im.model_dump(include=set(ResultLink.model_fields)))
               for i, im in enumerate(result.images)] if result else []
    files = [FileLink(name=f.name, url=f"{base_url}/files/{f.name}", media_type=f.media_type)
             for f in result.files] if result else []
    return JobView(
        id=record.id, kind=record.kind, state=record.state,
        progress=Progress(step=step, total=total, fraction=round(step / total, 4) if total else 0.0),
        created_at=record.created_at, started_at=record.started_at, finished_at=record.finished_at,
        attempts=record.attempts, params=record.params.model_dump(mode="json"), vae=record.vae,
        perceptual=record.perceptual, inputs=record.inputs, error=record.error, results=results, files=files,
        **(result.model_dump(include={"detections", "metrics", "model", "seconds", "device", "engine"}) if result else {}))
