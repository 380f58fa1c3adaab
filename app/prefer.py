"""`Prefer: wait=N` (RFC 7240) on a job POST: answer with the finished job when it ends within N
seconds (at most IMPRESS_PREFER_WAIT_MAX_S), else 202 as without it.

The wait follows the job's event stream (impress/event_stream.py: a blocking Redis read, no thread
held, no polling) and does not hold a submission slot: admission control counts accepting work only.
"""
from __future__ import annotations

from typing import Optional

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from impress.event_stream import wait_finished
from impress.store import JobStore
from impress.views import Accepted, job_view

from .admission import release_submit_slot

PREFER_DESCRIPTION = ("RFC 7240 preferences; `wait=N`: answer 200 with the finished job (and "
                      "`Preference-Applied: wait=N`) when it ends within N seconds, at most IMPRESS_PREFER_WAIT_MAX_S "
                      "(larger N are lowered to it); otherwise 202 as without it. Other preferences are ignored")


def preferred_wait(prefer: Optional[str], most_s: float) -> Optional[int]:
    """Seconds of a `wait=N` preference, lowered to `most_s`; None when there is none (or it is malformed,
    which RFC 7240 says to ignore)."""
    for preference in (prefer or "").split(","):
        name, _, value = preference.split(";")[0].partition("=")
        value = value.strip().strip('"')
        if name.strip().lower() == "wait" and value.isdigit():
            return min(int(value), int(most_s))
    return None


def accepted_response(accepted: Accepted) -> JSONResponse:
    return JSONResponse(status_code=202, content=accepted.model_dump(mode="json"), headers={"Location": accepted.url})


async def submission_response(request: Request, store: JobStore, accepted: Accepted, wait_s: Optional[float],
                              applied: bool = True) -> Response:
    """200 with the finished job when it ends within `wait_s`, else 202. `applied`: the wait was the
    caller's `Prefer: wait` (named in Preference-Applied), not a route's own default (sync detect)."""
    if wait_s:
        release_submit_slot(request)
        record = await wait_finished(store, accepted.id, wait_s)
        if record is not None:
            headers = {"Location": accepted.url, **({"Preference-Applied": f"wait={wait_s}"} if applied else {})}
            return JSONResponse(job_view(record, accepted.url).model_dump(mode="json"), headers=headers)
    return accepted_response(accepted)
