"""The edge every request passes first (pure ASGI, so nothing is read that it has not allowed):

- /v1 callers are identified from the headers alone, before any body is read or any slot taken: a
  request without a valid key is answered 401 with no byte of its body read.
- A submission (POST) is counted against its key's rate limit and takes an admission slot next, still
  before its body is read.
- The body is counted as it arrives, chunked or not: past the largest allowed job it is refused at
  once (413), and a body still incomplete after IMPRESS_UPLOAD_TIMEOUT_S is cut off (408), so a
  trickling client cannot hold a slot.
- Every request is timed for /metrics under bounded labels (metrics.method_label, route templates).
"""
from __future__ import annotations

import time

import anyio
from fastapi import Request
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from impress.contract import ErrorCode
from impress.settings import Settings

from .admission import Admission
from .auth import Authenticator
from .errors import STORE_ERRORS, ApiError, error_json, store_unavailable_handler
from .metrics import REQUEST_SECONDS, method_label

API_PREFIX = "/v1/"
MULTIPART_OVERHEAD = 1024 * 1024


def max_body_bytes(settings: Settings) -> int:
    """Room for the largest allowed job plus multipart overhead."""
    return settings.max_upload_bytes * settings.max_images_per_job + MULTIPART_OVERHEAD


class EdgeGuard:
    def __init__(self, app: ASGIApp, settings: Settings, auth: Authenticator, admission: Admission):
        self.app, self.auth, self.admission = app, auth, admission
        self.max_body = max_body_bytes(settings)
        self.upload_timeout_s = settings.upload_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def timed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message).update(scope.get("state", {}).get("rate_limit_headers", {}))
            await send(message)

        try:
            await self.guarded(scope, receive, timed_send)
        finally:
            route = scope.get("route")
            REQUEST_SECONDS.labels(method_label(scope["method"]), getattr(route, "path", "unmatched"),
                                   str(status)).observe(time.perf_counter() - start)

    async def guarded(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope)
        submit = scope["method"] == "POST"
        refusal = None
        try:
            if scope["path"].startswith(API_PREFIX):
                caller = self.auth.identify(request)   # headers only: no Redis, no thread
                request.state.caller = caller
                if submit:   # rate limit (Redis) before the body too; GETs are counted by `authorize`
                    request.state.rate_limit_headers = await anyio.to_thread.run_sync(self.auth.admit, caller)
        except ApiError as exc:
            refusal = error_json(exc.status, exc.code, exc.message, exc.details, exc.headers)
        except STORE_ERRORS as exc:
            refusal = await store_unavailable_handler(request, exc)
        length = request.headers.get("content-length")
        if refusal is None and length is not None and length.isdigit() and int(length) > self.max_body:
            refusal = error_json(413, ErrorCode.payload_too_large,
                                 f"request body is {length} bytes; the limit is {self.max_body}")
        if refusal is None and submit:
            refusal = self.admission.try_enter(request)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        try:
            await self.app(scope, self.counted(receive), send)
        finally:
            self.admission.leave(request)

    def counted(self, receive: Receive) -> Receive:
        """`receive` that refuses a body past the size limit, or one not complete in time."""
        received, complete = 0, False
        deadline = time.monotonic() + self.upload_timeout_s

        async def receive_counted() -> Message:
            nonlocal received, complete
            if complete:   # after the body only a disconnect comes (a streamed answer waits for it)
                return await receive()
            try:
                with anyio.fail_after(max(deadline - time.monotonic(), 0)):
                    message = await receive()
            except TimeoutError:
                raise HTTPException(408, f"the request body did not arrive within {self.upload_timeout_s}s") from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                complete = not message.get("more_body", False)
                if received > self.max_body:
                    raise HTTPException(413, f"request body is over the limit of {self.max_body} bytes")
            return message

        return receive_counted
