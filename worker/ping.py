"""Liveness of the worker on this host, without loading torch: `python -m worker.ping` exits 0 when
the Celery worker celery@<hostname> (or webhooks@<hostname>) answers a ping through the broker (Docker HEALTHCHECK and the
Kubernetes liveness probe; `celery -A worker.tasks inspect ping` would import the engine each time)."""
from __future__ import annotations

import socket
import sys

from impress.queue import make_celery
from impress.settings import get_settings


def main() -> int:
    # A job worker's default node name, or a webhook worker's (cli/service.py names it).
    names = [f"celery@{socket.gethostname()}", f"webhooks@{socket.gethostname()}"]
    replies = make_celery(get_settings()).control.ping(destination=names, timeout=5.0)
    return 0 if any(name in reply for reply in replies for name in names) else 1


if __name__ == "__main__":
    sys.exit(main())
