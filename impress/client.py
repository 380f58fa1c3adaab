"""A typed Python client of the IMPRESS service, on httpx: `ImpressClient` (sync) and
`AsyncImpressClient` (async) with the same methods.

    with ImpressClient("http://127.0.0.1:8000", api_key="...") as client:
        job = client.purify(["photo.png"], params=PurifyOverrides(schedule="fast"), idempotency_key="batch-7/1",
                            webhook="https://hooks.example.com/impress", webhook_events=["completed"])
        done = client.wait(job)                      # polls with backoff, honouring Retry-After
        for event in client.events(job):             # or follow it live (server-sent events)
            print(event.job.state, event.job.progress.step)
        client.download_results(done, "out/")
        client.delete_data(done)                     # inputs and results gone now, not at expiry

Submissions answer an `Accepted` (queued), or the finished `JobView` when `prefer_wait` (the
`Prefer: wait=N` header) was met or an inline detect finished; jobs are `JobView`s, the API's own
model (impress.views). `events` iterates a job's server-sent events (JobEventView) until its final
state, resuming after the last one seen (Last-Event-ID) when the connection drops. Refusals raise `ImpressError` with the API's
stable `code`; 429 and 503 are retried after their Retry-After. `verify_webhook` checks a webhook's
Standard Webhooks signature and returns the typed payload.

Each operation is written once, as a generator that yields the requests to send and the pauses to
make; the sync and the async client only differ in how they send and sleep.
"""
from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Generator, Iterator, Mapping, Optional, Sequence, TypeVar, Union

import httpx
import httpx_sse
import standardwebhooks
from pydantic import BaseModel

from .contract import DetectParams, ErrorCode, EvaluateParams, PurifyOverrides
from .names import safe_file_name
from .records import WebhookEvent
from .views import Accepted, ErrorResponse, JobEventView, JobView, WebhookPayload, WebhookSecret

ImageInput = Union[str, Path, tuple[str, bytes]]    # a file path, or (name, bytes)
JobRef = Union[str, JobView, Accepted]              # a job id, or what the service answered about it
Submission = Union[Accepted, JobView]
T = TypeVar("T")


@dataclass(frozen=True)
class Pause:
    seconds: float


# An operation: yields requests (answered with their responses) and pauses; returns its result.
Flow = Generator[Union[httpx.Request, Pause], Optional[httpx.Response], T]


class ImpressError(Exception):
    """The service refused a request: the HTTP status and the error envelope's stable code."""

    def __init__(self, status: int, code: Optional[ErrorCode], message: str, details: Any = None):
        super().__init__(f"{status} {code.value if code else ''}: {message}")
        self.status, self.code, self.message, self.details = status, code, message, details


class JobTimeout(TimeoutError):
    pass


@dataclass(frozen=True)
class Backoff:
    """Polling and retrying: waits grow by `factor` from `first_s` to `max_s`; a Retry-After wins."""

    first_s: float = 0.5
    max_s: float = 10.0
    factor: float = 1.5
    retries: int = 5      # of a request answered 429 or 503

    def delay(self, attempt: int) -> float:
        return min(self.first_s * self.factor ** attempt, self.max_s)


def verify_webhook(body: bytes | str, headers: Mapping[str, str], secret: str) -> WebhookPayload:
    """The payload of a webhook whose signature verifies with `secret` (whsec_...) and whose timestamp is
    within five minutes; standardwebhooks.WebhookVerificationError otherwise."""
    return WebhookPayload.model_validate(standardwebhooks.Webhook(secret).verify(body, dict(headers)))


def job_id(job: JobRef) -> str:
    return job if isinstance(job, str) else job.id


def form_fields(params: Optional[BaseModel]) -> dict[str, Any]:
    """The parameters the caller set, as form fields (lists repeat the field)."""
    fields = params.model_dump(mode="json", exclude_unset=True, exclude_none=True) if params is not None else {}
    return {name: (str(value).lower() if isinstance(value, bool) else value) for name, value in fields.items()}


def image_file(field: str, image: ImageInput) -> tuple[str, tuple[str, bytes]]:
    if isinstance(image, tuple):
        return field, image
    path = Path(image)
    return field, (path.name, path.read_bytes())


def raise_for_error(response: httpx.Response) -> None:
    if response.is_success:
        return
    try:
        error = ErrorResponse.model_validate_json(response.content).error
    except ValueError:   # not the envelope (a proxy's page, a code newer than this client)
        raise ImpressError(response.status_code, None, response.text[:500]) from None
    raise ImpressError(response.status_code, error.code, error.message, error.details)


def retry_after(response: httpx.Response) -> Optional[float]:
    value = response.headers.get("retry-after", "")
    return float(value) if value.replace(".", "", 1).isdigit() else None


class Operations:
    """What both clients do, as flows."""

    def __init__(self, http: httpx.Client | httpx.AsyncClient, backoff: Backoff):
        self.http = http
        self.backoff = backoff

    def call(self, build: Callable[[], httpx.Request]) -> Flow[httpx.Response]:
        """One request, sent again after its Retry-After when refused for now (429, 503)."""
        for attempt in range(self.backoff.retries + 1):
            response = yield build()
            if response.status_code not in (429, 503) or attempt == self.backoff.retries:
                break
            yield Pause(retry_after(response) or self.backoff.delay(attempt))
        raise_for_error(response)
        return response

    def submit(self, path: str, files: list[tuple[str, tuple[str, bytes]]], params: Optional[BaseModel],
               image_urls: Sequence[str], idempotency_key: Optional[str], webhook: Optional[str],
               webhook_events: Optional[Sequence[WebhookEvent | str]], options: "SubmitExtras") -> Flow[Submission]:
        data = form_fields(params)
        if options.expires_in is not None:
            data["expires_in"] = options.expires_in
        if image_urls:
            data["image_url"] = list(image_urls)
        if webhook is not None:
            data["webhook"] = webhook
            data["webhook_events"] = [WebhookEvent(e).value for e in webhook_events or [WebhookEvent.completed]]
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        if options.prefer_wait is not None:
            headers["Prefer"] = f"wait={options.prefer_wait}"
        response = yield from self.call(lambda: self.http.build_request(
            "POST", path, data=data, files=files or None, headers=headers))
        return (JobView if response.status_code == 200 else Accepted).model_validate_json(response.content)

    def job(self, job: JobRef) -> Flow[JobView]:
        response = yield from self.call(lambda: self.http.build_request("GET", f"/v1/jobs/{job_id(job)}"))
        return JobView.model_validate_json(response.content)

    def wait(self, job: JobRef, timeout_s: float) -> Flow[JobView]:
        deadline = time.monotonic() + timeout_s
        for attempt in itertools.count():
            view = yield from self.job(job)
            if view.state.finished:
                return view
            pause = self.backoff.delay(attempt)
            if time.monotonic() + pause > deadline:
                raise JobTimeout(f"job {view.id} still {view.state.value} after {timeout_s}s")
            yield Pause(pause)

    def blob(self, path: str) -> Flow[bytes]:
        response = yield from self.call(lambda: self.http.build_request("GET", path))
        return response.content

    def webhook_secret(self) -> Flow[str]:
        response = yield from self.call(lambda: self.http.build_request("GET", "/v1/webhook-secret"))
        return WebhookSecret.model_validate_json(response.content).secret

    def cancel(self, job: JobRef) -> Flow[JobView]:
        response = yield from self.call(lambda: self.http.build_request("DELETE", f"/v1/jobs/{job_id(job)}"))
        return JobView.model_validate_json(response.content)

    def delete_data(self, job: JobRef) -> Flow[None]:
        yield from self.call(lambda: self.http.build_request("DELETE", f"/v1/jobs/{job_id(job)}/data"))

    def download_results(self, view: JobView, folder: str | Path) -> Flow[list[Path]]:
        """Every result image of a finished purify job, written to `folder` under its own name (its last
        part only: whatever a server answers, nothing is written outside `folder`)."""
        Path(folder).mkdir(parents=True, exist_ok=True)
        written = []
        for link in view.results:
            data = yield from self.blob(f"/v1/jobs/{view.id}/results/{link.index}")
            path = Path(folder) / safe_file_name(link.name, fallback=f"result-{link.index}.png")
            path.write_bytes(data)
            written.append(path)
        return written


@dataclass(frozen=True)
class SubmitExtras:
    prefer_wait: Optional[int] = None    # Prefer: wait=N (seconds; the service caps it)
    expires_in: Optional[int] = None     # seconds the job and its data are kept after its last change


class EventStreamEnded(Exception):
    """The event stream closed before the job's final state (the client reconnects after the last event)."""


@dataclass
class EventCursor:
    """What both clients' event iterators share: the stream's request, where to resume after a dropped
    connection (the last event's id), and how long to pause before reconnecting (or to give up)."""

    job: JobRef
    backoff: Backoff
    last_event_id: Optional[str] = None
    failures: int = 0

    def source(self) -> dict:
        """connect_sse's arguments: no read timeout (heartbeats come every IMPRESS_EVENTS_HEARTBEAT_S)."""
        headers = {"Accept": "text/event-stream", **({"Last-Event-ID": self.last_event_id} if self.last_event_id else {})}
        return {"method": "GET", "url": f"/v1/jobs/{job_id(self.job)}/events", "headers": headers,
                "timeout": httpx.Timeout(10.0, read=None)}

    def take(self, sse: httpx_sse.ServerSentEvent) -> JobEventView:
        event = JobEventView(id=sse.id or None, job=JobView.model_validate_json(sse.data))
        self.last_event_id, self.failures = event.id or self.last_event_id, 0
        return event

    def ended(self) -> EventStreamEnded:
        return EventStreamEnded(f"the event stream of job {job_id(self.job)} ended before its final state")

    def pause_after(self, error: Exception) -> float:
        """The pause before reconnecting; re-raises `error` once `backoff.retries` attempts failed in a row."""
        if self.failures >= self.backoff.retries:
            raise error
        self.failures += 1
        return self.backoff.delay(self.failures - 1)


def client_options(base_url: str, api_key: Optional[str], timeout_s: float) -> dict:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    return {"base_url": base_url, "headers": headers, "timeout": timeout_s}


class _Methods:
    """The public methods, each running its flow with the client's `_run` (blocking or awaitable)."""

    ops: Operations
    _run: Callable[[Flow[T]], Any]

    def purify(self, images: Sequence[ImageInput] = (), image_urls: Sequence[str] = (), *,
               params: Optional[PurifyOverrides] = None, idempotency_key: Optional[str] = None,
               webhook: Optional[str] = None, webhook_events: Optional[Sequence[WebhookEvent | str]] = None,
               prefer_wait: Optional[int] = None, expires_in: Optional[int] = None):
        """`prefer_wait`: answer the finished JobView when the job ends within that many seconds."""
        files = [image_file("images", image) for image in images]
        return self._run(self.ops.submit("/v1/purify", files, params, image_urls, idempotency_key, webhook,
                                         webhook_events, SubmitExtras(prefer_wait, expires_in)))

    def detect(self, images: Sequence[ImageInput] = (), image_urls: Sequence[str] = (), *,
               params: Optional[DetectParams] = None, idempotency_key: Optional[str] = None,
               webhook: Optional[str] = None, webhook_events: Optional[Sequence[WebhookEvent | str]] = None,
               prefer_wait: Optional[int] = None, expires_in: Optional[int] = None):
        """Small requests are answered inline (a finished JobView), larger ones queued (Accepted)."""
        files = [image_file("images", image) for image in images]
        return self._run(self.ops.submit("/v1/detect", files, params, image_urls, idempotency_key, webhook,
                                         webhook_events, SubmitExtras(prefer_wait, expires_in)))

    def evaluate(self, clean: Sequence[ImageInput], protected: Sequence[ImageInput] = (),
                 purified: Sequence[ImageInput] = (), *, params: EvaluateParams, idempotency_key: Optional[str] = None,
                 webhook: Optional[str] = None, webhook_events: Optional[Sequence[WebhookEvent | str]] = None,
                 prefer_wait: Optional[int] = None, expires_in: Optional[int] = None):
        files = [image_file(role, image) for role, images in (("clean", clean), ("protected", protected),
                                                              ("purified", purified)) for image in images]
        return self._run(self.ops.submit("/v1/evaluate", files, params, (), idempotency_key, webhook, webhook_events,
                                         SubmitExtras(prefer_wait, expires_in)))

    def job(self, job: JobRef):
        return self._run(self.ops.job(job))

    def wait(self, job: JobRef, timeout_s: float = 3600):
        """The job once finished (succeeded, failed or canceled); JobTimeout past `timeout_s`."""
        return self._run(self.ops.wait(job, timeout_s))

    def result(self, job: JobRef, index: int):
        """A purified image, PNG bytes."""
        return self._run(self.ops.blob(f"/v1/jobs/{job_id(job)}/results/{index}"))

    def file(self, job: JobRef, name: str):
        """A report file of an evaluation (report.html, results.md)."""
        return self._run(self.ops.blob(f"/v1/jobs/{job_id(job)}/files/{name}"))

    def download_results(self, view: JobView, folder: str | Path):
        return self._run(self.ops.download_results(view, folder))

    def cancel(self, job: JobRef):
        return self._run(self.ops.cancel(job))

    def delete_data(self, job: JobRef):
        """Delete a finished job's inputs and results now (their URLs answer 410 gone afterwards)."""
        return self._run(self.ops.delete_data(job))

    def webhook_secret(self):
        """The secret that signs this API key's webhooks (pass it to verify_webhook)."""
        return self._run(self.ops.webhook_secret())


class ImpressClient(_Methods):
    def __init__(self, base_url: str, api_key: Optional[str] = None, *, timeout_s: float = 60.0,
                 backoff: Backoff = Backoff(), transport: Optional[httpx.BaseTransport] = None):
        self.http = httpx.Client(transport=transport, **client_options(base_url, api_key, timeout_s))
        self.ops = Operations(self.http, backoff)

    def _run(self, flow: Flow[T]) -> T:
        try:
            step = next(flow)
            while True:
                if isinstance(step, Pause):
                    time.sleep(step.seconds)
                    step = flow.send(None)
                else:
                    step = flow.send(self.http.send(step))
        except StopIteration as done:
            return done.value

    def events(self, job: JobRef, last_event_id: Optional[str] = None) -> Iterator[JobEventView]:
        """The job's events (state changes, progress) as they happen, until its final state; a dropped
        connection is resumed after the last event seen, up to `backoff.retries` times in a row."""
        cursor = EventCursor(job, self.ops.backoff, last_event_id)
        while True:
            try:
                with httpx_sse.connect_sse(self.http, **cursor.source()) as source:
                    if not source.response.is_success:
                        raise_for_error(httpx.Response(source.response.status_code, content=source.response.read()))
                    for sse in source.iter_sse():
                        yield (event := cursor.take(sse))
                        if event.job.state.finished:
                            return
                raise cursor.ended()
            except (httpx.TransportError, EventStreamEnded) as exc:
                time.sleep(cursor.pause_after(exc))

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> "ImpressClient":
        return self

    def __exit__(self, *_) -> None:
        self.close()


class AsyncImpressClient(_Methods):
    def __init__(self, base_url: str, api_key: Optional[str] = None, *, timeout_s: float = 60.0,
                 backoff: Backoff = Backoff(), transport: Optional[httpx.AsyncBaseTransport] = None):
        self.http = httpx.AsyncClient(transport=transport, **client_options(base_url, api_key, timeout_s))
        self.ops = Operations(self.http, backoff)

    async def _run(self, flow: Flow[T]) -> T:
        try:
            step = next(flow)
            while True:
                if isinstance(step, Pause):
                    await asyncio.sleep(step.seconds)
                    step = flow.send(None)
                else:
                    step = flow.send(await self.http.send(step))
        except StopIteration as done:
            return done.value

    async def events(self, job: JobRef, last_event_id: Optional[str] = None) -> AsyncIterator[JobEventView]:
        """As ImpressClient.events, asynchronously (`async for event in client.events(job)`)."""
        cursor = EventCursor(job, self.ops.backoff, last_event_id)
        while True:
            try:
                async with httpx_sse.aconnect_sse(self.http, **cursor.source()) as source:
                    if not source.response.is_success:
                        raise_for_error(httpx.Response(source.response.status_code, content=await source.response.aread()))
                    async for sse in source.aiter_sse():
                        yield (event := cursor.take(sse))
                        if event.job.state.finished:
                            return
                raise cursor.ended()
            except (httpx.TransportError, EventStreamEnded) as exc:
                await asyncio.sleep(cursor.pause_after(exc))

    async def aclose(self) -> None:
        await self.http.aclose()

    async def __aenter__(self) -> "AsyncImpressClient":
        return self

    async def __aexit__(self, *_) -> None:
        await self.aclose()
