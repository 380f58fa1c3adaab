"""Dependencies: the app's settings, the job store, the job queue, the SSRF guards (each built once per
app, in create_app) and the caller; routes take them by their Annotated aliases (`SettingsDep`, ...).

The lookups are `async def`: FastAPI runs a plain `def` dependency in the thread pool, and every such
hop waits for a thread and then for the event loop again, which under a flood of other requests costs
milliseconds each, for an attribute read."""
from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from impress.queue import JobQueue
from impress.settings import Settings
from impress.ssrf import UrlGuards
from impress.store import JobStore

from .auth import Caller, authorize


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_store(request: Request) -> JobStore:
    return request.app.state.store


async def get_queue(request: Request) -> JobQueue:
    return request.app.state.queue


async def get_url_guards(request: Request) -> UrlGuards:
    return request.app.state.url_guards


SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[JobStore, Depends(get_store)]
QueueDep = Annotated[JobQueue, Depends(get_queue)]
UrlGuardsDep = Annotated[UrlGuards, Depends(get_url_guards)]
CallerDep = Annotated[Caller, Depends(authorize)]
