"""Jobs: submit purification, detection and evaluation (202 + Location), poll, fetch results, cancel."""
from __future__ import annotations

import asyncio
import time
from typing import Annotated, Optional

from fastapi import APIRouter, Depends, File, Form, Request, Response, UploadFile
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.concurrency import run_in_threadpool

from impress.contract import (PRESETS, TASKS, DetectParams, ErrorCode, EvaluateParams, InputImage, JobKind, JobState,
                              PurifyOverrides)
from impress.images import ImageRejected, decode_image
from impress.settings import Settings
from impress.store import JobStore

from ..deps import get_celery, get_settings, get_store
from ..errors import ApiError, error_responses
from ..metrics import JOBS_SUBMITTED, UPLOADS_REJECTED
from ..schemas import Accepted, JobView, job_view

router = APIRouter(prefix="/v1", tags=["jobs"])
IMAGE_FORMATS = "PNG, JPEG, WebP, BMP, TIFF, GIF"
# Detection and evaluation use the VAE of this preset when no VAE is configured.
DEFAULT_PRESET = "photoguard"


def form_model(model: type[BaseModel]) -> type[BaseModel]:
    """`model` accepting the multipart form's file fields too; unknown fields are refused by name
    in `refuse_unknown_fields`."""
    return type(f"{model.__name__}Form", (model,), {"model_config": ConfigDict(extra="ignore"), "__module__": __name__})


PurifyForm, DetectForm, EvaluateForm = form_model(PurifyOverrides), form_model(DetectParams), form_model(EvaluateParams)


async def refuse_unknown_fields(request: Request, model: type[BaseModel], files: set[str]) -> None:
    unknown = sorted(set((await request.form()).keys()) - set(model.model_fields) - files)
    if unknown:
        raise ApiError(422, ErrorCode.invalid_parameter, f"unknown fields: {', '.join(unknown)}",
                       [{"field": f, "message": "not a parameter of this endpoint"} for f in unknown])


def read_upload(upload: UploadFile, role: str, settings: Settings) -> tuple[bytes, InputImage]:
    data = upload.file.read(settings.max_upload_bytes + 1)
    name = upload.filename or "image"
    try:
        img = decode_image(data, max_bytes=settings.max_upload_bytes, max_pixels=settings.max_pixels)
    except ImageRejected as exc:
        UPLOADS_REJECTED.labels(code=exc.code.value).inc()
        status = {ErrorCode.payload_too_large: 413, ErrorCode.image_too_many_pixels: 413,
                  ErrorCode.unsupported_image_format: 415}.get(exc.code, 422)
        raise ApiError(status, exc.code, f"{name}: {exc.message}", {"file": name, "role": role}) from exc
    return data, InputImage(role=role, name=name, blob="", width=img.width, height=img.height, format=img.format)


def enqueue(kind: JobKind, uploads: dict[str, list[UploadFile]], params: BaseModel, settings: Settings,
            store: JobStore, celery, url_template: str, preset: str = DEFAULT_PRESET) -> Accepted:
    """Check every upload, store the blobs, create the job record, send the task (id only)."""
    count = sum(len(files) for files in uploads.values())
    if count == 0:
        raise ApiError(422, ErrorCode.no_images, "send at least one image")
    if count > settings.max_images_per_job:
        raise ApiError(422, ErrorCode.too_many_images, f"{count} images sent; at most {settings.max_images_per_job} per job")
    decoded = [read_upload(u, role, settings) for role, files in uploads.items() for u in files]
    inputs = [meta.model_copy(update={"blob": store.put_blob(data)}) for data, meta in decoded]
    # Without a configured VAE a job uses its preset's (the authors' SD VAE).
    record_params = {kind.value: params.model_dump(), "vae": settings.vae or PRESETS[preset].vae,
                     "perceptual": settings.perceptual}
    job_id = store.create(kind, record_params, inputs)
    celery.send_task(TASKS[kind], args=[job_id], queue=settings.queue)
    JOBS_SUBMITTED.labels(kind=kind.value).inc()
    return Accepted(id=job_id, state=JobState.queued, url=url_template.replace("JOBID", job_id))


def job_url_template(request: Request) -> str:
    return str(request.url_for("get_job", job_id="JOBID"))


def accepted_response(accepted: Accepted) -> JSONResponse:
    return JSONResponse(status_code=202, content=accepted.model_dump(mode="json"), headers={"Location": accepted.url})


@router.post("/purify", status_code=202, response_model=Accepted, responses=error_responses(413, 415, 422, 503),
             summary="Queue IMPRESS purification of one or more images")
async def submit_purify(
    request: Request,
    images: Annotated[list[UploadFile], File(description=f"images to purify ({IMAGE_FORMATS})")],
    params: Annotated[PurifyForm, Form()],
    settings: Settings = Depends(get_settings), store: JobStore = Depends(get_store), celery=Depends(get_celery),
):
    await refuse_unknown_fields(request, PurifyForm, {"images"})
    resolved = PurifyOverrides(**params.model_dump()).resolve(settings.perceptual, settings.schedule)
    if resolved.iters > settings.max_iterations:
        raise ApiError(422, ErrorCode.invalid_parameter,
                       f"iters={resolved.iters} exceeds this service's limit of {settings.max_iterations}",
                       [{"field": "iters", "message": f"at most {settings.max_iterations}"}])
    accepted = await run_in_threadpool(enqueue, JobKind.purify, {"image": images}, resolved, settings, store,
                                       celery, job_url_template(request), resolved.preset)
    return accepted_response(accepted)


@router.post("/detect", response_model=JobView, status_code=200,
             responses={202: {"model": Accepted, "description": "queued: poll the job"}, **error_responses(413, 415, 422, 503)},
             summary="Triage: consistency error of each image and a verdict against the threshold")
async def submit_detect(
    request: Request,
    images: Annotated[list[UploadFile], File(description=f"images to score ({IMAGE_FORMATS})")],
    params: Annotated[DetectForm, Form()],
    settings: Settings = Depends(get_settings), store: JobStore = Depends(get_store), celery=Depends(get_celery),
):
    """Up to `IMPRESS_DETECT_SYNC_MAX_IMAGES` images are answered inline (200, the finished job) when a
    worker answers within `IMPRESS_DETECT_SYNC_TIMEOUT_S`; larger batches, or a busy service, get 202."""
    await refuse_unknown_fields(request, DetectForm, {"images"})
    accepted = await run_in_threadpool(enqueue, JobKind.detect, {"image": images}, DetectParams(**params.model_dump()),
                                       settings, store, celery, job_url_template(request))
    if len(images) <= settings.detect_sync_max_images:
        rec = await wait_finished(store, accepted.id, settings.detect_sync_timeout_s)
        if rec is not None:
            return job_view(rec, accepted.url)
    return accepted_response(accepted)


async def wait_finished(store: JobStore, job_id: str, timeout_s: float) -> Optional[dict]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        rec = await run_in_threadpool(store.get, job_id)
        if rec and JobState(rec["state"]).finished:
            return rec
        await asyncio.sleep(0.02)
    return None


@router.post("/evaluate", status_code=202, response_model=Accepted, responses=error_responses(413, 415, 422, 503),
             summary="Queue an evaluation: clean (+ protected, + purified) images, or clean images and the "
                     "protections x purifiers matrix to run")
async def submit_evaluate(
    request: Request,
    clean: Annotated[list[UploadFile], File(description="clean originals")],
    params: Annotated[EvaluateForm, Form()],
    protected: Annotated[list[UploadFile], File(description="protected images, in the order of `clean`")] = [],
    purified: Annotated[list[UploadFile], File(description="purified images, in the order of `clean`")] = [],
    settings: Settings = Depends(get_settings), store: JobStore = Depends(get_store), celery=Depends(get_celery),
):
    await refuse_unknown_fields(request, EvaluateForm, {"clean", "protected", "purified"})
    for role, files in (("protected", protected), ("purified", purified)):
        if files and len(files) != len(clean):
            raise ApiError(422, ErrorCode.invalid_parameter, f"{len(files)} {role} images for {len(clean)} clean ones: "
                           "send one per clean image, in the same order")
    if purified and not protected:
        raise ApiError(422, ErrorCode.invalid_parameter, "purified images need their protected images too")
    if not protected and not params.protections and not params.purifiers:
        raise ApiError(422, ErrorCode.invalid_parameter,
                       "send protected images, or name protections and/or purifiers to run on the clean images")
    try:  # again with the service's iteration limit, which every method's step count must respect
        checked = EvaluateParams.model_validate(params.model_dump(), context={"max_iterations": settings.max_iterations})
    except ValidationError as exc:
        errors = [{"field": ".".join(map(str, e["loc"])), "message": e["msg"].removeprefix("Value error, ")}
                  for e in exc.errors()]
        raise ApiError(422, ErrorCode.invalid_parameter, "; ".join(f"{e['field']}: {e['message']}" for e in errors),
                       errors) from exc
    accepted = await run_in_threadpool(enqueue, JobKind.evaluate,
                                       {"clean": clean, "protected": protected, "purified": purified},
                                       checked, settings, store, celery, job_url_template(request))
    return accepted_response(accepted)


def load_job(store: JobStore, job_id: str) -> dict:
    rec = store.get(job_id)
    if rec is None:
        raise ApiError(404, ErrorCode.job_not_found, f"no job {job_id} (unknown, or expired)")
    return rec


def finished_result(store: JobStore, job_id: str) -> dict:
    rec = load_job(store, job_id)
    if rec["state"] != JobState.succeeded.value:
        raise ApiError(409, ErrorCode.job_not_finished, f"job {job_id} is {rec['state']}; results exist once it succeeded")
    return rec["result"]


def blob_response(store: JobStore, blob: str, media_type: str, filename: str) -> Response:
    data = store.get_blob(blob)
    if data is None:
        raise ApiError(404, ErrorCode.result_not_found, "the result has expired")
    return Response(content=data, media_type=media_type, headers={"Content-Disposition": f'inline; filename="{filename}"'})


@router.get("/jobs/{job_id}", response_model=JobView, responses=error_responses(404), summary="Poll a job")
def get_job(request: Request, job_id: str, store: JobStore = Depends(get_store)) -> JobView:
    return job_view(load_job(store, job_id), str(request.url_for("get_job", job_id=job_id)))


@router.get("/jobs/{job_id}/results/{index}", responses={200: {"content": {"image/png": {}}}, **error_responses(404, 409)},
            response_class=Response, summary="A purified image as PNG")
def get_result(job_id: str, index: int, store: JobStore = Depends(get_store)) -> Response:
    images = finished_result(store, job_id)["images"]
    if not 0 <= index < len(images):
        raise ApiError(404, ErrorCode.result_not_found, f"job {job_id} has {len(images)} result images")
    return blob_response(store, images[index]["blob"], "image/png", images[index]["name"])


@router.get("/jobs/{job_id}/files/{name}", responses={200: {"content": {"text/html": {}, "text/markdown": {}}},
                                                       **error_responses(404, 409)},
            response_class=Response, summary="A report file of an evaluation job")
def get_file(job_id: str, name: str, store: JobStore = Depends(get_store)) -> Response:
    files = {f["name"]: f for f in finished_result(store, job_id).get("files", [])}
    if name not in files:
        raise ApiError(404, ErrorCode.result_not_found, f"job {job_id} has files: {', '.join(files) or 'none'}")
    return blob_response(store, files[name]["blob"], files[name]["media_type"], name)


@router.delete("/jobs/{job_id}", response_model=JobView, responses=error_responses(404, 409),
               summary="Cancel a job: a queued job never runs, a running one stops within a few steps")
def cancel_job(request: Request, job_id: str, store: JobStore = Depends(get_store)) -> JobView:
    rec = load_job(store, job_id)
    if JobState(rec["state"]).finished:
        raise ApiError(409, ErrorCode.job_already_finished, f"job {job_id} already {rec['state']}")
    store.cancel(job_id)
    return job_view(load_job(store, job_id), str(request.url_for("get_job", job_id=job_id)))
