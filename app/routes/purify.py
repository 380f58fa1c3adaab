"""POST /v1/purify: queue IMPRESS purification of one or more images."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from starlette.concurrency import run_in_threadpool

from impress.contract import ErrorCode, JobKind, PurifyOverrides
from impress.images import SUPPORTED_FORMATS
from impress.records import InputRole
from impress.settings import Settings

from ..deps import get_settings
from ..errors import ApiError
from ..schemas import Accepted
from ..submit import (SUBMIT_RESPONSES, SubmitOptions, Submitter, UrlInputs, form_model, form_part, get_submitter,
                      refuse_unknown_fields)

router = APIRouter(prefix="/v1", tags=["jobs"])
PurifyForm = form_model(PurifyOverrides, UrlInputs, SubmitOptions)


@router.post("/purify", status_code=202, response_model=Accepted, responses=SUBMIT_RESPONSES,
             summary="Queue IMPRESS purification of one or more images")
async def submit_purify(
    request: Request,
    params: Annotated[PurifyForm, Form()],
    images: Annotated[list[UploadFile], File(description=f"images to purify ({', '.join(SUPPORTED_FORMATS)}); "
                                                         "and/or image_url fields")] = [],
    settings: Settings = Depends(get_settings), submitter: Submitter = Depends(get_submitter),
):
    await refuse_unknown_fields(request, PurifyForm, {"images"})
    resolved = form_part(params, PurifyOverrides).resolve(settings.perceptual, settings.schedule)
    if resolved.iters > settings.max_iterations:
        raise ApiError(422, ErrorCode.invalid_parameter,
                       f"iters={resolved.iters} exceeds this service's limit of {settings.max_iterations}",
                       [{"field": "iters", "message": f"at most {settings.max_iterations}"}])
    accepted = await run_in_threadpool(submitter.enqueue, JobKind.purify, {InputRole.image: images}, resolved,
                                       resolved.preset, options=form_part(params, SubmitOptions),
                                       image_urls=params.image_url)
    return await submitter.respond(request, accepted)
