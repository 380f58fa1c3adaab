"""The SSRF guard: the one way the service contacts a URL a caller gave it (webhooks, image URLs).

A URL is allowed when it is http(s) (image URLs: https, plain http only for allow-listed hosts) and
every address its host resolves to is public: not private, loopback, link-local (169.254.169.254, the
cloud metadata address, is one), multicast, reserved, shared (100.64/10, where 100.100.100.200 serves
metadata), unspecified, or a private IPv4 address inside an IPv6 one (mapped, 6to4, Teredo, NAT64;
fd00:ec2::254 is unique-local, hence private) -- unless IMPRESS_WEBHOOK_ALLOWED_HOSTS names the host
or a network holding the address.

The check happens before any connection, and the connection goes to the checked address (the URL's
host travels in the Host header and TLS SNI, so certificates are still verified against the name):
no second lookup, so no DNS-rebinding window. Redirects of image URLs are checked the same way, hop
by hop; webhooks follow none. Proxies from the environment are ignored (they would connect for us).
"""
from __future__ import annotations

import ipaddress
import socket
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import httpx

from .contract import ErrorCode
from .settings import Settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# host, port -> the addresses it resolves to. Tests pass a stub: the guard's only view of DNS.
Resolver = Callable[[str, int], list[str]]

MAX_REDIRECTS = 3
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class UrlRefused(Exception):
    """The service will not contact this URL (policy): url_not_allowed."""

    code = ErrorCode.url_not_allowed

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class FetchFailed(Exception):
    """The URL was allowed but gave no usable answer: image_fetch_failed, or payload_too_large."""

    def __init__(self, message: str, code: ErrorCode = ErrorCode.image_fetch_failed):
        super().__init__(message)
        self.code, self.message = code, message


def is_public(ip: IPAddress) -> bool:
    """Globally routable unicast, also for the IPv4 address an IPv6 one carries."""
    if ip.is_multicast or not ip.is_global or getattr(ip, "is_site_local", False):
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = [ip.ipv4_mapped, ip.sixtofour, ip.teredo[1] if ip.teredo else None,
                    ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF) if ip in _NAT64 else None]
        return all(is_public(v4) for v4 in embedded if v4 is not None)
    return True


@dataclass(frozen=True)
class AllowList:
    """IMPRESS_WEBHOOK_ALLOWED_HOSTS: host names, addresses and CIDR networks."""

    hosts: frozenset[str] = frozenset()
    networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def parse(cls, text: str) -> "AllowList":
        hosts, networks = set(), []
        for item in (part.strip().removeprefix("[").removesuffix("]") for part in text.split(",")):
            if not item:
                continue
            try:
                networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                hosts.add(item.lower().rstrip("."))
        return cls(frozenset(hosts), tuple(networks))

    def names(self, host: str) -> bool:
        return host.lower().rstrip(".") in self.hosts

    def covers(self, ip: IPAddress) -> bool:
        return any(ip in network for network in self.networks)


@dataclass(frozen=True)
class Target:
    """A checked URL and the address to connect to."""

    url: httpx.URL
    address: str

    @property
    def connect_url(self) -> httpx.URL:
        return self.url.copy_with(host=self.address)

    def request_options(self) -> dict:
        """Host header and SNI of the name, so virtual hosts and certificate checks see the name."""
        extensions = {"sni_hostname": self.url.host} if self.url.scheme == "https" else {}
        return {"headers": {"Host": self.url.netloc.decode("ascii")}, "extensions": extensions}


@dataclass
class UrlGuard:
    allow: AllowList
    https_only: bool
    resolver: Resolver = system_resolver
    transport: Optional[httpx.BaseTransport] = field(default=None, repr=False)   # tests: a recording stub

    @classmethod
    def for_images(cls, settings: Settings, **kw) -> "UrlGuard":
        return cls(AllowList.parse(settings.webhook_allowed_hosts), https_only=True, **kw)

    @classmethod
    def for_webhooks(cls, settings: Settings, **kw) -> "UrlGuard":
        return cls(AllowList.parse(settings.webhook_allowed_hosts), https_only=False, **kw)

    def check(self, url: str | httpx.URL) -> Target:
        """Resolve the URL's host and decide; UrlRefused unless every address is allowed."""
        try:
            parsed = httpx.URL(url)
        except (httpx.InvalidURL, TypeError) as exc:
            raise UrlRefused(f"not a URL: {exc}") from exc
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise UrlRefused(f"only http(s) URLs with a host are allowed, not {str(parsed)[:200]!r}")
        named = self.allow.names(parsed.host)
        if parsed.scheme == "http" and self.https_only and not (named or self._literal_allowed(parsed.host)):
            raise UrlRefused(f"{parsed.host}: plain http only for hosts IMPRESS_WEBHOOK_ALLOWED_HOSTS names; use https")
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        try:
            addresses = self.resolver(parsed.host, port)
        except OSError as exc:
            raise UrlRefused(f"{parsed.host} does not resolve: {exc}") from exc
        if not addresses:
            raise UrlRefused(f"{parsed.host} does not resolve")
        for address in addresses:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
            if not (named or self.allow.covers(ip) or is_public(ip)):
                raise UrlRefused(f"{parsed.host} resolves to {ip}, a non-public address "
                                 "(private, loopback, link-local, metadata, multicast or reserved)")
        return Target(parsed, addresses[0])

    def _literal_allowed(self, host: str) -> bool:
        try:
            return self.allow.covers(ipaddress.ip_address(host))
        except ValueError:
            return False

    def _client(self, timeout_s: float) -> httpx.Client:
        return httpx.Client(transport=self.transport, timeout=timeout_s, follow_redirects=False, trust_env=False)

    def fetch(self, url: str, *, max_bytes: int, timeout_s: float) -> bytes:
        """GET the URL's body: redirects re-checked hop by hop, at most `max_bytes`, cut off past
        `timeout_s` (checked between chunks; each read also times out after `timeout_s`)."""
        deadline = time.monotonic() + timeout_s
        try:
            with self._client(timeout_s) as client:
                target = self.check(url)
                for _ in range(MAX_REDIRECTS + 1):
                    options = target.request_options()
                    # The raw body is what is counted: no compressed body may expand past the limit.
                    options["headers"]["Accept-Encoding"] = "identity"
                    with client.stream("GET", target.connect_url, **options) as response:
                        if not response.is_redirect:
                            return _read_body(response, max_bytes, deadline, timeout_s)
                        target = self.check(target.url.join(response.headers["location"]))
                raise FetchFailed(f"more than {MAX_REDIRECTS} redirects")
        except httpx.TimeoutException as exc:
            raise FetchFailed(f"no answer within {timeout_s}s ({type(exc).__name__})") from exc
        except (httpx.HTTPError, httpx.InvalidURL) as exc:   # InvalidURL: a redirect to no URL
            raise FetchFailed(f"{type(exc).__name__}: {exc}") from exc

    def post(self, url: str, body: bytes, headers: dict[str, str], *, timeout_s: float) -> int:
        """POST to a checked address; the status code (redirects are not followed: a 3xx is returned)."""
        target = self.check(url)
        options = target.request_options()
        with self._client(timeout_s) as client:
            with client.stream("POST", target.connect_url, content=body,
                               headers={**headers, **options["headers"]}, extensions=options["extensions"]) as response:
                return response.status_code


def _read_body(response: httpx.Response, max_bytes: int, deadline: float, timeout_s: float) -> bytes:
    if response.status_code != 200:
        raise FetchFailed(f"answered HTTP {response.status_code}")
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise FetchFailed(f"body is {declared} bytes; the limit is {max_bytes}", ErrorCode.payload_too_large)
    body = bytearray()
    for chunk in response.iter_raw():   # as received: a chunk size would wait for that many bytes
        body += chunk
        if len(body) > max_bytes:
            raise FetchFailed(f"body is over the limit of {max_bytes} bytes", ErrorCode.payload_too_large)
        if time.monotonic() > deadline:
            raise FetchFailed(f"body not complete within {timeout_s}s")
    return bytes(body)


@dataclass
class UrlGuards:
    """The guards of a submission: image URLs (https) and webhooks (http or https)."""

    images: UrlGuard
    webhooks: UrlGuard

    @classmethod
    def from_settings(cls, settings: Settings) -> "UrlGuards":
        return cls(UrlGuard.for_images(settings), UrlGuard.for_webhooks(settings))
