"""The web console: Try, Jobs and Service pages served by the API itself (same origin, same keys).

Server-rendered Jinja2 templates and plain JavaScript files, package data all of it: nothing to build."""
from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from .routes import router


def mount_console(app: FastAPI) -> None:
    app.include_router(router)
    app.mount("/console/static", StaticFiles(packages=[("app.console", "static")]), name="console-static")
