"""Log lines of every process (API, workers, CLI): text or JSON (IMPRESS_LOG_FORMAT), each carrying
the request id and the job id of the work it belongs to.

The ids live in context variables: the API sets the request id per request (X-Request-ID), the
record of a job keeps it, and the worker sets both while it runs that job, so one grep (or one
query over JSON logs) follows a request from its POST to the worker's last line about its job.
"""
from __future__ import annotations

import contextlib
import logging
import re
import uuid
from contextvars import ContextVar
from typing import Iterator, Literal, Optional

from pythonjsonlogger.json import JsonFormatter

LogFormat = Literal["text", "json"]

REQUEST_ID: ContextVar[Optional[str]] = ContextVar("request_id", default=None)
JOB_ID: ContextVar[Optional[str]] = ContextVar("job_id", default=None)

# A client's X-Request-ID is kept when it is a plain token of sane length (it ends up in log lines
# and job records); anything else is replaced by a fresh id.
_REQUEST_ID_PATTERN = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s%(ids)s: %(message)s"
JSON_FIELDS = "%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s %(job_id)s"


def request_id_from(header: Optional[str]) -> str:
    """The client's request id when it is acceptable, else a new one."""
    if header is not None and _REQUEST_ID_PATTERN.fullmatch(header):
        return header
    return uuid.uuid4().hex


class ContextIds(logging.Filter):
    """Puts the current request and job ids on every record (`request_id`, `job_id`, and `ids` for
    the text format: empty outside any request or job)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id, record.job_id = REQUEST_ID.get(), JOB_ID.get()
        parts = [f"{name}={value}" for name, value in (("request", record.request_id), ("job", record.job_id)) if value]
        record.ids = f" [{' '.join(parts)}]" if parts else ""
        return True


def configure_logging(log_format: LogFormat = "text", level: int = logging.INFO) -> None:
    """One handler on the root logger, for this process's own lines and its libraries' (uvicorn,
    Celery) alike."""
    handler = logging.StreamHandler()
    handler.addFilter(ContextIds())
    if log_format == "json":
        handler.setFormatter(JsonFormatter(JSON_FIELDS, rename_fields={"asctime": "time", "levelname": "level",
                                                                       "name": "logger"}))
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level)


@contextlib.contextmanager
def job_context(job_id: str, request_id: Optional[str] = None) -> Iterator[None]:
    """Log lines inside carry the job's id and the id of the request that created it."""
    tokens = JOB_ID.set(job_id), REQUEST_ID.set(request_id)
    try:
        yield
    finally:
        JOB_ID.reset(tokens[0])
        REQUEST_ID.reset(tokens[1])
