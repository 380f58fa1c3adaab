"""`impress serve` stops everything it started (API, both workers with their pool processes, Redis)
when it gets SIGTERM, as it does on Ctrl-C."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import httpx
import psutil
import pytest

from tests.support import answers, free_port, wait_for

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serve_stops_every_child(small_vae_dir, tmp_path, sig):
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMPRESS_")}
    env.update(OMP_NUM_THREADS="1", IMPRESS_VAE=str(small_vae_dir), IMPRESS_PERCEPTUAL="dssim", IMPRESS_DEVICE="cpu")
    port, redis_port = free_port(), free_port()
    serve = subprocess.Popen([sys.executable, "-m", "cli", "serve", "--port", str(port), "--redis-port", str(redis_port)],
                             env=env, stdout=open(tmp_path / "serve.log", "w"), stderr=subprocess.STDOUT)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)
    try:
        wait_for(lambda: answers(client, "/readyz") and len(client.get("/readyz").json()["workers"]) == 3, 300,
                 "API ready with the GPU, triage and webhook workers answering", 0.5)
        # The quick start's console: its address printed, its page served by the API
        assert f"Console on http://127.0.0.1:{port}/console" in (tmp_path / "serve.log").read_text()
        assert client.get("/console/try").status_code == 200
        children = psutil.Process(serve.pid).children(recursive=True)
        names = " ".join(" ".join(p.cmdline()) for p in children)
        assert "redis-server" in names and "worker" in names and " api " in names
        serve.send_signal(sig)
        assert serve.wait(timeout=60) == 0
        _, alive = psutil.wait_procs(children, timeout=10)
        assert not [p for p in alive if p.status() != psutil.STATUS_ZOMBIE], alive
        print(f"\n{signal.Signals(sig).name}: all {len(children)} processes `impress serve` started are gone")
    finally:
        client.close()
        if serve.poll() is None:
            serve.kill()
        print((tmp_path / "serve.log").read_text()[-2000:])
