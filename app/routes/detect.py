"""POST /v1/detect: triage by consistency error, answered inline for small requests."""
from __future__ import annotations

import asyncio
import time
from typing import Annotated, Optional

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from starlette.concurrency import run_in_threadpool

from impress.contract import DetectParams, JobKind
from impress.images import SUPPORTED_FORMATS
from impress.records import InputRole, JobRecord
from impress.settings import Settings
from impress.store import JobStore

from ..admission import release_submit_slot
from ..deps import get_settings
from ..errors import error_responses
from ..schemas import Accepted, JobView, job_view
from ..submit import (SubmitOptions, Submitter, UrlInputs, accepted_response, form_model, form_part, get_submitter,
                      refuse_unknown_fields)

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
    worker answers within `IMPRESS_DETECT_SYNC_TIMEOUT_S`; larger batches, or a busy service, get 202."""
    await refuse_unknown_fields(request, DetectForm, {"images"})
    accepted = await run_in_threadpool(submitter.enqueue, JobKind.detect, {InputRole.image: images},
                                       form_part(params, DetectParams), options=form_part(params, SubmitOptions),
                                       image_urls=params.image_url)
    # Accepted: waiting for the answer must not hold a submission slot (admission counts accepting work).
    release_submit_slot(request)
    if len(images) + len(params.image_url) <= settings.detect_sync_max_images:
        record = await wait_finished(submitter.store, accepted.id, settings.detect_sync_timeout_s)
        if record is not None:
            return job_view(record, accepted.url)
    return accepted_response(accepted)


async def wait_finished(store: JobStore, job_id: str, timeout_s: float) -> Optional[JobRecord]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        record = await run_in_threadpool(store.get, job_id)
        if record and record.state.finished:
            return record
        await asyncio.sleep(0.02)
    return None
