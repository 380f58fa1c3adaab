"""Dependencies: settings, the job store, the job queue and the SSRF guards, built once per app."""
from __future__ import annotations

from fastapi import Request

from impress.queue import JobQueue
from impress.settings import Settings
from impress.ssrf import UrlGuards
from impress.store import JobStore


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_store(request: Request) -> JobStore:
    return request.app.state.store


def get_queue(request: Request) -> JobQueue:
    return request.app.state.queue


def get_url_guards(request: Request) -> UrlGuards:
    return request.app.state.url_guards
