"""The job record as the store keeps it and every side reads it: inputs, results, errors, webhooks.

The states and codes it refers to are the contract's (impress/contract.py); its parameters are its
kind's (impress/kinds.py).
"""
from __future__ import annotations

import enum
from typing import Optional

from pydantic import BaseModel, ConfigDict, Field, SerializeAsAny

from .contract import DETECT_SCORES, DetectScore, ErrorCode, JobState, StopReason, ThresholdSource
from .manifest import ImageManifest
from .results import MeasuredBudget, Metrics, ModelIdentity, PerceptualIdentity, PipelineIdentity


class InputRole(str, enum.Enum):
    """What an input image is to its job: purify/detect take `image`s, evaluate `clean` ones with
    optional `protected` and `purified` counterparts in the same order."""

    image = "image"
    clean = "clean"
    protected = "protected"
    purified = "purified"
    mask = "mask"            # evaluate with an inpainting edit: white = regenerate, one per clean image
    target = "target"        # protect: the image a protection pulls toward (at most one)


class InputImage(BaseModel):
    role: InputRole = InputRole.image
    name: str
    blob: str          # content hash of the stored bytes: the upload decoded and re-encoded as PNG (store.Keys.blob)
    width: int
    height: int
    format: str        # the upload's format
    url: Optional[str] = None   # where the API fetched it (image_url inputs)
    upload_sha256: Optional[str] = None   # sha256 of the bytes as uploaded (or fetched)
    upload_bytes: Optional[int] = None    # their length


class TracePoint(BaseModel):
    """The loss and its two terms at one logged step (the mean over the batch for `loss`)."""

    model_config = ConfigDict(extra="allow")

    step: int
    loss: float
    consistency: float
    perceptual: float


class ResultImage(BaseModel):
    name: str          # same stem as the input, .png
    blob: str
    width: int
    height: int
    iterations: int
    stop_reason: StopReason
    final: Optional[TracePoint] = None   # at the last step
    trace: list[TracePoint]              # at logged steps
    budget: Optional[MeasuredBudget] = None   # protect: what the protection spent on this image
    # purify with method amortised or cascade: the stages this image went through, in order
    # (["amortised"], or ["amortised", "impress"] when the cascade's detection still flagged it),
    # its seconds, and (cascade) the detection score of the amortised output.
    path: Optional[list[str]] = None
    seconds: Optional[float] = None
    detection_score: Optional[float] = None
    manifest: Optional[ImageManifest] = None  # what was done, by what, to what, with what effect (signed in the PNG)
    input_index: Optional[int] = None   # which image input it came from (None: the same position)


class Verdict(str, enum.Enum):
    """Detection's call on one image at the thresholds (DetectParams)."""

    protected = "protected"   # score above the threshold: protective noise likely
    clean = "clean"
    purified = "purified"     # score below the lower threshold: over-consistent, as IMPRESS leaves images


class DetectedImage(BaseModel):
    """One image's detection, self-contained as moderation pipelines store it: the score, the verdict,
    the thresholds it was judged at, and the model (a threshold holds only for its model)."""

    name: str
    score: float = Field(description="the image's detection score (score_name says which)")
    score_name: DetectScore = Field(description="which score: " + "; ".join(f"{k}: {v}" for k, v in DETECT_SCORES.items()))
    verdict: Optional[Verdict] = Field(description="at the thresholds; null when none is configured or given")
    threshold: Optional[float] = Field(description="scores above it are 'protected'")
    low_threshold: Optional[float] = Field(description="scores below it are 'purified'")
    thresholds_from: Optional[ThresholdSource] = Field(
        None, description="where the thresholds came from: the request, the service's settings, the calibration "
                          "shipped for this model and score, or a calibration file (CLI)")
    model: str = Field(description="the VAE that scored the image")
    model_revision: str = Field(description="its revision: hub commit, or a digest of the weights")


class ResultFile(BaseModel):
    name: str
    blob: str
    media_type: str


class EngineReport(BaseModel):
    """How a purification ran (never what it computed, except vae_tiling)."""

    batch_sizes: dict[str, int]      # images per batch, by image size WxH
    compiled: bool
    precision: str
    vae_tiling: bool
    vae_checkpointing: bool
    oom_splits: int                  # batches split in two after running out of memory
    tiles: dict[str, int] = {}       # pictures purified as overlapping tiles: input index -> tiles


class JobError(BaseModel):
    code: ErrorCode
    message: str


class ImageFailure(BaseModel):
    """An input image that failed on its own while the job's other images succeeded."""

    input_index: int
    name: str
    error: JobError


class PurifierUsed(BaseModel):
    """Which purification method ran, and for the amortised network, which weights."""

    method: str = Field(description="impress, amortised or cascade")
    weights: Optional[str] = Field(None, description="the amortised network's name")
    weights_sha256: Optional[str] = Field(None, description="sha256:<hex> of its weights file")
    threshold: Optional[float] = Field(None, description="cascade: the detection threshold its images were judged at")


class JobResult(BaseModel):
    images: list[ResultImage] = []   # purify, protect: one PNG per input (per input that succeeded)
    failed_images: list[ImageFailure] = []   # the inputs that failed on their own, with their codes
    detections: list[DetectedImage] = []   # detect: one per input
    metrics: Optional[Metrics] = None   # evaluate: the figures; protect, mimicry: what ran (impress/results.py)
    files: list[ResultFile] = []     # evaluate: report.html, results.md; mimicry: samples
    model: Optional[PipelineIdentity | ModelIdentity] = None   # the VAE (mimicry: the pipeline); None: no model
    perceptual: Optional[PerceptualIdentity] = None
    seconds: float
    device: str
    engine: Optional[EngineReport] = None
    purifier: Optional[PurifierUsed] = None   # purify: the method and, for amortised/cascade, the weights


class RejectedInput(BaseModel):
    """An image_url input the job goes on without: its own error code (url_not_allowed,
    image_fetch_failed, or the decoding codes an upload would get)."""

    role: InputRole = InputRole.image
    url: str
    error: JobError


class WebhookEvent(str, enum.Enum):
    """What a job's webhook is told: its start, its progress (throttled), its end in any final state."""

    start = "start"
    progress = "progress"
    completed = "completed"


class WebhookTarget(BaseModel):
    url: str
    events: list[WebhookEvent] = [WebhookEvent.completed]
    jobs_url: str   # the API's /v1/jobs URL as the accepting API answers it: the body's links are under it


class JobRecord(BaseModel):
    """A job as the store keeps it (store.JobStore) and every side reads it."""

    id: str
    kind: str                        # a registered job kind (impress.jobspec.job_spec)
    state: JobState
    params: SerializeAsAny[BaseModel]     # an instance of its kind's JobSpec.params: exactly what its handler runs
    vae: str                         # the VAE the job runs with (configured, else its preset's)
    perceptual: str                  # the perceptual distance's name
    inputs: list[InputImage]
    owner: str = ""                  # the creating API key's id (api_key_id); "" in an open service
    request_id: Optional[str] = None     # X-Request-ID of the request that created it (in the worker's logs too)
    rejected_inputs: list[RejectedInput] = []    # image_url inputs that could not be used
    webhook: Optional[WebhookTarget] = None
    created_at: float
    started_at: Optional[float] = None
    finished_at: Optional[float] = None
    progress_step: int = 0
    progress_total: int = 0
    attempts: int = 0
    ttl_s: int = 0                   # kept this long after each change (expires_in; 0: written before it existed)
    expires_at: Optional[float] = None   # when the job and its data go, unless it changes again first
    data_deleted_at: Optional[float] = None   # DELETE /v1/jobs/{id}/data: inputs and results gone since
    error: Optional[JobError] = None
    result: Optional[JobResult] = None
