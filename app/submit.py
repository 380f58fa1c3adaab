"""Turning a submission into a queued job: check every upload, fetch every image URL, store the blobs,
create the record (within the key's cap on unfinished jobs), send the id; an Idempotency-Key makes a
retry return the same job. Shared by every submit route.

Image URLs are fetched here, in the API, not by a worker: the SSRF guard sits at the edge that talks
to the outside (GPU workers need no egress), a URL is checked exactly like an upload before anything
is queued, and a GPU never idles on a slow server. A bad upload rejects the whole request; a bad URL
input is left out with its own code (JobView.rejected_inputs) while the others are processed."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Annotated, Optional, Sequence

import anyio
import httpx
from fastapi import Header, Request, Response, UploadFile
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from impress.contract import DEFAULT_PRESET, ErrorCode, JobState, vae_for
from impress.fetch_slots import FetchSlots
from impress.images import DecodedImage, ImageRejected, decode_image, encode_png
from impress.logs import REQUEST_ID
from impress.names import safe_file_name
from impress.queue import JobQueue
from impress.records import InputImage, InputRole, JobError, RejectedInput, WebhookEvent, WebhookTarget
from impress.settings import Settings
from impress.ssrf import FetchFailed, UrlGuard, UrlGuards, UrlRefused
from impress.store import JobStore, StorageQuotaExceeded, TooManyUnfinishedJobs, blob_digest
from impress.webhooks import key_webhook_secret

from .auth import Caller
from .deps import CallerDep, QueueDep, SettingsDep, StoreDep, UrlGuardsDep
from .errors import ApiError, error_responses
from .idempotency import IDEMPOTENCY_KEY, claim, fingerprint
from .metrics import JOBS_SUBMITTED, UPLOADS_REJECTED
from .prefer import PREFER_DESCRIPTION, preferred_wait, submission_response
from .schemas import Accepted, JobView

log = logging.getLogger("impress.api")

# HTTP status of each image rejection (every other one is 422).
REJECTION_STATUS = {ErrorCode.payload_too_large: 413, ErrorCode.image_too_many_pixels: 413,
                    ErrorCode.unsupported_image_format: 415}


MAX_URL_LENGTH = 2048
# Every job POST's answers beside its 202: the finished job when a Prefer: wait was met, and refusals.
SUBMIT_RESPONSES = {200: {"model": JobView, "description": "finished within the `Prefer: wait` (Preference-Applied "
                                                           "names it)"}, **error_responses(413, 415, 422, 503)}


class SubmitOptions(BaseModel):
    """Form fields of every submit route beside its parameters."""

    webhook: Optional[str] = Field(
        None, max_length=MAX_URL_LENGTH, description="URL told of this job's events (Standard Webhooks: signed webhook-id, webhook-timestamp, "
                          "webhook-signature); http(s), and not a private, loopback, link-local or metadata address "
                          "unless IMPRESS_WEBHOOK_ALLOWED_HOSTS names it (else 422 url_not_allowed)")
    webhook_events: list[WebhookEvent] = Field(
        default_factory=lambda: [WebhookEvent.completed],
        description="events sent to `webhook` (repeat the field): start, progress (throttled), completed (any final "
                    "state, sent once per job; its body is the job as GET /v1/jobs/{id} shows it)")
    expires_in: Optional[int] = Field(
        None, ge=1, description="seconds the job, its inputs and its results are kept after its last change (at "
                                "most, and by default, the service's IMPRESS_RESULT_TTL_S; more is 422); the job "
                                "shows `expires_at`. DELETE /v1/jobs/{id}/data removes them sooner")


class UrlInputs(BaseModel):
    image_url: list[Annotated[str, Field(max_length=MAX_URL_LENGTH)]] = Field(
        default_factory=list,
        description="image URLs fetched by the service beside the uploads (repeat the field): https (http only for "
                    "allow-listed hosts), public addresses, at most IMPRESS_MAX_UPLOAD_BYTES within "
                    "IMPRESS_URL_FETCH_TIMEOUT_S, decoded like an upload. One that fails is listed in the job's "
                    "rejected_inputs with its code (url_not_allowed, image_fetch_failed, ...) while the others run")


def form_model(model: type[BaseModel], *extras: type[BaseModel]) -> type[BaseModel]:
    """`model` (and the `extras`' fields) accepting the multipart form's file fields too; unknown fields
    are refused by name in `refuse_unknown_fields`."""
    # `model` last among the bases, so its fields come first in the form (and on the console's page).
    return type(f"{model.__name__}Form", (*reversed(extras), model),
                {"model_config": ConfigDict(extra="ignore"), "__module__": __name__})


def form_part(form: BaseModel, model: type[BaseModel]):
    """The `model` part of a form made by form_model (422 invalid_parameter should it not validate alone)."""
    fields = form.model_dump(include=set(model.model_fields))
    try:
        return model.model_validate(fields)
    except ValidationError as exc:
        errors = [{"field": ".".join(map(str, e["loc"])), "message": e["msg"].removeprefix("Value error, ")}
                  for e in exc.errors()]
        raise ApiError(422, ErrorCode.invalid_parameter, "; ".join(f"{e['field']}: {e['message']}" for e in errors),
                       errors) from exc


async def refuse_unknown_fields(request: Request, model: type[BaseModel], files: set[str]) -> None:
    unknown = sorted(set((await request.form()).keys()) - set(model.model_fields) - files)
    if unknown:
        raise ApiError(422, ErrorCode.invalid_parameter, f"unknown fields: {', '.join(unknown)}",
                       [{"field": f, "message": "not a parameter of this endpoint"} for f in unknown])


def stored_image(data: bytes, settings: Settings) -> tuple[bytes, DecodedImage]:
    """The image decoded and re-encoded as the PNG that is stored: trailing bytes, metadata and anything
    else the decoder did not use are not kept."""
    img = decode_image(data, max_bytes=settings.max_upload_bytes, max_pixels=settings.max_pixels)
    return encode_png(img.rgb, img.alpha), img


def read_upload(upload: UploadFile, role: InputRole, settings: Settings) -> tuple[bytes, InputImage]:
    data = upload.file.read(settings.max_upload_bytes + 1)
    name = safe_file_name(upload.filename)
    try:
        stored, img = stored_image(data, settings)
    except ImageRejected as exc:
        UPLOADS_REJECTED.labels(code=exc.code.value).inc()
        raise ApiError(REJECTION_STATUS.get(exc.code, 422), exc.code, f"{name}: {exc.message}",
                       {"file": name, "role": role.value}) from exc
    return stored, InputImage(role=role, name=name, blob=blob_digest(stored), width=img.width, height=img.height,
                              format=img.format, upload_sha256=blob_digest(data), upload_bytes=len(data))


# What a caller is told of a refused or failed image URL: the code, never what was learnt on the way
# (addresses, ports, statuses), so the service is no port scanner. Logs keep the details.
URL_ERROR_TEXT = {ErrorCode.url_not_allowed: "this URL is not allowed",
                  ErrorCode.image_fetch_failed: "the image could not be fetched",
                  ErrorCode.payload_too_large: "the image is over the size limit"}


async def fetch_input(url: str, guard: UrlGuard, settings: Settings) -> tuple[bytes, InputImage] | RejectedInput:
    try:
        data = await guard.fetch_async(url, max_bytes=settings.max_upload_bytes, timeout_s=settings.url_fetch_timeout_s)
        stored, img = stored_image(data, settings)
    except (UrlRefused, FetchFailed, ImageRejected) as exc:
        UPLOADS_REJECTED.labels(code=exc.code.value).inc()
        log.info("image URL %s refused: %s: %s", url[:200], exc.code.value, exc.message)
        return RejectedInput(url=url, error=JobError(code=exc.code, message=URL_ERROR_TEXT.get(exc.code, exc.message)))
    return stored, InputImage(name=safe_file_name(httpx.URL(url).path), blob=blob_digest(stored), width=img.width,
                              height=img.height, format=img.format, url=url, upload_sha256=blob_digest(data),
                              upload_bytes=len(data))


def fetch_inputs(urls: Sequence[str], guard: UrlGuard, settings: Settings
                 ) -> tuple[list[tuple[bytes, InputImage]], list[RejectedInput]]:
    """Every URL fetched at once, each within its own deadline (runs in a thread without an event loop)."""
    if not urls:
        return [], []

    async def fetch_all() -> list:
        outcomes: list = [None] * len(urls)

        async def one(i: int) -> None:
            outcomes[i] = await fetch_input(urls[i], guard, settings)

        async with anyio.create_task_group() as group:
            for i in range(len(urls)):
                group.start_soon(one, i)
        return outcomes

    outcomes = anyio.run(fetch_all)
    return ([o for o in outcomes if not isinstance(o, RejectedInput)],
            [o for o in outcomes if isinstance(o, RejectedInput)])


def webhook_target(options: SubmitOptions, guard: UrlGuard, settings: Settings, owner: str,
                   jobs_url: str) -> Optional[WebhookTarget]:
    if options.webhook is None:
        return None
    if not key_webhook_secret(settings, owner):
        raise ApiError(422, ErrorCode.webhooks_disabled, "this service has no secret to sign this key's webhooks "
                       "(IMPRESS_WEBHOOK_SECRET)")
    try:
        guard.check(options.webhook)
    except UrlRefused as exc:
        raise ApiError(422, exc.code, f"webhook: {exc.message}", [{"field": "webhook", "message": exc.message}]) from exc
    return WebhookTarget(url=options.webhook, events=list(dict.fromkeys(options.webhook_events)), jobs_url=jobs_url)


@dataclass
class Submitter:
    """Everything a submission needs from the request: the service, the caller, the Idempotency-Key."""

    settings: Settings
    store: JobStore
    queue: JobQueue
    caller: Caller
    idempotency_key: Optional[str]
    url_template: str
    guards: UrlGuards
    wait_s: Optional[int] = None     # Prefer: wait=N, lowered to the service's most

    async def respond(self, request: Request, accepted: Accepted) -> Response:
        """200 with the finished job when the caller's Prefer: wait was met, else 202 (app/prefer.py)."""
        return await submission_response(request, self.store, accepted, self.wait_s)

    def enqueue(self, kind: str, uploads: dict[InputRole, list[UploadFile]], params: BaseModel,
                preset: str = DEFAULT_PRESET, *, options: SubmitOptions = SubmitOptions(),
                image_urls: Sequence[str] = ()) -> Accepted:
        """Check every upload and fetch every image URL, store the blobs, create the job record, send
        the task (id only). Runs in the thread pool (Redis, Pillow and URL fetches block)."""
        settings = self.settings
        count = sum(len(files) for files in uploads.values()) + len(image_urls)
        if count == 0:
            raise ApiError(422, ErrorCode.no_images, "send at least one image")
        if count > settings.max_images_per_job:
            raise ApiError(422, ErrorCode.too_many_images,
                           f"{count} images sent; at most {settings.max_images_per_job} per job")
        if options.expires_in is not None and options.expires_in > settings.result_ttl_s:
            raise ApiError(422, ErrorCode.invalid_parameter,
                           f"expires_in={options.expires_in} exceeds this service's {settings.result_ttl_s}s",
                           [{"field": "expires_in", "message": f"at most {settings.result_ttl_s}"}])
        webhook = webhook_target(options, self.guards.webhooks, settings, self.caller.owner,
                                 self.url_template.removesuffix(f"/{JOB_ID}"))
        decoded = [read_upload(u, role, settings) for role, files in uploads.items() for u in files]
        held = None
        if self.idempotency_key is not None:
            named = "\n".join([*image_urls, webhook.model_dump_json(exclude={"jobs_url"}) if webhook else ""])
            held = claim(self.store, self.caller.owner, self.idempotency_key,
                         fingerprint(kind, params, decoded, named), settings.result_ttl_s)
            if held.existing is not None:
                return self.accepted(held.existing)
        try:
            fetched, rejected = self.fetch(image_urls)
            if not decoded and not fetched:
                first = rejected[0].error
                raise ApiError(422, first.code, f"no image could be used: {first.message}",
                               [item.model_dump(mode="json") for item in rejected])
            job_id = self.create(kind, params, decoded + fetched, preset, rejected, webhook, options.expires_in)
        except BaseException:
            if held is not None:
                held.release()
            raise
        if held is not None:
            held.complete(job_id)
        JOBS_SUBMITTED.labels(kind=kind).inc()
        return self.accepted(job_id)

    def create(self, kind: str, params: BaseModel, decoded: list[tuple[bytes, InputImage]], preset: str,
               rejected: list[RejectedInput], webhook: Optional[WebhookTarget], expires_in: Optional[int]) -> str:
        try:
            record = self.store.create(kind, params, [meta for _, meta in decoded], vae=vae_for(preset, self.settings.vae),
                                       perceptual=self.settings.perceptual, owner=self.caller.owner,
                                       max_unfinished=self.settings.max_unfinished_jobs_per_key,
                                       rejected_inputs=rejected, webhook=webhook, request_id=REQUEST_ID.get(),
                                       blobs=[data for data, _ in decoded],
                                       max_stored_bytes=self.settings.max_stored_bytes_per_key, expires_in=expires_in)
        except TooManyUnfinishedJobs as exc:
            raise ApiError(429, ErrorCode.too_many_unfinished_jobs,
                           f"{exc.unfinished} jobs of this key are queued or running, the most allowed; "
                           "retry when one has finished", headers={"Retry-After": "5"}) from exc
        except StorageQuotaExceeded as exc:
            raise ApiError(429, ErrorCode.storage_quota_exceeded,
                           f"this key's stored images ({exc.stored} bytes) plus this job's ({exc.adding}) would pass "
                           f"its quota of {exc.quota} bytes; retry when earlier jobs have expired",
                           headers={"Retry-After": "60"}) from exc
        self.queue.send(kind, record.id)
        return record.id

    def fetch(self, urls: Sequence[str]) -> tuple[list[tuple[bytes, InputImage]], list[RejectedInput]]:
        """fetch_inputs within the caller's limit on fetches in progress (429 too_many_fetches past it)."""
        if not urls:
            return [], []
        slots = FetchSlots(self.store.r, self.settings.key_prefix)
        held = slots.acquire(self.caller.owner, len(urls), self.settings.max_concurrent_fetches_per_key,
                             self.settings.url_fetch_timeout_s + 5)
        if held is None:
            raise ApiError(429, ErrorCode.too_many_fetches,
                           f"this key may fetch at most {self.settings.max_concurrent_fetches_per_key} image URLs at "
                           "once; retry when its other submissions have been fetched", headers={"Retry-After": "2"})
        try:
            return fetch_inputs(urls, self.guards.images, self.settings)
        finally:
            slots.release(self.caller.owner, held)

    def accepted(self, job_id: str) -> Accepted:
        return Accepted(id=job_id, state=JobState.queued, url=self.url_template.replace(JOB_ID, job_id))


JOB_ID = "JOBID"   # stands for the id in a job URL template


async def get_submitter(request: Request, settings: SettingsDep, store: StoreDep, queue: QueueDep, caller: CallerDep,
                        guards: UrlGuardsDep,
                        idempotency_key: Optional[str] = Header(None, alias="Idempotency-Key", description=(
                            "a client-chosen key (1-255 printable ASCII): a repeated POST with the same key and body "
                            "returns the same job")),
                        prefer: Optional[str] = Header(None, alias="Prefer", description=PREFER_DESCRIPTION)
                        ) -> Submitter:
    # async: no I/O here, so no thread-pool hop (app/deps.py); enqueue does the blocking work in one.
    if idempotency_key is not None and not IDEMPOTENCY_KEY.fullmatch(idempotency_key):
        raise ApiError(422, ErrorCode.invalid_parameter, "Idempotency-Key must be 1-255 printable ASCII characters",
                       [{"field": "Idempotency-Key", "message": "1-255 printable ASCII characters, no spaces"}])
    return Submitter(settings, store, queue, caller, idempotency_key,
                     str(request.url_for("get_job", job_id=JOB_ID)), guards,
                     preferred_wait(prefer, settings.prefer_wait_max_s))


