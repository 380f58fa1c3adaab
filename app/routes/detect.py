"""POST /v1/detect: triage by consistency error, answered inline for small requests."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from starlette.concurrency import run_in_threadpool

from impress.contract import DetectParams, JobKind
from impress.images import SUPPORTED_FORMATS
from impress.records import InputRole
from impress.settings import Settings

from ..deps import get_settings
from ..errors import error_responses
from ..prefer import submission_response
from ..schemas import Accepted, JobView
from ..submit import SubmitOptions, Submitter, UrlInputs, form_model, form_part, get_submitter, refuse_unknown_fields

router = APIRouter(prefix="/v1", tags=["jobs"])
DetectForm = form_model(DetectParams, UrlInputs, SubmitOptions)


@router.post("/detect", response_model=JobView, status_code=200,
             responses={202: {"model": Accepted, "description": "queued: poll the job"}, **error_responses(413, 415, 422, 503)},
             summary="Triage: consistency error of each image and a verdict against the threshold")
async def submit_detect(
    request: Request,
    params: Annotated[DetectForm, Form()],
    images: Annotated[list[UploadFile], File(description=f"images to score ({', '.join(SUPPORTED_FORMATS)}); "
                                                         "and/or image_url fields")] = [],
    settings: Settings = Depends(get_settings), submitter: Submitter = Depends(get_submitter),
):
    """Up to `IMPRESS_DETECT_SYNC_MAX_IMAGES` images are answered inline (200, the finished job) when a
    worker answers within `IMPRESS_DETECT_SYNC_TIMEOUT_S`; larger batches, or a busy service, get 202.
    A `Prefer: wait=N` sets the wait of any request, however many images."""
    await refuse_unknown_fields(request, DetectForm, {"images"})
    accepted = await run_in_threadpool(submitter.enqueue, JobKind.detect, {InputRole.image: images},
                                       form_part(params, DetectParams), options=form_part(params, SubmitOptions),
                                       image_urls=params.image_url)
    if submitter.wait_s is not None:
        return await submitter.respond(request, accepted)
    inline = len(images) + len(params.image_url) <= settings.detect_sync_max_images
    return await submission_response(request, submitter.store, accepted,
                                     settings.detect_sync_timeout_s if inline else None, applied=False)
