"""POST /v1/{kind}: one submit route per registered job kind, made from its JobSpec (impress/jobspec.py).

The route's form is the kind's form model (plus `image_url` where an input role takes URLs, plus the
webhook options); its file fields are the kind's input roles. Every submission goes the same way:
unknown fields refused, input counts checked, parameters resolved, the one iteration limit, the kind's
own rules, then the Submitter (app/submit.py) stores and queues the job.
"""
from __future__ import annotations

import inspect
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from impress.contract import DEFAULT_PRESET, ErrorCode
from impress.jobspec import JobSpec, over_limit
from impress.records import InputRole

from ..errors import ApiError, error_responses
from ..prefer import submission_response
from ..schemas import Accepted, JobView
from ..submit import (SUBMIT_RESPONSES, SubmitOptions, Submitter, UrlInputs, form_model, form_part, get_submitter,
                      refuse_unknown_fields)

SUBMIT_ERRORS = (413, 415, 422, 503)


def invalid(message: str, details=None) -> ApiError:
    return ApiError(422, ErrorCode.invalid_parameter, message, details)


def checked_params(spec: JobSpec, form: BaseModel, counts: dict[InputRole, int], submitter: Submitter) -> BaseModel:
    """The form's parameters as the job runs them: resolved, within the iteration limit, and obeying the
    kind's own rules (422 invalid_parameter otherwise)."""
    settings = submitter.settings
    params = form_part(form, spec.form_model)
    if spec.resolve is not None:
        params = spec.resolve(params, settings)
    over = over_limit(spec, params, settings.max_iterations)
    if over:
        raise invalid("; ".join(f"{o.label}={o.count} exceeds this service's limit of {settings.max_iterations} "
                                "iterations" for o in over),
                      [{"field": o.field, "message": f"at most {settings.max_iterations}"} for o in over])
    try:
        spec.check(params, counts, settings)
    except ValueError as exc:
        raise invalid(str(exc)) from exc
    return params


def submit_router(spec: JobSpec) -> APIRouter:
    """The kind's submit route, POST /v1/{kind}, named submit_{kind}."""
    takes_urls = any(slot.urls for slot in spec.inputs)
    form_type = form_model(spec.form_model, *((UrlInputs,) if takes_urls else ()), SubmitOptions)
    slots = {slot.name: slot for slot in spec.inputs}

    async def submit(request: Request, params: BaseModel, submitter: Submitter, **files: list[UploadFile]):
        await refuse_unknown_fields(request, form_type, set(slots))
        urls = params.image_url if takes_urls else []
        uploads = {slots[name].role: given for name, given in files.items()}
        counts = {role: len(given) for role, given in uploads.items()}
        for slot in spec.inputs:
            if slot.urls:
                counts[slot.role] += len(urls)
            if (problem := slot.count_error(counts)) is not None:
                raise invalid(problem)
        job_params = checked_params(spec, params, counts, submitter)
        accepted = await run_in_threadpool(submitter.enqueue, spec.kind, uploads, job_params,
                                           spec.preset(job_params) or DEFAULT_PRESET,
                                           options=form_part(params, SubmitOptions), image_urls=urls)
        if spec.answer_inline and submitter.wait_s is None:   # small requests inline, as without Prefer: wait
            inline = sum(counts.values()) <= submitter.settings.detect_sync_max_images
            return await submission_response(request, submitter.store, accepted,
                                             submitter.settings.detect_sync_timeout_s if inline else None,
                                             applied=False)
        return await submitter.respond(request, accepted)

    def file_parameter(slot) -> inspect.Parameter:
        return inspect.Parameter(slot.name, inspect.Parameter.KEYWORD_ONLY,
                                 annotation=Annotated[list[UploadFile], File(description=slot.description)],
                                 **({} if slot.required else {"default": []}))

    submit.__signature__ = inspect.Signature([
        inspect.Parameter("request", inspect.Parameter.KEYWORD_ONLY, annotation=Request),
        inspect.Parameter("params", inspect.Parameter.KEYWORD_ONLY, annotation=Annotated[form_type, Form()]),
        *(file_parameter(slot) for slot in spec.inputs),
        inspect.Parameter("submitter", inspect.Parameter.KEYWORD_ONLY,
                          annotation=Annotated[Submitter, Depends(get_submitter)]),
    ])
    submit.__name__ = submit.__qualname__ = f"submit_{spec.kind}"
    submit.__doc__ = spec.description or None

    router = APIRouter(prefix="/v1", tags=["jobs"])
    if spec.answer_inline:
        router.post(f"/{spec.kind}", response_model=JobView, status_code=200, summary=spec.summary,
                    responses={202: {"model": Accepted, "description": "queued: poll the job"},
                               **error_responses(*SUBMIT_ERRORS)})(submit)
    else:
        router.post(f"/{spec.kind}", status_code=202, response_model=Accepted, summary=spec.summary,
                    responses=SUBMIT_RESPONSES)(submit)
    return router
