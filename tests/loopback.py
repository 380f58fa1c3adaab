"""Loopback HTTP servers the tests talk to (never anything outside 127.0.0.0/8): an image server with
hostile routes (redirects, huge and slow bodies) and a webhook receiver that verifies signatures
with the `standardwebhooks` package, as an integrator's receiver would."""
from __future__ import annotations

import base64
import ipaddress
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Optional

import pytest
import standardwebhooks

from impress.settings import Settings
from impress.ssrf import UrlGuard, UrlGuards
from impress.views import WebhookPayload
from tests.support import MAX_BYTES, free_port, photo, png_bytes

# The signing secret of the tests' services and receivers.
WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"impress-test-webhook-secret-0123").decode()

LOOPBACK = ipaddress.ip_network("127.0.0.0/8")


def loopback_resolver(host: str, port: int) -> list[str]:
    """Resolves loopback addresses only (and `localhost`): any other host, a name or a public literal
    that a fuzzer made up, does not resolve, so the guard refuses it and nothing leaves 127.0.0.0/8."""
    address = "127.0.0.1" if host.lower() == "localhost" else host
    try:
        if ipaddress.ip_address(address) in LOOPBACK:
            return [address]
    except ValueError:
        pass
    raise OSError(f"tests resolve loopback addresses only, not {host!r}")


def loopback_guards(settings: Settings) -> UrlGuards:
    """The app's URL guards with `loopback_resolver`: for tests that generate URLs (schemathesis), set
    `app.state.url_guards = loopback_guards(settings)`."""
    return UrlGuards(UrlGuard.for_images(settings, resolver=loopback_resolver),
                     UrlGuard.for_webhooks(settings, resolver=loopback_resolver))


# A route answers (status, headers, body); a body may be an iterator of chunks (sent as they come).
Route = Callable[[], tuple[int, dict[str, str], object]]


class LoopbackServer:
    """A threaded HTTP server on a loopback address; `hits` lists the paths it was asked for. GETs
    are answered by `routes`, POSTs by `post(headers, body) -> status`."""

    def __init__(self, host: str = "127.0.0.1", routes: Optional[dict[str, Route]] = None,
                 post: Optional[Callable[[dict[str, str], bytes], int]] = None, port: Optional[int] = None):
        self.routes = routes or {}
        self.hits: list[str] = []
        self.host = host
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_):
                pass

            def do_GET(self):
                server.hits.append(self.path)
                status, headers, body = server.routes.get(self.path, lambda: (404, {}, b"not found"))()
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                if isinstance(body, bytes):
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                self.end_headers()   # no length: the body ends when the connection closes
                try:
                    for chunk in body:
                        self.wfile.write(chunk)
                        self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    pass
                self.close_connection = True

            def do_POST(self):
                server.hits.append(self.path)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                status = post({k.lower(): v for k, v in self.headers.items()}, body) if post else 405
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.httpd = ThreadingHTTPServer((host, port or free_port()), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.port}{path}"

    def __enter__(self) -> "LoopbackServer":
        self.thread.start()
        return self

    def __exit__(self, *_) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class TricklingServer:
    """A server that answers every request (GET or POST) with headers sent one byte every `every_s`,
    never finishing: each read returns in time, so only an overall deadline ends the exchange.
    `connections` counts the requests it has seen."""

    def __init__(self, every_s: float = 0.1, host: str = "127.0.0.1"):
        self.every_s, self.host, self.connections = every_s, host, 0
        self.listener = socket.create_server((host, 0))
        self.port = self.listener.getsockname()[1]
        self.stopped = threading.Event()

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.port}{path}"

    def _serve(self) -> None:
        self.listener.settimeout(0.2)
        while not self.stopped.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                continue
            self.connections += 1
            threading.Thread(target=self._trickle, args=(conn,), daemon=True).start()

    def _trickle(self, conn: socket.socket) -> None:
        with conn:
            conn.recv(65536)
            header = b"HTTP/1.1 200 OK\r\nX-Padding: " + b"a" * 100000
            for byte in header:
                if self.stopped.is_set():
                    return
                try:
                    conn.sendall(bytes([byte]))
                except OSError:
                    return
                time.sleep(self.every_s)

    def __enter__(self) -> "TricklingServer":
        threading.Thread(target=self._serve, daemon=True).start()
        return self

    def __exit__(self, *_) -> None:
        self.stopped.set()
        self.listener.close()


def slow_body(chunks: int, every_s: float) -> Route:
    def route():
        def drip():
            for _ in range(chunks):
                yield b"x" * 16
                time.sleep(every_s)
        return 200, {"Content-Type": "image/png"}, drip()
    return route


def huge_body(total: int) -> Route:
    """An unannounced body of `total` bytes (no Content-Length): only counting stops it."""
    return lambda: (200, {"Content-Type": "image/png"}, (b"\0" * 65536 for _ in range(total // 65536)))


@dataclass
class ReceivedWebhook:
    headers: dict[str, str]
    body: bytes
    payload: WebhookPayload     # verified by standardwebhooks


@dataclass
class WebhookReceiver:
    """Answers 204 to every POST whose signature verifies with `secret` (401 otherwise) and keeps it;
    the first `fail_first` deliveries are answered 503, to exercise retries."""

    secret: str = WEBHOOK_SECRET
    host: str = "127.0.0.1"
    fail_first: int = 0
    received: list[ReceivedWebhook] = field(default_factory=list)
    refused: int = 0

    def __post_init__(self):
        self.server = LoopbackServer(self.host, post=self.receive)

    def receive(self, headers: dict[str, str], body: bytes) -> int:
        if self.fail_first > 0:
            self.fail_first -= 1
            return 503
        try:
            payload = WebhookPayload.model_validate(standardwebhooks.Webhook(self.secret).verify(body, headers))
        except standardwebhooks.WebhookVerificationError:
            self.refused += 1
            return 401
        self.received.append(ReceivedWebhook(headers, body, payload))
        return 204

    def of_type(self, event_type: str) -> list[ReceivedWebhook]:
        return [hook for hook in self.received if hook.payload.type == event_type]

    @property
    def url(self) -> str:
        return self.server.url("/hook")

    def __enter__(self) -> "WebhookReceiver":
        self.server.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.server.__exit__(*exc)


IMAGE = png_bytes(photo(40, 32, seed=3))
# The image server's port, the same for every test of a run, so that a service started once can list
# it in IMPRESS_URL_ALLOWED_HOSTS (a port other than 80/443 must be listed).
IMAGES_PORT = free_port()
IMAGES_ALLOWED = f"127.0.0.1:{IMAGES_PORT}"


@pytest.fixture
def internal():
    """A server on the loopback address the allow-list does not name: it must never be reached."""
    with LoopbackServer("127.0.0.2", {"/secret.png": lambda: (200, {}, IMAGE)}) as server:
        yield server


@pytest.fixture
def images(internal):
    """The allow-listed image server on 127.0.0.1: an image, and hostile answers."""
    routes = {"/cat.png": lambda: (200, {"Content-Type": "image/png"}, IMAGE),
              "/text": lambda: (200, {}, b"plain text, not an image"),
              "/to-internal": lambda: (302, {"Location": internal.url("/secret.png")}, b""),
              "/to-metadata": lambda: (302, {"Location": "http://169.254.169.254/latest/meta-data/"}, b""),
              "/to-cat": lambda: (301, {"Location": "/cat.png"}, b""),
              "/huge": huge_body(4 * MAX_BYTES),
              "/slow": slow_body(chunks=100, every_s=0.2)}
    with LoopbackServer("127.0.0.1", routes, port=IMAGES_PORT) as server:
        yield server
