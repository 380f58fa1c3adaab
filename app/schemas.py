"""What the HTTP API returns for a job."""
from __future__ import annotations

from typing import Optional

from pydantic import BaseModel

from impress.contract import ErrorCode, InputImage, JobKind, JobState


class Progress(BaseModel):
    step: int
    total: int
    fraction: float


class JobError(BaseModel):
    code: ErrorCode
    message: str


class ResultLink(BaseModel):
    index: int
    name: str
    url: str
    width: int
    height: int
    iterations: int
    stop_reason: str
    final: dict
    trace: list[dict]


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


def job_view(rec: dict, base_url: str) -> JobView:
    step, total = rec["progress_step"], rec["progress_total"]
    result = rec.get("result") or {}
    results = [ResultLink(index=i, url=f"{base_url}/results/{i}", **{k: im[k] for k in ResultLink.model_fields
                                                                     if k in im})
               for i, im in enumerate(result.get("images", []))]
    files = [FileLink(name=f["name"], url=f"{base_url}/files/{f['name']}", media_type=f["media_type"])
             for f in result.get("files", [])]
    return JobView(
        id=rec["id"], kind=rec["kind"], state=rec["state"],
        progress=Progress(step=step, total=total, fraction=round(step / total, 4) if total else 0.0),
        created_at=float(rec["created_at"]),
        started_at=float(rec["started_at"]) if rec.get("started_at") else None,
        finished_at=float(rec["finished_at"]) if rec.get("finished_at") else None,
        attempts=rec["attempts"], params=rec["params"][rec["kind"]], vae=rec["params"]["vae"],
        perceptual=rec["params"]["perceptual"], inputs=rec["inputs"],
        error=JobError(code=rec["error_code"], message=rec["error_message"]) if rec.get("error_code") else None,
        results=results, metrics=result.get("metrics"), files=files, model=result.get("model"), seconds=result.get("seconds"), device=result.get("device"),
        engine=result.get("engine"))
