"""POST /v1/mimicry: queue the style-mimicry scenario (LoRA fine-tuning on each uploaded set)."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from starlette.concurrency import run_in_threadpool

from impress.contract import ErrorCode, JobKind
from impress.records import InputRole
from impress.scenarios import MimicryParams

from ..errors import ApiError
from ..schemas import Accepted
from ..submit import (SUBMIT_RESPONSES, SubmitOptions, Submitter, form_model, form_part, get_submitter,
                      refuse_unknown_fields, require_one_per_clean)

router = APIRouter(prefix="/v1", tags=["jobs"])
MimicryForm = form_model(MimicryParams, SubmitOptions)


@router.post("/mimicry", status_code=202, response_model=Accepted, responses=SUBMIT_RESPONSES,
             summary="Queue style mimicry: LoRA fine-tuning on the clean, protected and purified sets (a heavy "
                     "job: minutes per set on a GPU), scored on what each taught of the clean images")
async def submit_mimicry(
    request: Request,
    clean: Annotated[list[UploadFile], File(description="the artist's clean images (the style to learn)")],
    params: Annotated[MimicryForm, Form()],
    protected: Annotated[list[UploadFile], File(description="the same works, protected")] = [],
    purified: Annotated[list[UploadFile], File(description="the protected works, purified")] = [],
    submitter: Submitter = Depends(get_submitter),
):
    await refuse_unknown_fields(request, MimicryForm, {"clean", "protected", "purified"})
    if len(clean) < 2:
        raise ApiError(422, ErrorCode.invalid_parameter, f"{len(clean)} clean image sent: mimicry needs at least 2, "
                       "one to train on and one held out to score on")
    require_one_per_clean(clean, protected=protected, purified=purified)
    uploads = {InputRole.clean: clean, InputRole.protected: protected, InputRole.purified: purified}
    accepted = await run_in_threadpool(submitter.enqueue, JobKind.mimicry, uploads, form_part(params, MimicryParams),
                                       options=form_part(params, SubmitOptions))
    return await submitter.respond(request, accepted)
