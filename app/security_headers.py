"""Headers that keep what the service serves from acting in its origin, where the console keeps the
caller's key in localStorage.

Downloads (result images, report files) are untrusted content: `Content-Security-Policy: sandbox`
gives an HTML report an opaque origin of its own (no script, no access to the console's storage) and
nosniff stops a browser from guessing a type. Content-Disposition names the file per RFC 6266: an
ASCII fallback, and the exact name as `filename*` (RFC 5987), so any name downloads.
The console's pages get a CSP that runs only the console's own scripts."""
from __future__ import annotations

from urllib.parse import quote

DOWNLOAD_HEADERS = {"Content-Security-Policy": "sandbox", "X-Content-Type-Options": "nosniff"}

# Styles: the console sets a few style attributes (bars, sliders); scripts: its own files only.
CONSOLE_CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
               "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
CONSOLE_HEADERS = {"Content-Security-Policy": CONSOLE_CSP, "X-Content-Type-Options": "nosniff",
                   "Referrer-Policy": "no-referrer"}


def content_disposition(filename: str, disposition: str = "inline") -> str:
    """RFC 6266: `filename` as printable ASCII without quotes or backslashes, and `filename*` exact."""
    fallback = "".join(c if " " <= c <= "~" and c not in '"\\%' else "_" for c in filename) or "download"
    return f"{disposition}; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


def download_headers(filename: str) -> dict[str, str]:
    return {"Content-Disposition": content_disposition(filename), **DOWNLOAD_HEADERS}
