"""GET /v1/jobs/{id}/events: the job's server-sent event stream.

One event per state change and per progress write, each `data:` the job's JSON exactly as
GET /v1/jobs/{id} showed it at that moment, `id:` its stream entry (send it back as `Last-Event-ID`
to resume after it); a comment line every IMPRESS_EVENTS_HEARTBEAT_S keeps proxies from closing an
idle stream; the stream ends after the event of the job's final state. Same keys and tenant rules as
the job's other URLs (404 for another key's job, 410 for an expired one)."""
from __future__ import annotations

from typing import Optional

from fastapi import APIRouter, Header, Request
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.concurrency import run_in_threadpool

from impress.contract import ErrorCode
from impress.event_stream import EVENT_ID, follow

from ..deps import CallerDep, SettingsDep, StoreDep
from ..errors import ApiError, error_responses
from ..schemas import job_view
from .jobs import load_job

router = APIRouter(prefix="/v1", tags=["jobs"])

EVENT_STREAM_DOC = {
    "description": "`text/event-stream`: events `id: <entry id>` / `data: <the job as GET /v1/jobs/{id} shows it>`, "
                   "comment lines as heartbeats; the stream ends after the final state's event",
    "content": {"text/event-stream": {"schema": {"type": "string"},
                                      "example": 'id: 1765112345678-0\ndata: {"id": "...", "state": "running", '
                                                 '"progress": {"step": 10, "total": 100, "fraction": 0.1}, ...}\n\n'}}}


@router.get("/jobs/{job_id}/events", response_class=EventSourceResponse,
            responses={200: EVENT_STREAM_DOC, **error_responses(404, 410, 422)},
            summary="Follow a job: server-sent events of its state changes and progress")
async def job_events(request: Request, job_id: str, store: StoreDep, settings: SettingsDep, caller: CallerDep,
                     last_event_id: Optional[str] = Header(None, alias="Last-Event-ID", description=(
                         "resume after this event (its `id:`), as EventSource does on reconnecting"))):
    if last_event_id is not None and not EVENT_ID.fullmatch(last_event_id):
        raise ApiError(422, ErrorCode.invalid_parameter, "Last-Event-ID must be an event id of this stream "
                       "(<milliseconds>-<sequence>)", [{"field": "Last-Event-ID", "message": "not an event id"}])
    await run_in_threadpool(load_job, store, job_id, caller)
    url = str(request.url_for("get_job", job_id=job_id))

    async def events():
        async for event in follow(store, job_id, last_event_id, settings.events_heartbeat_s):
            if event is not None:
                yield ServerSentEvent(data=job_view(event.record, url).model_dump_json(), id=event.id)

    return EventSourceResponse(events(), ping=settings.events_heartbeat_s, headers={"Cache-Control": "no-store"})
