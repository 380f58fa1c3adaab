"""Finding 1: no byte of a body is read before its key is checked, no slot is taken without a key, and
a body is counted as it arrives, chunked or not (real uvicorn, raw sockets)."""
from __future__ import annotations

import select
import socket
import time

import httpx

from app.guard import max_body_bytes
from tests.hostile.conftest import IMAGE, TENANT_A, bearer, raw_request, response_status, served

CHUNKED_POST = "POST /v1/purify HTTP/1.1\nHost: x\nContent-Type: multipart/form-data; boundary=b\n" \
               "Transfer-Encoding: chunked\n{auth}\n"


def test_no_key_is_refused_before_any_body_byte(keyed_api):
    client, *_ = keyed_api()
    with served(client.app) as (host, port):
        sock = raw_request(host, port, CHUNKED_POST.format(auth="X-Trace: 1"))
        # Bound: 0 body bytes sent, and the 401 comes anyway.
        assert response_status(sock, timeout_s=5) == 401
        sock.close()


def test_chunked_body_refused_at_the_cap(keyed_api):
    client, _, _, settings = keyed_api()
    cap = max_body_bytes(settings)
    with served(client.app) as (host, port):
        sock = raw_request(host, port, CHUNKED_POST.format(auth=f"Authorization: Bearer {TENANT_A}"))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
        part = b'--b\r\nContent-Disposition: form-data; name="images"; filename="a.png"\r\n\r\n'
        sock.sendall(b"%x\r\n%s\r\n" % (len(part), part))
        chunk, sent = b"x" * 65536, 0
        try:
            while sent < 40 * 1024 * 1024 and not select.select([sock], [], [], 0)[0]:
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        assert response_status(sock, timeout_s=5) == 413
        sock.close()
    # Bound: refused within the cap plus what the sockets' buffers held, far from the 40 MiB sent before.
    assert sent <= cap + 4 * 1024 * 1024, (sent, cap)


def test_unauthenticated_slow_uploads_take_no_slot(keyed_api):
    client, *_ = keyed_api(max_inflight_submits=4, upload_timeout_s=1.0)
    with served(client.app) as (host, port):
        strangers = [raw_request(host, port, CHUNKED_POST.format(auth="X-Trace: 1")) for _ in range(20)]
        trickler = raw_request(host, port, CHUNKED_POST.format(auth=f"Authorization: Bearer {TENANT_A}"))
        start = time.monotonic()
        trickler.sendall(b"1\r\n-\r\n")
        # An authenticated body that never completes is cut off after IMPRESS_UPLOAD_TIMEOUT_S.
        assert response_status(trickler, timeout_s=5) == 408
        assert time.monotonic() - start < 3
        with httpx.Client(base_url=f"http://{host}:{port}", timeout=10) as http:
            answer = http.post("/v1/purify", headers=bearer(TENANT_A), files={"images": ("a.png", IMAGE)})
        assert answer.status_code == 202, answer.text
        for sock in [*strangers, trickler]:
            sock.close()
