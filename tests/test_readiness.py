"""Readiness from workers' heartbeats: a beat lives a few intervals in Redis, a thread keeps writing it
while the worker's process is busy, and /readyz stays ready while the only (solo) worker runs a long
job, then stops being ready within the beat's lifetime once that worker is killed."""
from __future__ import annotations

import socket
import subprocess
import sys
import time
import uuid

import httpx
import pytest

from impress.contract import ModelReport, WorkerBeat
from impress.queue import JobQueue, make_celery
from impress.settings import Settings
from tests.conftest import service_env
from tests.support import TEST_REDIS_URL, answers, delete_prefix, free_port, photo, png_bytes, poll, stop, wait_for
from worker.heartbeat import MISSED_BEATS, Heartbeat


def test_a_beat_lives_its_time_an_expired_worker_is_dropped_a_stopped_one_at_once(fast_store):
    alive = WorkerBeat(name="celery@a", queues=["impress"], models=ModelReport(present=["vae taef2"]))
    fast_store.beat(alive, 30)
    fast_store.beat(WorkerBeat(name="celery@b", queues=["impress"]), 0.05)
    assert [beat.name for beat in fast_store.live_workers()] == ["celery@a", "celery@b"]
    assert 0 < fast_store.r.pttl(fast_store.keys.worker("celery@a")) <= 30_000
    assert fast_store.r.ttl(fast_store.keys.workers()) > 30    # never cut short by a shorter-lived worker
    time.sleep(0.1)
    assert fast_store.live_workers() == [alive]
    assert fast_store.r.smembers(fast_store.keys.workers()) == {b"celery@a"}   # the expired name dropped
    fast_store.end_beats("celery@a")
    assert fast_store.live_workers() == []


def test_the_heartbeat_beats_while_its_process_is_busy_survives_redis_down_and_stops_cleanly(
        fast_store, fake_server, monkeypatch):
    beats = []
    beat = fast_store.beat
    monkeypatch.setattr(fast_store, "beat", lambda *args: (beats.append(time.monotonic()), beat(*args)))
    heartbeat = Heartbeat(fast_store, WorkerBeat(name="celery@busy", queues=["impress"]), interval_s=0.1)
    heartbeat.start()
    start = time.monotonic()
    while time.monotonic() - start < 1.0:   # a job holding the main thread in pure Python, as a solo worker's does
        pass
    assert len(beats) >= 5, beats
    assert fast_store.live_workers()[0].name == "celery@busy"
    fake_server.connected = False   # Redis down: the thread logs, lives on, and beats again once it is back
    time.sleep(0.3)
    fake_server.connected = True
    wait_for(lambda: fast_store.live_workers(), 2, "the beat written again")
    heartbeat.stop()
    assert not heartbeat.thread.is_alive() and fast_store.live_workers() == []


def test_broker_reachable_is_whether_a_connection_opens():
    assert JobQueue(Settings(_env_file=None, redis_url=TEST_REDIS_URL)).broker_reachable()
    down = JobQueue(Settings(_env_file=None, broker_url=f"amqp://impress:secret@127.0.0.1:{free_port()}//"))
    start = time.monotonic()
    assert not down.broker_reachable()
    assert time.monotonic() - start < 1.5   # refused at once; an unanswering host takes the 1 s connect timeout


@pytest.mark.e2e
def test_ready_while_the_only_solo_worker_is_busy_not_ready_once_it_is_killed(small_vae_dir, tmp_path):
    tag = f"impress-ready-{uuid.uuid4().hex[:8]}"
    heartbeat_s = 1.0
    env = service_env(tag, small_vae_dir, IMPRESS_MAX_ITERATIONS="100000", IMPRESS_WORKER_HEARTBEAT_S=str(heartbeat_s),
                      IMPRESS_READINESS_CACHE_S="0.5")
    settings = Settings(_env_file=None, **{k[8:].lower(): v for k, v in env.items() if k.startswith("IMPRESS_")})
    port = free_port()
    cli = [sys.executable, "-m", "cli"]
    worker = subprocess.Popen(cli + ["worker", "--pool", "solo"], env=env, stdout=open(tmp_path / "worker.log", "w"),
                              stderr=subprocess.STDOUT)
    api = subprocess.Popen(cli + ["api", "--port", str(port)], env=env, stdout=open(tmp_path / "api.log", "w"),
                           stderr=subprocess.STDOUT)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
    name = f"celery@{socket.gethostname()}"
    try:
        wait_for(lambda: answers(client, "/readyz"), 90, "API ready with a worker alive", 0.5)
        long = client.post("/v1/purify", files=[("images", ("a.png", png_bytes(photo(32, 32)), "image/png"))],
                           data={"iters": "100000", "early_stop": "false"}).headers["location"]
        poll(client, long, lambda j: j["state"] == "running" and j["progress"]["step"] >= 2, timeout=180)
        # The premise: a solo worker running a job answers no Celery ping (what /readyz used to ask).
        assert make_celery(settings).control.ping(timeout=1.0) == []
        # Over more than twice a beat's lifetime, the only worker busy all along: ready at every probe.
        watched_s = 2.5 * MISSED_BEATS * heartbeat_s
        statuses, until = [], time.monotonic() + watched_s
        while time.monotonic() < until:
            statuses.append(client.get("/readyz").status_code)
            time.sleep(0.25)
        assert set(statuses) == {200}, statuses
        report = client.get("/readyz").json()
        assert report["workers"] == [name] and report["queues"][tag] == [name] and report["broker"]
        assert client.get(long).json()["state"] == "running"

        worker.kill()   # no goodbye: its last beat expires
        killed = time.monotonic()
        gone = wait_for(lambda: (lambda r: r if r.status_code == 503 else None)(client.get("/readyz")), 30,
                        "/readyz not ready after the worker was killed", 0.1)
        took = time.monotonic() - killed
        assert gone.json()["workers"] == [] and int(gone.headers["retry-after"]) > 0
        # Bound: the beat's lifetime and the report's age, plus a margin for a loaded 2-core machine.
        assert took < MISSED_BEATS * heartbeat_s + settings.readiness_cache_s + 1.5, took
        print(f"\n/readyz: {len(statuses)} probes over {watched_s:g} s all ready "
              f"while the only solo worker ran a job; not ready {took:.1f} s after it was killed "
              f"(beat every {heartbeat_s:g} s, alive {MISSED_BEATS * heartbeat_s:g} s after the last)")
    finally:
        client.close()
        stop(api, worker)
        delete_prefix(TEST_REDIS_URL, tag)
        print((tmp_path / "worker.log").read_text()[-2000:])
