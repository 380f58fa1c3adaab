"""Finding 9: image URLs have their own allow-list (IMPRESS_URL_ALLOWED_HOSTS, `host` or `host:port`):
allowing a webhook receiver opens nothing to image URLs, a port other than 80/443 must be listed, and
the error texts tell a caller nothing about what is behind a URL."""
from __future__ import annotations

import pytest

from impress.contract import ErrorCode
from impress.settings import Settings
from impress.ssrf import UrlGuard, UrlRefused
from tests.hostile.conftest import TENANT_A, bearer
from tests.loopback import LoopbackServer, loopback_guards, loopback_resolver

PUBLIC = {"public.example": ["93.184.216.34"]}


def resolve(host: str, port: int) -> list[str]:
    return PUBLIC.get(host) or loopback_resolver(host, port)


@pytest.mark.parametrize("allowed, url, ok", [
    ("", "https://public.example/a.png", True),
    ("", "https://public.example:8443/a.png", False),          # not 80/443 and not listed
    ("public.example:8443", "https://public.example:8443/a.png", True),
    ("127.0.0.1", "http://127.0.0.1/a.png", True),
    ("127.0.0.1", "http://127.0.0.1:6379/", False),            # naming a host opens 80/443 only
    ("127.0.0.1:8080", "http://127.0.0.1:8080/a.png", True),
    ("127.0.0.1:8080", "http://127.0.0.1:8081/a.png", False),
    ("[::1]:8080", "http://[::1]:8080/a.png", False),          # the test resolver knows no ::1: refused
])
def test_image_url_allow_list(allowed, url, ok):
    guard = UrlGuard.for_images(Settings(_env_file=None, url_allowed_hosts=allowed), resolver=resolve)
    if ok:
        guard.check(url)
    else:
        with pytest.raises(UrlRefused):
            guard.check(url)


def test_webhook_allow_list_opens_nothing_to_image_urls_and_errors_are_generic(keyed_api):
    closed = LoopbackServer("127.0.0.1", {"/a.png": lambda: (200, {}, b"x")})   # never started: port closed
    client, _, _, settings = keyed_api(webhook_allowed_hosts="127.0.0.1", url_allowed_hosts="127.0.0.1")
    client.app.state.url_guards = loopback_guards(settings)
    answers = [client.post("/v1/purify", headers=bearer(TENANT_A), data={"image_url": url}).json()["error"]
               for url in (closed.url("/a.png"), "http://127.0.0.1:6379/", "http://127.0.0.2/a.png",
                           "http://127.0.0.1/a.png")]
    closed.httpd.server_close()
    assert [a["code"] for a in answers] == [ErrorCode.url_not_allowed] * 3 + [ErrorCode.image_fetch_failed]
    # The same text whatever was or was not found there (no addresses, ports or statuses).
    assert {a["details"][0]["error"]["message"] for a in answers[:3]} == {"this URL is not allowed"}
    assert answers[3]["details"][0]["error"]["message"] == "the image could not be fetched"
