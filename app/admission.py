"""Admission control: how many submissions one API process accepts at once.

Past the limit a client gets a fast 503 to retry, instead of a place in a queue that grows without
bound. A slot covers reading, checking and queueing a submission, not waiting for its result: a
sync detect gives its slot back before it polls for the answer.
"""
from __future__ import annotations

from fastapi import Request

from impress.contract import ErrorCode

from .errors import error_json


class Admission:
    def __init__(self, limit: int):
        self.limit = limit
        self.inflight = 0  # the event loop is one thread: a plain int is safe

    def try_enter(self, request: Request):
        """None when the request got a slot, else the 503 to answer with."""
        if self.inflight >= self.limit:
            response = error_json(503, ErrorCode.service_overloaded, f"{self.inflight} submissions are in "
                                  "progress, the most this service takes at once; retry shortly")
            response.headers["Retry-After"] = "1"
            return response
        self.inflight += 1
        request.state.admitted = True
        return None

    def leave(self, request: Request) -> None:
        """Give the request's slot back (once; later calls do nothing)."""
        if getattr(request.state, "admitted", False):
            request.state.admitted = False
            self.inflight -= 1


def release_submit_slot(request: Request) -> None:
    request.app.state.admission.leave(request)
