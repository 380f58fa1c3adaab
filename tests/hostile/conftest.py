"""The hostile suite's fixtures: two tenants' keys, and the app served by a real uvicorn in this
process (for the findings about the wire: chunked and slow bodies, floods)."""
from __future__ import annotations

import contextlib
import socket
import threading
import time

import pytest
import uvicorn

from tests.support import free_port, photo, png_bytes, wait_for

TENANT_A, TENANT_B = "tenant-a-key-0123456789", "tenant-b-key-0123456789"
KEYS = f"{TENANT_A},{TENANT_B}"
IMAGE = png_bytes(photo(32, 24, seed=5))


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@contextlib.contextmanager
def served(app):
    """`app` on a real uvicorn in a thread of this process; yields (host, port)."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           timeout_graceful_shutdown=1))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, 10, "uvicorn started")
        yield "127.0.0.1", port
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture
def keyed_api(make_fast_api):
    """make(**settings) -> (TestClient, store, queue, settings) of a service with the two tenants' keys."""
    return lambda **overrides: make_fast_api(api_keys=KEYS, **overrides)


def raw_request(host: str, port: int, head: str) -> socket.socket:
    """A socket that has sent `head` (request line and headers, CRLF-terminated) and nothing else."""
    sock = socket.create_connection((host, port), timeout=10)
    sock.sendall(head.replace("\n", "\r\n").encode() + b"\r\n")
    return sock


def response_status(sock: socket.socket, timeout_s: float) -> int:
    """The status of the answer on `sock`, waiting at most `timeout_s`."""
    sock.settimeout(timeout_s)
    data = b""
    deadline = time.monotonic() + timeout_s
    while b"\r\n" not in data and time.monotonic() < deadline:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return int(data.split(b" ", 2)[1])
