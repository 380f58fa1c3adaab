"""Liveness of the worker on this host, without loading torch: `python -m worker.ping` exits 0 when
the Celery worker celery@<hostname> answers a ping through the broker (Docker HEALTHCHECK and the
Kubernetes liveness probe; `celery -A worker.tasks inspect ping` would import the engine each time)."""
from __future__ import annotations

import socket
import sys

from impress.queue import make_celery
from impress.settings import Settings


def main() -> int:
    name = f"celery@{socket.gethostname()}"
    replies = make_celery(Settings()).control.ping(destination=[name], timeout=5.0)
    return 0 if any(name in reply for reply in replies) else 1


if __name__ == "__main__":
    sys.exit(main())
