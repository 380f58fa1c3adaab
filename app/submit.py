"""Turning a submission into a queued job: check every upload, store the blobs, create the record
(within the key's cap on unfinished jobs), send the id; an Idempotency-Key makes a retry return the
same job. Shared by every submit route."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from fastapi import Depends, Header, Request, UploadFile
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict

from impress.contract import DEFAULT_PRESET, ErrorCode, InputImage, InputRole, JobKind, JobState, vae_for
from impress.images import ImageRejected, decode_image
from impress.queue import JobQueue
from impress.settings import Settings
from impress.store import JobStore, TooManyUnfinishedJobs

from .auth import Caller, authorize
from .deps import get_queue, get_settings, get_store
from .errors import ApiError
from .idempotency import IDEMPOTENCY_KEY, claim, fingerprint
from .metrics import JOBS_SUBMITTED, UPLOADS_REJECTED
from .schemas import Accepted

# HTTP status of each image rejection (every other one is 422).
REJECTION_STATUS = {ErrorCode.payload_too_large: 413, ErrorCode.image_too_many_pixels: 413,
                    ErrorCode.unsupported_image_format: 415}


def form_model(model: type[BaseModel]) -> type[BaseModel]:
    """`model` accepting the multipart form's file fields too; unknown fields are refused by name
    in `refuse_unknown_fields`."""
    return type(f"{model.__name__}Form", (model,), {"model_config": ConfigDict(extra="ignore"), "__module__": __name__})


async def refuse_unknown_fields(request: Request, model: type[BaseModel], files: set[str]) -> None:
    unknown = sorted(set((await request.form()).keys()) - set(model.model_fields) - files)
    if unknown:
        raise ApiError(422, ErrorCode.invalid_parameter, f"unknown fields: {', '.join(unknown)}",
                       [{"field": f, "message": "not a parameter of this endpoint"} for f in unknown])


def read_upload(upload: UploadFile, role: InputRole, settings: Settings) -> tuple[bytes, InputImage]:
    data = upload.file.read(settings.max_upload_bytes + 1)
    name = upload.filename or "image"
    try:
        img = decode_image(data, max_bytes=settings.max_upload_bytes, max_pixels=settings.max_pixels)
    except ImageRejected as exc:
        UPLOADS_REJECTED.labels(code=exc.code.value).inc()
        raise ApiError(REJECTION_STATUS.get(exc.code, 422), exc.code, f"{name}: {exc.message}",
                       {"file": name, "role": role.value}) from exc
    return data, InputImage(role=role, name=name, blob="", width=img.width, height=img.height, format=img.format)


@dataclass
class Submitter:
    """Everything a submission needs from the request: the service, the caller, the Idempotency-Key."""

    settings: Settings
    store: JobStore
    queue: JobQueue
    caller: Caller
    idempotency_key: Optional[str]
    url_template: str

    def enqueue(self, kind: JobKind, uploads: dict[InputRole, list[UploadFile]], params: BaseModel,
                preset: str = DEFAULT_PRESET) -> Accepted:
        """Check every upload, store the blobs, create the job record, send the task (id only).
        Runs in the thread pool (Redis and Pillow block)."""
        settings = self.settings
        count = sum(len(files) for files in uploads.values())
        if count == 0:
            raise ApiError(422, ErrorCode.no_images, "send at least one image")
        if count > settings.max_images_per_job:
            raise ApiError(422, ErrorCode.too_many_images,
                           f"{count} images sent; at most {settings.max_images_per_job} per job")
        decoded = [read_upload(u, role, settings) for role, files in uploads.items() for u in files]
        held = None
        if self.idempotency_key is not None:
            held = claim(self.store, self.caller.owner, self.idempotency_key, fingerprint(kind, params, decoded),
                         settings.result_ttl_s)
            if held.existing is not None:
                return self.accepted(held.existing)
        try:
            job_id = self.create(kind, params, decoded, preset)
        except BaseException:
            if held is not None:
                held.release()
            raise
        if held is not None:
            held.complete(job_id)
        JOBS_SUBMITTED.labels(kind=kind.value).inc()
        return self.accepted(job_id)

    def create(self, kind: JobKind, params: BaseModel, decoded: list[tuple[bytes, InputImage]], preset: str) -> str:
        inputs = [meta.model_copy(update={"blob": self.store.put_blob(data)}) for data, meta in decoded]
        try:
            record = self.store.create(kind, params, inputs, vae=vae_for(preset, self.settings.vae),
                                       perceptual=self.settings.perceptual, owner=self.caller.owner,
                                       max_unfinished=self.settings.max_unfinished_jobs_per_key)
        except TooManyUnfinishedJobs as exc:
            raise ApiError(429, ErrorCode.too_many_unfinished_jobs,
                           f"{exc.unfinished} jobs of this key are queued or running, the most allowed; "
                           "retry when one has finished", headers={"Retry-After": "5"}) from exc
        self.queue.send(kind, record.id)
        return record.id

    def accepted(self, job_id: str) -> Accepted:
        return Accepted(id=job_id, state=JobState.queued, url=self.url_template.replace("JOBID", job_id))


def get_submitter(request: Request, settings: Settings = Depends(get_settings), store: JobStore = Depends(get_store),
                  queue: JobQueue = Depends(get_queue), caller: Caller = Depends(authorize),
                  idempotency_key: Optional[str] = Header(None, alias="Idempotency-Key", description=(
                      "a client-chosen key (1-255 printable ASCII): a repeated POST with the same key and body "
                      "returns the same job"))) -> Submitter:
    if idempotency_key is not None and not IDEMPOTENCY_KEY.fullmatch(idempotency_key):
        raise ApiError(422, ErrorCode.invalid_parameter, "Idempotency-Key must be 1-255 printable ASCII characters",
                       [{"field": "Idempotency-Key", "message": "1-255 printable ASCII characters, no spaces"}])
    return Submitter(settings, store, queue, caller, idempotency_key,
                     str(request.url_for("get_job", job_id="JOBID")))


def accepted_response(accepted: Accepted) -> JSONResponse:
    return JSONResponse(status_code=202, content=accepted.model_dump(mode="json"), headers={"Location": accepted.url})
