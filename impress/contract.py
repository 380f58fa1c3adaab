"""The job contract: what the API puts in a job and what a worker reads and writes back.

Both sides import this module; it imports neither torch nor FastAPI. It holds the Celery task names,
the parameter models with their presets and ranges, the choices every side offers (devices,
precisions, perceptual distances), and the job states and error codes. The job record is
impress/records.py's; what each job kind takes and runs is its JobSpec (impress/kinds.py).
"""
from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from typing import Literal, Optional, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .methods import (MAX_STEPS, PROTECTIONS, PURIFIERS, ImpressParams, MethodChoice, PresetName, ScheduleName,
                      choice_type)
from .scenarios import EditParams

TASK_JOB = "impress.job"            # every job kind: the worker looks its JobSpec up by the record's kind
TASK_WEBHOOK = "impress.webhook"    # one webhook delivery (HTTP only), on the webhook queue


class JobKind(str, enum.Enum):
    """The built-in job kinds (impress/kinds.py declares each); a registered kind is any other name."""

    purify = "purify"
    detect = "detect"
    evaluate = "evaluate"
    mimicry = "mimicry"
    protect = "protect"

# impress/methods.py names every method with its parameters; the engine's registries pair each with its function.
PROTECTION_NAMES = tuple(PROTECTIONS)
PURIFIER_NAMES = tuple(PURIFIERS)


class JobState(str, enum.Enum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    canceled = "canceled"

    @property
    def finished(self) -> bool:
        return self in (JobState.succeeded, JobState.failed, JobState.canceled)


class StopReason(str, enum.Enum):
    """Why an optimisation ended: its full count, a plateau of the loss (early stopping), or a cancel."""

    completed = "completed"
    plateau = "plateau"
    canceled = "canceled"


class ErrorCode(str, enum.Enum):
    """Stable machine-readable codes: clients switch on these, never on messages."""

    invalid_request = "invalid_request"
    not_found = "not_found"                        # no such URL (job URLs answer job_not_found)
    method_not_allowed = "method_not_allowed"      # the URL exists; Allow lists its methods
    invalid_parameter = "invalid_parameter"
    no_images = "no_images"
    too_many_images = "too_many_images"
    payload_too_large = "payload_too_large"
    request_timeout = "request_timeout"            # the request body did not arrive within IMPRESS_UPLOAD_TIMEOUT_S
    image_too_many_pixels = "image_too_many_pixels"
    unsupported_image_format = "unsupported_image_format"
    image_decode_failed = "image_decode_failed"
    job_not_found = "job_not_found"
    result_not_found = "result_not_found"
    job_not_finished = "job_not_finished"
    job_already_finished = "job_already_finished"
    gone = "gone"              # the job's data was deleted (DELETE /v1/jobs/{id}/data) or the job expired
    service_overloaded = "service_overloaded"
    service_unavailable = "service_unavailable"    # Redis (jobs, queue) unreachable: retry later
    unauthorized = "unauthorized"
    rate_limited = "rate_limited"
    too_many_unfinished_jobs = "too_many_unfinished_jobs"
    storage_quota_exceeded = "storage_quota_exceeded"    # the key's stored input bytes would pass its quota
    too_many_fetches = "too_many_fetches"        # the key's image URL fetches in progress are at their limit
    idempotency_key_reused = "idempotency_key_reused"
    idempotency_key_in_use = "idempotency_key_in_use"
    # A URL (image_url, webhook) the service refuses to contact: not http(s), or its host resolves to a
    # private, loopback, link-local, multicast, reserved or metadata address that no allow-list names.
    url_not_allowed = "url_not_allowed"
    image_fetch_failed = "image_fetch_failed"    # an image URL did not answer 200 in time (per image)
    webhooks_disabled = "webhooks_disabled"      # a webhook was asked of a service with no signing secret
    # Failures a worker records on a job:
    model_unavailable = "model_unavailable"
    worker_lost = "worker_lost"
    time_limit_exceeded = "time_limit_exceeded"
    numerical_error = "numerical_error"            # the loss became NaN or infinite
    out_of_memory = "out_of_memory"                # even a batch of one image ran out of memory
    input_expired = "input_expired"
    internal_error = "internal_error"


# ---------------------------------------------------------------- choices every side offers

Device = Literal["auto", "cpu", "cuda"]
# Forward-pass autocast: auto = bf16 on CUDA (fp16 where the GPU lacks bf16), fp32 on CPU.
Precision = Literal["auto", "fp32", "bf16"]
Perceptual = Literal["lpips-vgg", "dssim"]
DEVICES: tuple[str, ...] = get_args(Device)
PRECISIONS: tuple[str, ...] = get_args(Precision)
PERCEPTUALS: tuple[str, ...] = get_args(Perceptual)


# ---------------------------------------------------------------- IMPRESS parameters and presets

class ImpressPreset(BaseModel):
    model_config = ConfigDict(frozen=True)

    delta: float
    alpha: float
    lr: float
    iters: int
    noise: float
    vae: str
    vae_note: str


# From the authors' run scripts (their function defaults are NOT what they ran): docs/algorithm.md.
PRESETS: dict[str, ImpressPreset] = {
    "glaze": ImpressPreset(delta=0.1, alpha=0.1, lr=0.01, iters=3000, noise=0.1,
                           vae="stabilityai/stable-diffusion-2-1-base",
                           vae_note="SD 2.1 base VAE (style mimicry)"),
    "photoguard": ImpressPreset(delta=0.1, alpha=0.01, lr=0.005, iters=1000, noise=0.05,
                                vae="stable-diffusion-v1-5/stable-diffusion-inpainting",
                                vae_note="SD 1.5 inpainting VAE (editing)"),
}
# Detection and evaluation measure with this preset's VAE when the service configures none.
DEFAULT_PRESET: PresetName = "photoguard"


class ModelReport(BaseModel):
    """The models a worker's jobs need, found on its disk or not (`impress models check`); each
    worker checks at start, its heartbeat carries the report, and /readyz shows it."""

    present: list[str] = []
    missing: list[str] = []

    @property
    def complete(self) -> bool:
        return not self.missing


class WorkerBeat(BaseModel):
    """What a worker's heartbeat writes to Redis every IMPRESS_WORKER_HEARTBEAT_S, idle or busy:
    /readyz counts the workers whose last beat has not expired."""

    name: str                               # Celery's node name, e.g. celery@host
    queues: list[str]
    models: Optional[ModelReport] = None    # none for a worker of webhooks only: it needs no model


# The autoencoder the project ships (FLUX.2's tiny autoencoder, worker/models/taef2): the one model that
# works with no download at all, so the offline default (demo, CPU compose profile, tests that measure).
# The presets keep their SD VAEs for production.
OFFLINE_MODEL = "taef2"
MODEL_CHOICES = f"{OFFLINE_MODEL} (bundled, offline), a Hugging Face hub id, or a local folder"


def vae_for(preset: str, configured: Optional[str]) -> str:
    """The VAE a job uses: the configured one, else its preset's (the authors' SD VAE)."""
    return configured or PRESETS[preset].vae


# The presets' delta is an LPIPS budget. The offline distance 1-SSIM has its own scale: 0.05
# (SSIM 0.95) is a change that is hard to see on photos. Used when the caller gives no delta.
PERCEPTUAL_DEFAULT_DELTA = {"dssim": 0.05}
# Likewise the presets' alpha weighs an LPIPS hinge; against 1-SSIM their 0.01-0.1 goes unheeded
# (measured on impress-tiny-vae, the project's former offline model: the demo's purified photos ended at
# 1-SSIM 0.17-0.25 to their input against delta 0.05; with alpha 1 at 0.047-0.050). On taef2 the test
# tests/test_evaluation.py::test_offline_distance_default_alpha_keeps_purified_images_in_budget holds it.
# Used when the caller gives no alpha.
PERCEPTUAL_DEFAULT_ALPHA = {"dssim": 1.0}


class Schedule(BaseModel):
    """How the optimiser runs a preset: Adam's betas, and the preset's iterations and lr rescaled."""

    model_config = ConfigDict(frozen=True)

    iters_divisor: int
    lr_scale: float
    beta1: float
    beta2: float
    early_stop: bool     # stop on a plateau unless the caller says otherwise


# published: the authors' loop (torch's Adam defaults). fast: the published loop's final loss and
# PSNR to the clean image in a fifth of the iterations, in 3 of the 4 benchmarked cases and within
# 0.2% / 0.1 dB in the fourth (bench/results/time-to-quality.md). Without momentum (beta1 0) and with
# a short second-moment memory (beta2 0.9), a 4.2x larger step stays as close to the clean image as
# the published small steps do; with momentum it overshoots. published runs its full count, as the
# authors' loop does; fast stops on a plateau.
SCHEDULES: dict[str, Schedule] = {
    "published": Schedule(iters_divisor=1, lr_scale=1.0, beta1=0.9, beta2=0.999, early_stop=False),
    "fast": Schedule(iters_divisor=5, lr_scale=4.2, beta1=0.0, beta2=0.9, early_stop=True),
}


# How a purify job purifies: IMPRESS's optimisation, one pass of the amortised network, or the cascade
# (the network, then IMPRESS warm-started from its output for the images the detection still flags).
PurifyMethod = Literal["impress", "amortised", "cascade"]
PURIFY_METHODS: tuple[str, ...] = get_args(PurifyMethod)


class PurifyOverrides(ImpressParams):
    """What a caller may set; anything left out comes from the preset. Ranges are hard limits.
    IMPRESS's parameters are those of the `impress` purifier (impress/methods.py), plus the plateau rule."""

    method: PurifyMethod = Field("impress", description="impress: IMPRESS's optimisation; amortised: one pass of "
                                 "the amortised network (docs/amortised.md); cascade: the network, then IMPRESS "
                                 "warm-started from its output for the images the detection score still flags")

    plateau_window: int = Field(100, ge=10, le=10_000, description="steps over which improvement is judged")
    plateau_rel_tol: float = Field(1e-3, ge=0, le=1, description="relative loss improvement below which a run stops")

    def resolve(self, perceptual: str = "lpips-vgg", schedule: ScheduleName = "published") -> "PurifyParams":
        """Exactly what the engine runs; `schedule` is the default when the caller named none."""
        name = self.schedule or schedule
        p, s = PRESETS[self.preset], SCHEDULES[name]
        pick = lambda v, d: d if v is None else v  # noqa: E731
        delta = pick(self.delta, PERCEPTUAL_DEFAULT_DELTA.get(perceptual, p.delta))
        return PurifyParams(
            preset=self.preset, schedule=name, iters=pick(self.iters, max(1, p.iters // s.iters_divisor)),
            lr=pick(self.lr, p.lr * s.lr_scale), beta1=pick(self.beta1, s.beta1), beta2=pick(self.beta2, s.beta2),
            alpha=pick(self.alpha, PERCEPTUAL_DEFAULT_ALPHA.get(perceptual, p.alpha)), delta=delta, noise=pick(self.noise, p.noise),
            seed=self.seed, early_stop=pick(self.early_stop, s.early_stop), plateau_window=self.plateau_window,
            plateau_rel_tol=self.plateau_rel_tol, method=self.method)


class PurifyParams(BaseModel):
    """Fully resolved IMPRESS parameters: exactly what the engine runs."""

    model_config = ConfigDict(frozen=True)

    preset: str
    iters: int
    lr: float
    alpha: float
    delta: float
    noise: float
    seed: int = 0
    early_stop: bool = False
    plateau_window: int = 100
    plateau_rel_tol: float = 1e-3
    schedule: str = "published"
    beta1: float = 0.9   # Adam's; defaults are the published loop's (torch's)
    beta2: float = 0.999
    method: PurifyMethod = "impress"


def check_thresholds(threshold: Optional[float], low_threshold: Optional[float]) -> None:
    """A lower detection threshold comes with an upper one, not above it."""
    if low_threshold is not None and threshold is None:
        raise ValueError("low_threshold needs a threshold (thresholds come as a calibrated pair)")
    if low_threshold is not None and low_threshold > threshold:
        raise ValueError(f"low_threshold ({low_threshold}) must not be above threshold ({threshold})")


# Detection scores (worker/engine/detect.py detection_scores computes them; bench/results/detection-scores.md
# measures them). Each but raw is normalised by the picture's own content, so one threshold serves flat
# and busy pictures: the latent shift compares the latents of the image and of a lightly blurred copy;
# a ratio divides the consistency error of the image by that of a copy which has lost protective noise.
DetectScore = Literal["latent-shift", "jpeg-ratio", "blur-ratio", "raw"]
DETECT_SCORES: dict[str, str] = {
    "latent-shift": "how far the encoder's latent moves when the image is lightly blurred (Gaussian, sigma 0.7 px): "
                    "mean((E(x) - E(blur(x)))^2) / mean(E(x)^2)",
    "jpeg-ratio": "consistency error of the image over that of its JPEG copy at quality 90",
    "blur-ratio": "consistency error of the image over that of its Gaussian-blurred copy (sigma 0.7 px)",
    "raw": "consistency error mean((x - D(E(x)))^2), pixels in [-1, 1]",
}
DEFAULT_DETECT_SCORE: DetectScore = "latent-shift"
ThresholdSource = Literal["request", "settings", "shipped", "calibration"]


class DetectParams(BaseModel):
    """Detection: a score of each image, flagged 'protected' above a threshold and, with a lower
    threshold, 'purified' below it (IMPRESS leaves images over-consistent)."""

    model_config = ConfigDict(extra="forbid")

    score: DetectScore = Field(DEFAULT_DETECT_SCORE, description="; ".join(f"{k}: {v}" for k, v in DETECT_SCORES.items())
                               + " (the raw score depends on the picture's content)")
    threshold: Optional[float] = Field(None, ge=0, description="flag scores above this 'protected' (default: the "
                                       "service's thresholds for this score and model: configured, else shipped)")
    low_threshold: Optional[float] = Field(None, ge=0, description="with threshold: flag scores below this "
                                           "'purified'")

    @model_validator(mode="after")
    def _thresholds_ordered(self) -> "DetectParams":
        check_thresholds(self.threshold, self.low_threshold)
        return self

    def thresholds(self, *defaults: "ThresholdPair") -> "ThresholdPair":
        """This request's pair when it gives a threshold, else the first of `defaults` that has one (the
        service's settings, then the calibration shipped for the model and score), never one from each."""
        if self.threshold is not None:
            return ThresholdPair(self.threshold, self.low_threshold, "request")
        return next((pair for pair in defaults if pair.threshold is not None), ThresholdPair())


@dataclass(frozen=True)
class ThresholdPair:
    """Detection thresholds and where they came from (None: no threshold, no verdict)."""
    threshold: Optional[float] = None
    low_threshold: Optional[float] = None
    source: Optional[ThresholdSource] = None


ProtectionChoice = choice_type("protection")
PurifierChoice = choice_type("purifier")


class EvaluateParams(BaseModel):
    """Evaluation: measure clean / protected / purified images side by side.

    With uploaded protected images, they are measured against their clean originals (and purified
    by `purifiers`); without, `protections` are applied to the clean images first (the bench matrix).
    Method choices are NAME or NAME:KEY=VALUE[:KEY=VALUE...] (impress/methods.py), validated here;
    the service's iteration limit holds every step count (impress.kinds.evaluate_steps)."""

    model_config = ConfigDict(extra="forbid")

    size: int = Field(256, ge=16, le=1024, description="generated matrix: images are centre-cropped to size x size; "
                                                        "diffusion methods need their pipeline's sample size (SD: 512) "
                                                        "and a multiple of 8")
    attack_steps: Optional[int] = Field(None, ge=1, le=MAX_STEPS, description="steps of every protection")
    impress_iters: Optional[int] = Field(None, ge=1, le=MAX_STEPS, description="iterations of the IMPRESS purifiers")
    protections: list[ProtectionChoice] = Field(default_factory=list)
    purifiers: list[PurifierChoice] = Field(default_factory=list)
    edit: Optional[EditParams] = Field(
        None, description="also run the editing scenario (docs/diffusion.md): 'inpaint', 'img2img', or a JSON "
                          "object of EditParams; needs the pipeline of that mode configured")

    @field_validator("edit", mode="before")
    @classmethod
    def _edit_from_form(cls, value):
        # A form sends text: a bare mode, or the parameters as JSON.
        if isinstance(value, str):
            return json.loads(value) if value.lstrip().startswith("{") else {"mode": value}
        return value

    def protection_choices(self) -> list[MethodChoice]:
        """The protections as they run: `attack_steps` steps where a choice sets no count of its own."""
        return [choice.with_default_steps(self.attack_steps) for choice in self.protections]

    def purifier_choices(self) -> list[MethodChoice]:
        """The purifiers as they run: `impress_iters` iterations where a choice sets no count of its own."""
        return [choice.with_default_steps(self.impress_iters) for choice in self.purifiers]

    def pipeline_users(self) -> list[tuple[str, str]]:
        """(what, pipeline kind) of each method and scenario that runs on a diffusion pipeline."""
        users = [(f"{c.kind} {c.label!r}", c.params.pipeline_kind) for c in [*self.protections, *self.purifiers]
                 if c.params.pipeline_kind is not None]
        return users + ([(f"the {self.edit.mode} edit", self.edit.pipeline_kind)] if self.edit else [])


def method_steps(choice: MethodChoice) -> Optional[int]:
    """The optimisation steps a method runs: its own count, or IMPRESS's preset's under its schedule
    (published unless named: evaluations run IMPRESS as the engine's `impress` purifier resolves it)."""
    if isinstance(choice.params, ImpressParams) and choice.params.iters is None:
        return PurifyOverrides(**choice.params.impress_fields()).resolve().iters
    return choice.step_count


class ProtectParams(BaseModel):
    """Protection of uploaded images (and an optional `target` image the protection pulls toward: the
    style-transferred copy for glaze-like), each returned as the 8-bit PNG a user saves, with the
    budget it spent measured on that PNG."""

    model_config = ConfigDict(extra="forbid")

    protection: ProtectionChoice = Field(description="e.g. glaze-like:steps=100:p=0.03")
