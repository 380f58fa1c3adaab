"""Turning a submission into a queued job: check every upload, store the blobs, create the record,
send the id. Shared by every submit route; runs in the thread pool (Redis and Pillow block)."""
from __future__ import annotations

from fastapi import Request, UploadFile
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict

from impress.contract import DEFAULT_PRESET, ErrorCode, InputImage, InputRole, JobKind, JobState, vae_for
from impress.images import ImageRejected, decode_image
from impress.queue import JobQueue
from impress.settings import Settings
from impress.store import JobStore

from .errors import ApiError
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


def enqueue(kind: JobKind, uploads: dict[InputRole, list[UploadFile]], params: BaseModel, settings: Settings,
            store: JobStore, queue: JobQueue, url_template: str, preset: str = DEFAULT_PRESET) -> Accepted:
    """Check every upload, store the blobs, create the job record, send the task (id only)."""
    count = sum(len(files) for files in uploads.values())
    if count == 0:
        raise ApiError(422, ErrorCode.no_images, "send at least one image")
    if count > settings.max_images_per_job:
        raise ApiError(422, ErrorCode.too_many_images, f"{count} images sent; at most {settings.max_images_per_job} per job")
    decoded = [read_upload(u, role, settings) for role, files in uploads.items() for u in files]
    inputs = [meta.model_copy(update={"blob": store.put_blob(data)}) for data, meta in decoded]
    record = store.create(kind, params, inputs, vae=vae_for(preset, settings.vae), perceptual=settings.perceptual)
    queue.send(kind, record.id)
    JOBS_SUBMITTED.labels(kind=kind.value).inc()
    return Accepted(id=record.id, state=JobState.queued, url=url_template.replace("JOBID", record.id))


def job_url_template(request: Request) -> str:
    return str(request.url_for("get_job", job_id="JOBID"))


def accepted_response(accepted: Accepted) -> JSONResponse:
    return JSONResponse(status_code=202, content=accepted.model_dump(mode="json"), headers={"Location": accepted.url})
