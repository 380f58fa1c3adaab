"""Dependencies: the app's settings, the job store, the job queue, the SSRF guards (each built once per
app, in create_app) and the caller; routes take them by their Annotated aliases (`SettingsDep`, ...)."""
from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from impress.queue import JobQueue
from impress.settings import Settings
from impress.ssrf import UrlGuards
from impress.store import JobStore

from .auth import Caller, authorize


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_store(request: Request) -> JobStore:
    return request.app.state.store


def get_queue(request: Request) -> JobQueue:
    return request.app.state.queue


def get_url_guards(request: Request) -> UrlGuards:
    return request.app.state.url_guards


SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[JobStore, Depends(get_store)]
QueueDep = Annotated[JobQueue, Depends(get_queue)]
UrlGuardsDep = Annotated[UrlGuards, Depends(get_url_guards)]
CallerDep = Annotated[Caller, Depends(authorize)]
