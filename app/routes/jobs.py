"""Purification jobs: submit (202 + Location), poll, fetch result PNGs, cancel."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Request, Response, UploadFile
from pydantic import ConfigDict
from starlette.concurrency import run_in_threadpool

from impress.contract import TASK_PURIFY, ErrorCode, InputImage, JobKind, JobState, PurifyOverrides, vae_for
from impress.images import ImageRejected, decode_image
from impress.settings import Settings
from impress.store import JobStore

from ..deps import get_celery, get_settings, get_store
from ..errors import ApiError, error_responses
from ..metrics import JOBS_SUBMITTED, UPLOADS_REJECTED
from ..schemas import Accepted, JobView, job_view

router = APIRouter(prefix="/v1", tags=["jobs"])


def read_upload(upload: UploadFile, settings: Settings) -> tuple[bytes, InputImage]:
    data = upload.file.read(settings.max_upload_bytes + 1)
    name = upload.filename or "image"
    try:
        img = decode_image(data, max_bytes=settings.max_upload_bytes, max_pixels=settings.max_pixels)
    except ImageRejected as exc:
        UPLOADS_REJECTED.labels(code=exc.code.value).inc()
        status = {ErrorCode.payload_too_large: 413, ErrorCode.image_too_many_pixels: 413,
                  ErrorCode.unsupported_image_format: 415}.get(exc.code, 422)
        raise ApiError(status, exc.code, f"{name}: {exc.message}", {"file": name}) from exc
    return data, InputImage(name=name, blob="", width=img.width, height=img.height, format=img.format)


class PurifyForm(PurifyOverrides):
    # The multipart form also carries the files; unknown fields are refused by name below.
    model_config = ConfigDict(extra="ignore")


@router.post("/purify", status_code=202, response_model=Accepted,
             responses=error_responses(413, 415, 422),
             summary="Queue IMPRESS purification of one or more images")
async def submit_purify(
    request: Request, response: Response,
    images: Annotated[list[UploadFile], File(description="images to purify (PNG, JPEG, WebP, BMP, TIFF, GIF)")],
    params: Annotated[PurifyForm, Form()],
    settings: Settings = Depends(get_settings), store: JobStore = Depends(get_store),
    celery=Depends(get_celery),
) -> Accepted:
    unknown = sorted(set((await request.form()).keys()) - set(PurifyForm.model_fields) - {"images"})
    if unknown:
        raise ApiError(422, ErrorCode.invalid_parameter, f"unknown fields: {', '.join(unknown)}",
                       [{"field": f, "message": "not a parameter of this endpoint"} for f in unknown])
    # Decoding and Redis calls block: run them off the event loop.
    accepted = await run_in_threadpool(enqueue_purify, images, params, settings, store, celery,
                                       str(request.url_for("get_job", job_id="JOBID")))
    response.headers["Location"] = accepted.url
    return accepted


def enqueue_purify(images: list[UploadFile], params: PurifyOverrides, settings: Settings, store: JobStore,
                   celery, url_template: str) -> Accepted:
    if not images:
        raise ApiError(422, ErrorCode.no_images, "send at least one image in the 'images' field")
    if len(images) > settings.max_images_per_job:
        raise ApiError(422, ErrorCode.too_many_images,
                       f"{len(images)} images sent; at most {settings.max_images_per_job} per job")
    resolved = params.resolve(settings.perceptual)
    if resolved.iters > settings.max_iterations:
        raise ApiError(422, ErrorCode.invalid_parameter,
                       f"iters={resolved.iters} exceeds this service's limit of {settings.max_iterations}",
                       [{"field": "iters", "message": f"at most {settings.max_iterations}"}])
    decoded = [read_upload(u, settings) for u in images]  # every file is checked before anything is stored
    inputs = [meta.model_copy(update={"blob": store.put_blob(data)}) for data, meta in decoded]
    job_id = store.create(JobKind.purify, {"purify": resolved.model_dump(), "vae": vae_for(resolved, settings.vae),
                                           "perceptual": settings.perceptual}, inputs)
    celery.send_task(TASK_PURIFY, args=[job_id], queue=settings.queue)
    JOBS_SUBMITTED.labels(kind="purify").inc()
    return Accepted(id=job_id, state=JobState.queued, url=url_template.replace("JOBID", job_id))


def load_job(store: JobStore, job_id: str) -> dict:
    rec = store.get(job_id)
    if rec is None:
        raise ApiError(404, ErrorCode.job_not_found, f"no job {job_id} (unknown, or expired)")
    return rec


@router.get("/jobs/{job_id}", response_model=JobView, responses=error_responses(404), summary="Poll a job")
def get_job(request: Request, job_id: str, store: JobStore = Depends(get_store)) -> JobView:
    return job_view(load_job(store, job_id), str(request.url_for("get_job", job_id=job_id)))


@router.get("/jobs/{job_id}/results/{index}", responses={200: {"content": {"image/png": {}}},
                                                          **error_responses(404, 409)},
            response_class=Response, summary="A purified image as PNG")
def get_result(job_id: str, index: int, store: JobStore = Depends(get_store)) -> Response:
    rec = load_job(store, job_id)
    if rec["state"] != JobState.succeeded.value:
        raise ApiError(409, ErrorCode.job_not_finished, f"job {job_id} is {rec['state']}; results exist once it succeeded")
    images = rec["result"]["images"]
    if not 0 <= index < len(images):
        raise ApiError(404, ErrorCode.result_not_found, f"job {job_id} has results 0..{len(images) - 1}")
    data = store.get_blob(images[index]["blob"])
    if data is None:
        raise ApiError(404, ErrorCode.result_not_found, "the result image has expired")
    return Response(content=data, media_type="image/png",
                    headers={"Content-Disposition": f'inline; filename="{images[index]["name"]}"'})


@router.delete("/jobs/{job_id}", response_model=JobView, responses=error_responses(404, 409),
               summary="Cancel a job: a queued job never runs, a running one stops within a few steps")
def cancel_job(request: Request, job_id: str, store: JobStore = Depends(get_store)) -> JobView:
    rec = load_job(store, job_id)
    if JobState(rec["state"]).finished:
        raise ApiError(409, ErrorCode.job_already_finished, f"job {job_id} already {rec['state']}")
    store.cancel(job_id)
    return job_view(load_job(store, job_id), str(request.url_for("get_job", job_id=job_id)))
