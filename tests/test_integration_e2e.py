"""Webhooks and URL inputs end to end: a real API, a GPU-queue worker and a webhook worker, driven with
impress.client; a loopback receiver on 127.0.0.1 verifies every signature with standardwebhooks;
127.0.0.2 (not allow-listed) must never be reached."""
from __future__ import annotations

import time
from pathlib import Path

import pytest
from PIL import Image

from impress.client import ImpressClient, ImpressError
from impress.contract import ErrorCode, JobState, PurifyOverrides
from impress.records import WebhookEvent
from tests.conftest import running_service
from tests.loopback import IMAGE, IMAGES_ALLOWED, WebhookReceiver, images, internal  # noqa: F401 (fixtures)
from tests.loopback import WEBHOOK_SECRET as SECRET
from tests.support import photo, png_bytes, wait_for


pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def hooked_service(small_vae_dir, tmp_path_factory):
    with running_service(small_vae_dir, tmp_path_factory.mktemp("logs"), webhook_worker=True,
                         IMPRESS_WEBHOOK_SECRET=SECRET, IMPRESS_WEBHOOK_ALLOWED_HOSTS="127.0.0.1",
                         IMPRESS_URL_ALLOWED_HOSTS=IMAGES_ALLOWED,
                         IMPRESS_WEBHOOK_RETRY_BASE_S="0.2", IMPRESS_URL_FETCH_TIMEOUT_S="5") as http:
        with ImpressClient(str(http.base_url)) as client:
            yield client


def test_signed_webhooks_and_url_inputs_through_real_workers(hooked_service, images, internal, tmp_path):
    client = hooked_service
    with WebhookReceiver(SECRET, fail_first=1) as receiver:   # the first delivery gets a 503: retried
        accepted = client.purify([("upload.png", IMAGE)], [images.url("/cat.png"), images.url("/to-internal")],
                                 params=PurifyOverrides(iters=4), idempotency_key="e2e-webhooks-1",
                                 webhook=receiver.url, webhook_events=[WebhookEvent.start, WebhookEvent.completed])
        done = client.wait(accepted, timeout_s=180)
        assert done.state == JobState.succeeded, done.error
        assert [item.name for item in done.inputs] == ["upload.png", "cat.png"] and len(done.results) == 2
        assert [(item.url, item.error.code) for item in done.rejected_inputs] == [
            (images.url("/to-internal"), ErrorCode.url_not_allowed)]
        written = client.download_results(done, tmp_path)
        assert [Image.open(path).size for path in written] == [(40, 32), (40, 32)]

        wait_for(lambda: receiver.of_type("job.completed"), 60, "the completed webhook")
        time.sleep(1.0)   # room for a duplicate, were one to come
        (completed,) = receiver.of_type("job.completed")
        assert completed.payload.data == client.job(accepted)   # the job as GET /v1/jobs/{id} shows it
        assert completed.headers["webhook-id"] == f"msg_{accepted.id}_completed"
        assert [hook.payload.data.state for hook in receiver.of_type("job.start")] == [JobState.running]
        assert receiver.refused == 0
        metrics = client.http.get("/metrics").text   # the first attempt's 503 was retried
        assert 'impress_webhook_deliveries_total{outcome="retry"} 1.0' in metrics
    assert internal.hits == []


@pytest.mark.parametrize("path, code", [("/huge", ErrorCode.payload_too_large),
                                        ("/slow", ErrorCode.image_fetch_failed),
                                        ("/to-metadata", ErrorCode.url_not_allowed)])
def test_hostile_image_urls_are_cut_off(hooked_service, images, path, code):
    started = time.monotonic()
    with pytest.raises(ImpressError) as refused:
        hooked_service.detect(image_urls=[images.url(path)])
    assert refused.value.code == code and refused.value.details[0]["url"] == images.url(path)
    assert time.monotonic() - started < 15   # IMPRESS_URL_FETCH_TIMEOUT_S is 5 s here


def test_private_webhook_targets_are_refused_before_any_connection(hooked_service, images):
    with WebhookReceiver(SECRET, host="127.0.0.2") as unnamed:
        with pytest.raises(ImpressError) as refused:
            hooked_service.detect([("a.png", IMAGE)], webhook=unnamed.url)
        assert refused.value.code == ErrorCode.url_not_allowed
        assert unnamed.server.hits == []


def test_the_moderation_pipeline_example(hooked_service, tmp_path):
    import json
    import subprocess
    import sys

    folder = tmp_path / "photos"
    folder.mkdir()
    for seed in (1, 2):
        (folder / f"photo{seed}.png").write_bytes(png_bytes(photo(32, 32, seed=seed)))
    example = Path(__file__).resolve().parents[1] / "examples" / "moderation_pipeline.py"
    run = subprocess.run([sys.executable, str(example), str(folder), "--url",
                          str(hooked_service.http.base_url), "--webhook-secret", SECRET, "--threshold", "0",
                          "--iters", "4", "--out", str(tmp_path / "out"), "--webhook-timeout", "120"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "2 of 2 purifications reported by webhook" in run.stdout
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert [(item["image"], item["state"], item["purified"]) for item in summary] == [
        ("photo1.png", "succeeded", ["photo1.png"]), ("photo2.png", "succeeded", ["photo2.png"])]
