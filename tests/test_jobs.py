"""worker.runner.run_job in-process on fakeredis: what a detect job records."""
from __future__ import annotations

import fakeredis

from impress.contract import DetectParams, JobKind, JobState
from impress.records import DetectedImage, InputImage, Verdict
from impress.settings import Settings
from impress.store import JobStore
from tests.support import photo, png_bytes


def test_detect_records_score_verdict_thresholds_and_model_per_image(small_vae_dir):
    from worker.runner import run_job

    store = JobStore(fakeredis.FakeRedis(), "impress-jobs", 3600)
    inputs = [InputImage(name=f"{i}.png", blob=store.put_blob(png_bytes(photo(32, 32, i))), width=32, height=32,
                         format="PNG") for i in range(2)]
    job_id = store.create(JobKind.detect, DetectParams(threshold=0.0), inputs, vae=str(small_vae_dir),
                          perceptual="dssim").id
    settings = Settings(_env_file=None, device="cpu", detect_threshold=5.0)
    assert run_job(store, settings, job_id, on_time_limit=TimeoutError) == "succeeded"
    record = store.get(job_id)
    assert record.state == JobState.succeeded
    detections = record.result.detections
    assert all(isinstance(d, DetectedImage) for d in detections) and [d.name for d in detections] == ["0.png", "1.png"]
    for d in detections:  # the request's threshold, not the service's
        assert d.score > 0 and d.verdict == Verdict.protected and (d.threshold, d.low_threshold) == (0.0, None)
        assert d.model == str(small_vae_dir) and d.model_revision == record.result.model.revision
