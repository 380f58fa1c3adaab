"""The SSRF guard's decisions, with a resolver stub and a recording transport at the boundary: a
refused target is refused before any connection, and nothing here leaves this process."""
from __future__ import annotations

import httpx
import pytest

from impress.contract import ErrorCode
from impress.ssrf import AllowList, FetchFailed, UrlGuard, UrlRefused

DNS = {"public.example": ["93.184.216.34"], "metadata.example": ["169.254.169.254"],
       "v6metadata.example": ["fd00:ec2::254"], "alibaba-metadata.example": ["100.100.100.200"],
       "internal.example": ["10.1.2.3"], "loop.example": ["127.0.0.2"], "mapped.example": ["::ffff:127.0.0.1"],
       "multicast.example": ["224.0.0.1"], "reserved.example": ["240.0.0.1"], "zero.example": ["0.0.0.0"],
       "split.example": ["93.184.216.34", "192.168.1.20"], "v6public.example": ["2606:4700::1111"],
       "hooks.internal": ["10.0.0.7"], "office.example": ["10.20.3.4"]}


def body(data: bytes, status: int = 200, **headers) -> httpx.Response:
    """A response whose body streams, as from a socket (bytes content would arrive already read)."""
    return httpx.Response(status, headers=headers, stream=httpx.ByteStream(data))


class Boundary:
    """What the guard sees of the network: a DNS stub and a transport that records every request."""

    def __init__(self, answer=lambda request: body(b"body")):
        self.lookups: list[str] = []
        self.requests: list[httpx.Request] = []
        self.answer = answer

    def resolve(self, host: str, port: int) -> list[str]:
        self.lookups.append(host)
        return DNS.get(host, [host] if _literal(host) else [])

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(lambda request: (self.requests.append(request), self.answer(request))[1])

    def guard(self, allow: str = "", https_only: bool = True) -> UrlGuard:
        return UrlGuard(AllowList.parse(allow), https_only=https_only, resolver=self.resolve, transport=self.transport())


def _literal(host: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


@pytest.mark.parametrize("url, allow, https_only, allowed", [
    ("https://public.example/a.png", "", True, True),
    ("https://v6public.example/a.png", "", True, True),
    ("https://metadata.example/latest/meta-data", "", True, False),
    ("https://169.254.169.254/latest/meta-data", "", True, False),
    ("https://v6metadata.example/", "", True, False),
    ("https://[fd00:ec2::254]/", "", True, False),
    ("https://alibaba-metadata.example/", "", True, False),
    ("https://internal.example/", "", True, False),
    ("https://loop.example/", "", True, False),
    ("https://mapped.example/", "", True, False),
    ("https://multicast.example/", "", True, False),
    ("https://reserved.example/", "", True, False),
    ("https://zero.example/", "", True, False),
    ("https://split.example/", "", True, False),          # one private address is enough to refuse
    ("https://nowhere.example/", "", True, False),        # does not resolve
    ("http://public.example/a.png", "", True, False),     # image URLs: https unless allow-listed
    ("http://public.example/hook", "", False, True),      # webhooks: http(s)
    ("ftp://public.example/a.png", "", False, False),
    ("file:///etc/passwd", "", False, False),
    ("gopher://127.0.0.1:6379/_FLUSHALL", "127.0.0.1", False, False),
    ("not a url", "", False, False),
    ("http://127.0.0.1:8080/a.png", "127.0.0.1", True, True),     # allow-listed address: http too
    ("http://127.0.0.2:8080/a.png", "127.0.0.1", True, False),    # the loopback address nobody named
    ("http://hooks.internal/hook", "hooks.internal", True, True),  # an allow-listed name
    ("https://office.example/", "10.20.0.0/16", True, True),       # an allow-listed network
    ("https://internal.example/", "10.20.0.0/16", True, False),
    ("http://[::1]:8080/hook", "[::1]", True, True),               # a bracketed IPv6 address
    ("http://[::1]:8080/hook", "127.0.0.1", True, False),
])
def test_guard_decisions(url, allow, https_only, allowed):
    boundary = Boundary()
    guard = boundary.guard(allow, https_only)
    if allowed:
        assert guard.check(url).url == httpx.URL(url)
    else:
        with pytest.raises(UrlRefused) as refused:
            guard.check(url)
        assert refused.value.code == ErrorCode.url_not_allowed


@pytest.mark.parametrize("url", ["https://metadata.example/x", "https://internal.example/x", "https://loop.example/",
                                 "http://public.example/x"])
def test_a_refused_target_is_never_connected_to(url):
    boundary = Boundary()
    with pytest.raises(UrlRefused):
        boundary.guard().fetch(url, max_bytes=1000, timeout_s=1)
    if "public" not in url:   # the same address refused for a webhook
        with pytest.raises(UrlRefused):
            boundary.guard(https_only=False).post(url, b"{}", {}, timeout_s=1)
    assert boundary.requests == []


def test_the_connection_goes_to_the_checked_address_resolved_once():
    """No second lookup between check and connect: a rebinding DNS answer cannot slip in."""
    answers = iter([["93.184.216.34"], ["127.0.0.1"]])
    boundary = Boundary()
    guard = boundary.guard()
    guard.resolver = lambda host, port: (boundary.lookups.append(host), next(answers))[1]
    assert guard.fetch("https://public.example:8443/a.png?x=1", max_bytes=1000, timeout_s=1) == b"body"
    (request,) = boundary.requests
    assert boundary.lookups == ["public.example"]
    assert request.url.host == "93.184.216.34" and request.url.port == 8443 and request.url.query == b"x=1"
    assert request.headers["host"] == "public.example:8443"
    assert request.extensions["sni_hostname"] == "public.example"   # certificates are checked against the name


def redirect_to(location: str):
    return lambda request: (httpx.Response(302, headers={"Location": location}) if request.url.path == "/start"
                            else body(b"final"))


def test_a_redirect_to_a_private_address_is_refused_before_connecting():
    boundary = Boundary(redirect_to("https://metadata.example/latest/meta-data"))
    with pytest.raises(UrlRefused):
        boundary.guard().fetch("https://public.example/start", max_bytes=1000, timeout_s=1)
    assert [r.url.path for r in boundary.requests] == ["/start"]
    assert boundary.lookups == ["public.example", "metadata.example"]


def test_a_redirect_to_a_public_address_is_checked_and_followed():
    boundary = Boundary(redirect_to("/final"))
    assert boundary.guard().fetch("https://public.example/start", max_bytes=1000, timeout_s=1) == b"final"
    assert boundary.lookups == ["public.example", "public.example"]


def test_a_redirect_to_no_url_is_a_fetch_failure():
    boundary = Boundary(redirect_to("https://public.example:abc/"))
    with pytest.raises(FetchFailed):
        boundary.guard().fetch("https://public.example/start", max_bytes=1000, timeout_s=1)


def test_redirect_loops_end():
    boundary = Boundary(lambda request: httpx.Response(302, headers={"Location": "/start"}))
    with pytest.raises(FetchFailed, match="redirects"):
        boundary.guard().fetch("https://public.example/start", max_bytes=1000, timeout_s=1)


def test_webhook_posts_follow_no_redirect():
    boundary = Boundary(lambda request: httpx.Response(307, headers={"Location": "https://metadata.example/"}))
    assert boundary.guard(https_only=False).post("https://public.example/hook", b"{}", {}, timeout_s=1) == 307
    assert len(boundary.requests) == 1


async def hundreds(n: int):
    for _ in range(n):
        yield b"x" * 100


@pytest.mark.parametrize("answer", [
    lambda request: body(b"x" * 5000, **{"Content-Length": "5000"}),
    lambda request: httpx.Response(200, content=hundreds(50)),   # no length announced
])
def test_bodies_past_the_limit_are_cut_off(answer):
    with pytest.raises(FetchFailed) as failed:
        Boundary(answer).guard().fetch("https://public.example/big", max_bytes=1000, timeout_s=1)
    assert failed.value.code == ErrorCode.payload_too_large


def test_an_error_status_is_a_fetch_failure():
    with pytest.raises(FetchFailed) as failed:
        Boundary(lambda request: httpx.Response(404)).guard().fetch("https://public.example/", max_bytes=10, timeout_s=1)
    assert failed.value.code == ErrorCode.image_fetch_failed and "404" in failed.value.message
