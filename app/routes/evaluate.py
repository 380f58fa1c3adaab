"""POST /v1/evaluate: measure clean / protected / purified images, or run the protections x purifiers matrix."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from starlette.concurrency import run_in_threadpool

from impress.contract import ErrorCode, EvaluateParams, JobKind
from impress.pipelines import check_size
from impress.records import InputRole
from impress.settings import Settings

from ..deps import get_settings
from ..errors import ApiError
from ..schemas import Accepted
from ..submit import (SUBMIT_RESPONSES, SubmitOptions, Submitter, form_model, form_part, get_submitter,
                      refuse_unknown_fields, require_one_per_clean)

router = APIRouter(prefix="/v1", tags=["jobs"])
EvaluateForm = form_model(EvaluateParams, SubmitOptions)


@router.post("/evaluate", status_code=202, response_model=Accepted, responses=SUBMIT_RESPONSES,
             summary="Queue an evaluation: clean (+ protected, + purified) images, or clean images and the "
                     "protections x purifiers matrix to run")
async def submit_evaluate(
    request: Request,
    clean: Annotated[list[UploadFile], File(description="clean originals")],
    params: Annotated[EvaluateForm, Form()],
    protected: Annotated[list[UploadFile], File(description="protected images, in the order of `clean`")] = [],
    purified: Annotated[list[UploadFile], File(description="purified images, in the order of `clean`")] = [],
    mask: Annotated[list[UploadFile], File(description="with edit=inpaint: one mask per clean image, white = "
                                                       "regenerate (default: all but the centre)")] = [],
    settings: Settings = Depends(get_settings), submitter: Submitter = Depends(get_submitter),
):
    await refuse_unknown_fields(request, EvaluateForm, {"clean", "protected", "purified", "mask"})
    require_one_per_clean(clean, protected=protected, purified=purified, mask=mask)
    if purified and not protected:
        raise ApiError(422, ErrorCode.invalid_parameter, "purified images need their protected images too")
    if not protected and not params.protections and not params.purifiers:
        raise ApiError(422, ErrorCode.invalid_parameter,
                       "send protected images, or name protections and/or purifiers to run on the clean images")
    checked = form_part(params, EvaluateParams, max_iterations=settings.max_iterations)
    if not protected:  # the generated matrix runs every method at `size`
        try:
            check_size(checked.size, checked.pipeline_users(), settings)
        except ValueError as exc:
            raise ApiError(422, ErrorCode.invalid_parameter, str(exc), [{"field": "size", "message": str(exc)}]) from None
    if mask and (checked.edit is None or checked.edit.mode != "inpaint"):
        raise ApiError(422, ErrorCode.invalid_parameter, "masks are for the inpainting edit: set edit=inpaint")
    uploads = {InputRole.clean: clean, InputRole.protected: protected, InputRole.purified: purified,
               InputRole.mask: mask}
    accepted = await run_in_threadpool(submitter.enqueue, JobKind.evaluate, uploads, checked,
                                       options=form_part(params, SubmitOptions))
    return await submitter.respond(request, accepted)
