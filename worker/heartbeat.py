"""A worker's heartbeat: a daemon thread of the worker's main process writes its WorkerBeat to Redis
every IMPRESS_WORKER_HEARTBEAT_S, idle or busy, and /readyz counts the workers whose beat has not
expired. A Celery ping cannot say this: a solo worker runs its job in the very thread that would
answer, so it looks dead for as long as it works. A thread keeps beating through a job (torch and
Redis calls release the GIL, and Python hands it over every few milliseconds anyway)."""
from __future__ import annotations

import logging
import threading

import redis

from impress.contract import WorkerBeat
from impress.store import JobStore

# Beats a worker may miss before it no longer counts as alive (one late beat on a loaded host is not death).
MISSED_BEATS = 3

log = logging.getLogger("impress.worker")


class Heartbeat:
    """Beats from `start` until `stop`, which removes the beat at once (a killed worker's expires)."""

    def __init__(self, store: JobStore, beat: WorkerBeat, interval_s: float):
        self.store, self.beat, self.interval_s = store, beat, interval_s
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=self.interval_s)
        try:
            self.store.end_beats(self.beat.name)
        except redis.RedisError as exc:   # Redis down: the beat expires by itself
            log.warning("heartbeat not removed: %s", exc)

    def _run(self) -> None:
        failing = False
        while True:
            try:
                self.store.beat(self.beat, self.interval_s * MISSED_BEATS)
                if failing:
                    log.info("heartbeat written again")
                failing = False
            except redis.RedisError as exc:   # logged once per outage; beats resume when Redis returns
                if not failing:
                    log.warning("heartbeat not written: %s", exc)
                failing = True
            if self.stopping.wait(self.interval_s):
                return
