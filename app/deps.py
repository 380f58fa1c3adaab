"""Dependencies: settings, the job store and the job queue, built once per app."""
from __future__ import annotations

from fastapi import Request

from impress.queue import JobQueue
from impress.settings import Settings
from impress.store import JobStore


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_store(request: Request) -> JobStore:
    return request.app.state.store


def get_queue(request: Request) -> JobQueue:
    return request.app.state.queue
