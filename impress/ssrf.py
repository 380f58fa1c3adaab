"""The SSRF guard: the one way the service contacts a URL a caller gave it (webhooks, image URLs).

A URL is allowed when it is http(s) (image URLs: https, plain http only for allow-listed hosts) and
every address its host resolves to is public: not private, loopback, link-local (169.254.169.254, the
cloud metadata address, is one), multicast, reserved, shared (100.64/10, where 100.100.100.200 serves
metadata), unspecified; an IPv6 address must be global unicast (2000::/3) outside the special
ranges, so IPv4-compatible, SIIT-translated and NAT64 forms of a private address are refused too --
unless the allow-list names the host or a network holding the address: IMPRESS_WEBHOOK_ALLOWED_HOSTS
for webhooks, IMPRESS_URL_ALLOWED_HOSTS for image URLs (entries `host` or `host:port`: an image URL
on a port other than 80/443 must be listed with its port, so allowing one internal server does not
open its every port).

Every fetch and every webhook post has one overall deadline (anyio.fail_after), whatever the server
does: headers a byte at a time, or a body that trickles.

The check happens before any connection, and the connection goes to the checked address (the URL's
host travels in the Host header and TLS SNI, so certificates are still verified against the name):
no second lookup, so no DNS-rebinding window. Redirects of image URLs are checked the same way, hop
by hop; webhooks follow none. Proxies from the environment are ignored (they would connect for us).
"""
from __future__ import annotations

import functools
import ipaddress
import socket
import ssl
from dataclasses import dataclass, field
from typing import Callable, Optional

import anyio
import httpx

from .contract import ErrorCode
from .settings import Settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# host, port -> the addresses it resolves to. Tests pass a stub: the guard's only view of DNS.
Resolver = Callable[[str, int], list[str]]

MAX_REDIRECTS = 3
DEFAULT_PORTS = (80, 443)
GLOBAL_UNICAST = ipaddress.ip_network("2000::/3")
_6TO4 = ipaddress.ip_network("2002::/16")
# Special-purpose ranges inside 2000::/3 that Python's is_global does not know yet.
SPECIAL_V6 = (ipaddress.ip_network("3fff::/20"),)   # documentation (RFC 9637)


@functools.lru_cache(maxsize=1)
def tls_context() -> ssl.SSLContext:
    """One TLS context for every fetch: loading the CA store takes longer than a loopback fetch."""
    return httpx.create_ssl_context()


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
    """Globally routable unicast: IPv4 that is global, or IPv6 in 2000::/3 that is global (not one of
    the special-purpose ranges) and, for 6to4, carries a public IPv4 address. An IPv4-mapped address
    is judged as its IPv4 address; every other IPv6 form of IPv4 (compatible ::a.b.c.d, SIIT
    ::ffff:0:a.b.c.d, NAT64 64:ff9b::/96 and 64:ff9b:1::/48) lies outside 2000::/3 and is refused."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return is_public(ip.ipv4_mapped)
        if ip not in GLOBAL_UNICAST or not ip.is_global or any(ip in net for net in SPECIAL_V6):
            return False
        return ip not in _6TO4 or is_public(ip.sixtofour)
    return ip.is_global and not ip.is_multicast


def _host(name: str) -> str:
    return name.lower().rstrip(".").removeprefix("[").removesuffix("]")


@dataclass(frozen=True)
class AllowList:
    """An allow-list setting: host names, addresses and CIDR networks (any port the guard allows), and
    `host:port` entries (that host on that port only)."""

    hosts: frozenset[str] = frozenset()
    networks: tuple[IPNetwork, ...] = ()
    host_ports: frozenset[tuple[str, int]] = frozenset()

    @classmethod
    def parse(cls, text: str) -> "AllowList":
        hosts, networks, host_ports = set(), [], set()
        for item in (part.strip() for part in text.split(",")):
            if not item:
                continue
            host, sep, port = item.rpartition(":")
            if sep and port.isdigit() and (host.endswith("]") or ":" not in host):   # host:port, [v6]:port
                host_ports.add((_host(host), int(port)))
                continue
            try:
                networks.append(ipaddress.ip_network(_host(item), strict=False))
            except ValueError:
                hosts.add(_host(item))
        return cls(frozenset(hosts), tuple(networks), frozenset(host_ports))

    def names(self, host: str) -> bool:
        return _host(host) in self.hosts

    def lists(self, host: str, port: int) -> bool:
        return (_host(host), port) in self.host_ports

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
    transport: Optional[httpx.AsyncBaseTransport] = field(default=None, repr=False)   # tests: a recording stub
    listed_ports_only: bool = False    # a port other than 80/443 needs a host:port entry

    @classmethod
    def for_images(cls, settings: Settings, **kw) -> "UrlGuard":
        return cls(AllowList.parse(settings.url_allowed_hosts), https_only=True, listed_ports_only=True, **kw)

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
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        listed = self.allow.lists(parsed.host, port)
        if self.listed_ports_only and port not in DEFAULT_PORTS and not listed:
            raise UrlRefused(f"{parsed.host}: port {port} is not allowed (only 80 and 443, or a listed host:port)")
        named = listed or self.allow.names(parsed.host)
        if parsed.scheme == "http" and self.https_only and not (named or self._literal_allowed(parsed.host)):
            raise UrlRefused(f"{parsed.host}: plain http only for allow-listed hosts; use https")
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

    def _client(self, timeout_s: float) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=self.transport, timeout=timeout_s, follow_redirects=False, trust_env=False,
                                 verify=tls_context())

    async def _checked(self, url: str | httpx.URL) -> Target:
        # DNS blocks: in a thread, left behind if the deadline passes first.
        return await anyio.to_thread.run_sync(self.check, url, abandon_on_cancel=True)

    async def fetch_async(self, url: str, *, max_bytes: int, timeout_s: float) -> bytes:
        """GET the URL's body: redirects re-checked hop by hop, at most `max_bytes`, all of it (DNS,
        connection, headers, body) within `timeout_s`."""
        try:
            with anyio.fail_after(timeout_s):
                async with self._client(timeout_s) as client:
                    target = await self._checked(url)
                    for _ in range(MAX_REDIRECTS + 1):
                        options = target.request_options()
                        # The raw body is what is counted: no compressed body may expand past the limit.
                        options["headers"]["Accept-Encoding"] = "identity"
                        async with client.stream("GET", target.connect_url, **options) as response:
                            if not response.is_redirect:
                                return await _read_body(response, max_bytes)
                            target = await self._checked(target.url.join(response.headers["location"]))
                    raise FetchFailed(f"more than {MAX_REDIRECTS} redirects")
        except (TimeoutError, httpx.TimeoutException) as exc:
            raise FetchFailed(f"not complete within {timeout_s}s ({type(exc).__name__})") from exc
        except (httpx.HTTPError, httpx.InvalidURL) as exc:   # InvalidURL: a redirect to no URL
            raise FetchFailed(f"{type(exc).__name__}: {exc}") from exc

    def fetch(self, url: str, *, max_bytes: int, timeout_s: float) -> bytes:
        """fetch_async, from a thread without an event loop."""
        return anyio.run(functools.partial(self.fetch_async, url, max_bytes=max_bytes, timeout_s=timeout_s))

    async def post_async(self, url: str, body: bytes, headers: dict[str, str], *, timeout_s: float) -> int:
        """POST to a checked address within `timeout_s` overall; the status code (redirects are not
        followed: a 3xx is returned). httpx.TimeoutException past the deadline."""
        try:
            with anyio.fail_after(timeout_s):
                target = await self._checked(url)
                options = target.request_options()
                async with self._client(timeout_s) as client:
                    async with client.stream("POST", target.connect_url, content=body,
                                             headers={**headers, **options["headers"]},
                                             extensions=options["extensions"]) as response:
                        return response.status_code
        except TimeoutError as exc:
            raise httpx.TimeoutException(f"no answer within {timeout_s}s") from exc

    def post(self, url: str, body: bytes, headers: dict[str, str], *, timeout_s: float) -> int:
        """post_async, from a thread without an event loop."""
        return anyio.run(functools.partial(self.post_async, url, body, headers, timeout_s=timeout_s))


async def _read_body(response: httpx.Response, max_bytes: int) -> bytes:
    if response.status_code != 200:
        raise FetchFailed(f"answered HTTP {response.status_code}")
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise FetchFailed(f"body is {declared} bytes; the limit is {max_bytes}", ErrorCode.payload_too_large)
    body = bytearray()
    async for chunk in response.aiter_raw():   # as received: a chunk size would wait for that many bytes
        body += chunk
        if len(body) > max_bytes:
            raise FetchFailed(f"body is over the limit of {max_bytes} bytes", ErrorCode.payload_too_large)
    return bytes(body)


@dataclass
class UrlGuards:
    """The guards of a submission: image URLs (https) and webhooks (http or https)."""

    images: UrlGuard
    webhooks: UrlGuard

    @classmethod
    def from_settings(cls, settings: Settings) -> "UrlGuards":
        return cls(UrlGuard.for_images(settings), UrlGuard.for_webhooks(settings))
