"""POST /v1/protect: queue a protection of one or more images, returned as the PNGs a user would save
with the budget each spent."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from starlette.concurrency import run_in_threadpool

from impress.contract import ErrorCode, JobKind, ProtectParams
from impress.images import SUPPORTED_FORMATS
from impress.records import InputRole

from ..errors import ApiError
from ..schemas import Accepted
from ..submit import SUBMIT_RESPONSES, SubmitOptions, Submitter, form_model, form_part, get_submitter, refuse_unknown_fields

router = APIRouter(prefix="/v1", tags=["jobs"])
ProtectForm = form_model(ProtectParams, SubmitOptions)


@router.post("/protect", status_code=202, response_model=Accepted, responses=SUBMIT_RESPONSES,
             summary="Queue a protection (PhotoGuard's encoder attack, glaze-like, Mist's textural loss) of one or "
                     "more images: protected PNGs, each with its budget measured on the 8-bit result")
async def submit_protect(
    request: Request,
    params: Annotated[ProtectForm, Form()],
    images: Annotated[list[UploadFile], File(description=f"images to protect ({', '.join(SUPPORTED_FORMATS)})")],
    target: Annotated[list[UploadFile], File(description="at most one: the image the protection pulls toward, fitted "
                                                         "to each input's size; for glaze-like the style-transferred "
                                                         "copy (default: each protection's own)")] = [],
    submitter: Submitter = Depends(get_submitter),
):
    await refuse_unknown_fields(request, ProtectForm, {"images", "target"})
    if len(target) > 1:
        raise ApiError(422, ErrorCode.invalid_parameter, f"{len(target)} target images sent; send at most one")
    uploads = {InputRole.image: images, InputRole.target: target}
    checked = form_part(params, ProtectParams, max_iterations=submitter.settings.max_iterations)
    accepted = await run_in_threadpool(submitter.enqueue, JobKind.protect, uploads, checked,
                                       options=form_part(params, SubmitOptions))
    return await submitter.respond(request, accepted)
