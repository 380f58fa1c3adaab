"""The service end to end: real HTTP (uvicorn) -> real Redis -> a real Celery worker process."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from impress.results import MatrixResult, ProtectionMetrics, StatedBudget, UploadedResult
from impress.views import JobView

from tests.support import MAX_BYTES, broker_env, free_port, photo, png_bytes, poll

pytestmark = pytest.mark.e2e


def submit(client, files, **form):
    return client.post("/v1/purify", files=[("images", f) for f in files],
                       data={k: str(v) for k, v in form.items()})


def test_png_in_purified_png_out(service):
    rgb = photo(45, 30)
    r = submit(service, [("cat.png", png_bytes(rgb), "image/png"), ("dog.jpg", png_bytes(photo(32, 32, 1), fmt="JPEG"), "image/jpeg")],
               preset="photoguard", iters=12, seed=1, early_stop="false")
    assert r.status_code == 202, r.text
    url = r.headers["location"]
    assert url.endswith(r.json()["id"])
    job = poll(service, url, lambda j: j["state"] in ("succeeded", "failed", "canceled"))
    assert job["state"] == "succeeded", job
    assert job["progress"] == {"step": 24, "total": 24, "fraction": 1.0}
    assert job["params"]["iters"] == 12 and job["perceptual"] == "dssim"
    assert (job["params"]["schedule"], job["params"]["lr"], job["params"]["beta1"]) == ("fast", 0.021, 0.0)
    assert job["model"]["source"] == "folder" and job["model"]["revision"].startswith("sha256:")
    assert [res["name"] for res in job["results"]] == ["cat.png", "dog.png"]
    first = job["results"][0]
    assert first["iterations"] == 12 and first["trace"][-1]["step"] == 12
    png = service.get(first["url"])
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    out = Image.open(io.BytesIO(png.content))
    assert out.size == (45, 30) and out.mode == "RGB"
    assert np.abs(np.asarray(out).astype(int) - rgb).mean() < 40  # still the same picture
    assert service.get(f"{url}/results/2").json()["error"]["code"] == "result_not_found"


def test_metrics_report_what_every_worker_did(service):
    """/metrics reads the service-wide counters from Redis: jobs by state, compute time, steps, queue."""
    from prometheus_client.parser import text_string_to_metric_families

    def samples():
        return {(m.name, tuple(sorted(m.labels.items()))): m.value
                for family in text_string_to_metric_families(service.get("/metrics").text) for m in family.samples}

    before = samples()
    r = submit(service, [("a.png", png_bytes(photo(32, 32)), "image/png")], iters=3, early_stop="false")
    assert poll(service, r.headers["location"], lambda j: j["state"] in ("succeeded", "failed"))["state"] == "succeeded"
    after = samples()
    grew = lambda key: after.get(key, 0) - before.get(key, 0)  # noqa: E731
    for state in ("queued", "running", "succeeded"):
        assert grew(("impress_job_transitions_total", (("kind", "purify"), ("state", state)))) == 1
    assert grew(("impress_job_image_iterations_total", (("kind", "purify"),))) == 3
    assert grew(("impress_job_compute_seconds_total", (("kind", "purify"),))) > 0
    assert after[("impress_redis_up", ())] == 1
    # Queue length is read from Redis when it is the broker; a separate broker reports its own.
    assert bool([k for k in after if k[0] == "impress_queue_messages"]) == (not broker_env())


def test_metrics_scrape_survives_redis_down():
    from prometheus_client import generate_latest

    from app.metrics import service_registry
    from impress.store import JobStore

    closed = JobStore.from_url(f"redis://127.0.0.1:{free_port()}/0", "impress-test-down", 60)
    assert b"impress_redis_up 0.0" in generate_latest(service_registry(closed, ["impress-test-down"]))


def test_cancel_running_and_queued(service):
    long = dict(iters=100000, early_stop="false")
    running = submit(service, [("a.png", png_bytes(photo(32, 32)), "image/png")], **long).headers["location"]
    queued = submit(service, [("b.png", png_bytes(photo(32, 32)), "image/png")], **long).headers["location"]
    poll(service, running, lambda j: j["state"] == "running" and j["progress"]["step"] >= 2, timeout=60)
    assert service.get(queued).json()["state"] == "queued"
    assert service.get(f"{queued}/results/0").json()["error"]["code"] == "job_not_finished"
    r = service.delete(queued)
    assert r.status_code == 200 and r.json()["state"] == "canceled"
    assert service.delete(running).status_code == 200
    job = poll(service, running, lambda j: j["state"] != "running", timeout=30)
    assert job["state"] == "canceled" and job["progress"]["step"] < 100000
    assert service.delete(running).json()["error"]["code"] == "job_already_finished"
    # The canceled queued job is skipped by the worker, which then serves the next job.
    nxt = submit(service, [("c.png", png_bytes(photo(32, 32)), "image/png")], iters=2).headers["location"]
    assert poll(service, nxt, lambda j: j["state"] in ("succeeded", "failed"))["state"] == "succeeded"
    assert service.get(queued).json()["state"] == "canceled" and service.get(queued).json()["started_at"] is None


def truncated_png() -> bytes:
    data = png_bytes(photo(64, 64))
    return data[: len(data) // 2]


@pytest.mark.parametrize("files, form, status, code", [
    ([("x.txt", b"hello, not an image", "text/plain")], {}, 415, "unsupported_image_format"),
    ([("x.png", truncated_png(), "image/png")], {}, 422, "image_decode_failed"),
    ([("x.png", b"", "image/png")], {}, 422, "image_decode_failed"),
    ([("x.png", png_bytes(np.random.default_rng(0).integers(0, 255, (300, 400, 3), dtype=np.uint8)), "image/png")],
     {}, 413, "payload_too_large"),
    ([("x.png", png_bytes(np.zeros((500, 500, 3), np.uint8)), "image/png")], {}, 413, "image_too_many_pixels"),
    ([("x.png", png_bytes(photo(), fmt="ICO"), "image/x-icon")], {}, 415, "unsupported_image_format"),
    ([("x.png", png_bytes(photo()), "image/png")] * 5, {}, 422, "too_many_images"),
    ([("x.png", png_bytes(photo()), "image/png")], {"preset": "mist"}, 422, "invalid_parameter"),
    ([("x.png", png_bytes(photo()), "image/png")], {"lr": "-1"}, 422, "invalid_parameter"),
    ([("x.png", png_bytes(photo()), "image/png")], {"iters": "many"}, 422, "invalid_parameter"),
    ([("x.png", png_bytes(photo()), "image/png")], {"iters": "200000"}, 422, "invalid_parameter"),
    ([("x.png", png_bytes(photo()), "image/png")], {"colour": "red"}, 422, "invalid_parameter"),
    ([], {"preset": "glaze"}, 422, "no_images"),  # neither images nor image_url
])
def test_bad_uploads_are_refused_with_a_stable_code(service, files, form, status, code):
    r = submit(service, files, **form)
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code, r.text
    assert r.json()["error"]["message"]


def test_unknown_job_is_404_and_service_reports_health(service):
    r = service.get("/v1/jobs/doesnotexist")
    assert r.status_code == 404 and r.json()["error"]["code"] == "job_not_found"
    assert service.delete("/v1/jobs/doesnotexist").status_code == 404
    assert service.get("/healthz").json() == {"status": "ok"}
    ready = service.get("/readyz").json()
    assert ready["ready"] and ready["redis"] and ready["workers"]
    metrics = service.get("/metrics").text
    assert "impress_jobs_submitted_total" in metrics and "impress_uploads_rejected_total" in metrics


def test_oversized_request_body_is_refused_unread(service):
    r = service.post("/v1/purify", content=b"x" * (MAX_BYTES * 3 + 2 * 1024 * 1024),
                     headers={"content-type": "multipart/form-data; boundary=zz"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"


def upload(name, rgb, field="images"):
    return (field, (name, png_bytes(rgb), "image/png"))


def test_detect_small_request_is_answered_inline(service):
    files = [upload("a.png", photo(32, 32)), upload("b.png", photo(40, 24, 1))]
    r = service.post("/v1/detect", files=files, data={"threshold": "0.0"})
    assert r.status_code == 200, r.text
    job = r.json()
    assert job["state"] == "succeeded" and job["kind"] == "detect"
    scored = job["detections"]
    assert [s["name"] for s in scored] == ["a.png", "b.png"]
    assert all(s["score"] > 0 and s["verdict"] == "protected" and s["threshold"] == 0 for s in scored)
    assert {(s["model"], s["model_revision"]) for s in scored} == {(job["model"]["name"], job["model"]["revision"])}
    assert job["model"]["source"] == "folder" and job["model"]["revision"].startswith("sha256:")
    two_sided = service.post("/v1/detect", files=files, data={"threshold": "100", "low_threshold": "99"}).json()
    assert [(s["verdict"], s["low_threshold"]) for s in two_sided["detections"]] == [("purified", 99)] * 2
    alone = service.post("/v1/detect", files=files, data={"low_threshold": "0.1"})
    assert alone.status_code == 422 and alone.json()["error"]["code"] == "invalid_parameter"


def test_detect_large_request_becomes_a_job(service):
    files = [upload(f"{i}.png", photo(32, 32, i)) for i in range(3)]
    r = service.post("/v1/detect", files=files)
    assert r.status_code == 202, r.text
    job = poll(service, r.headers["location"], lambda j: j["state"] in ("succeeded", "failed"))
    assert job["state"] == "succeeded"
    assert job["detections"][0]["threshold"] is None and job["detections"][0]["verdict"] is None


def test_evaluate_uploaded_protected_and_purified(service):
    clean = [photo(32, 32, s) for s in range(2)]
    noisy = [np.clip(c.astype(int) + np.random.default_rng(s).integers(-8, 9, c.shape), 0, 255).astype(np.uint8)
             for s, c in enumerate(clean)]
    files = ([upload(f"c{i}.png", c, "clean") for i, c in enumerate(clean)]
             + [upload(f"p{i}.png", p, "protected") for i, p in enumerate(noisy)])
    r = service.post("/v1/evaluate", files=files, data={"purifiers": ["jpeg-75"]})
    assert r.status_code == 202, r.text
    job = poll(service, r.headers["location"], lambda j: j["state"] in ("succeeded", "failed"))
    assert job["state"] == "succeeded", job["error"]
    metrics = JobView.model_validate(job).metrics
    assert isinstance(metrics, UploadedResult) and metrics.perceptual == job["perceptual"]
    budget = metrics.protection.budget
    assert 0 < budget.linf_255 <= 8 + 1e-3 and budget.psnr_db > 30 and budget.perceptual > 0
    assert [c.purifier for c in metrics.cells] == ["jpeg-75"]


def test_evaluate_matrix_job_with_report(service):
    files = [upload(f"c{i}.png", photo(40, 32, i), "clean") for i in range(2)]
    r = service.post("/v1/evaluate", files=files, data={"protections": ["photoguard-8"], "purifiers": ["jpeg-75", "blur"],
                                                        "size": "32", "attack_steps": "2"})
    assert r.status_code == 202, r.text
    job = poll(service, r.headers["location"], lambda j: j["state"] in ("succeeded", "failed"))
    assert job["state"] == "succeeded", job["error"]
    metrics = JobView.model_validate(job).metrics
    assert isinstance(metrics, MatrixResult) and metrics.model.revision == job["model"]["revision"]
    assert len(metrics.cells) == 4  # (none, photoguard-8) x (jpeg-75, blur)
    assert metrics.protections["photoguard-8"].budget.linf_255 <= 8 + 1e-3
    report = service.get(next(f["url"] for f in job["files"] if f["name"] == "report.html"))
    assert report.status_code == 200 and report.headers["content-type"].startswith("text/html")
    assert "<img" in report.text


@pytest.mark.parametrize("files, form, code", [
    ([upload("c.png", photo(), "clean")], {"protections": ["glaze-real"]}, "invalid_parameter"),
    ([upload("c.png", photo(), "clean")], {}, "invalid_parameter"),
    ([upload("c.png", photo(), "clean"), upload("c2.png", photo(), "clean"), upload("p.png", photo(), "protected")],
     {}, "invalid_parameter"),
    ([upload("c.png", photo(), "clean"), ("protected", ("p.txt", b"nope", "text/plain"))], {}, "unsupported_image_format"),
])
def test_bad_evaluation_requests_are_refused(service, files, form, code):
    r = service.post("/v1/evaluate", files=files, data=form)
    assert 400 <= r.status_code < 500 and r.json()["error"]["code"] == code, r.text




def test_protect_returns_protected_pngs_with_their_measured_budgets(service):
    clean = [photo(40, 32, 0), photo(32, 32, 1)]
    files = [upload("a.png", clean[0]), upload("b.png", clean[1]), upload("style.png", photo(48, 48, 5), "target")]
    r = service.post("/v1/protect", files=files, data={"protection": "glaze-like:steps=2:p=0.03"})
    assert r.status_code == 202, r.text
    job = poll(service, r.headers["location"], lambda j: j["state"] in ("succeeded", "failed"))
    assert job["state"] == "succeeded", job["error"]
    metrics = JobView.model_validate(job).metrics
    assert job["kind"] == "protect" and isinstance(metrics, ProtectionMetrics)
    assert metrics.stated == StatedBudget(linf_255=16.0, perceptual=0.03) and metrics.target == "style.png"
    assert [res["name"] for res in job["results"]] == ["a.png", "b.png"]
    for res, rgb in zip(job["results"], clean):
        saved = np.asarray(Image.open(io.BytesIO(service.get(res["url"]).content)))
        assert saved.shape == rgb.shape
        measured = float(np.abs(saved.astype(int) - rgb.astype(int)).max())
        assert res["budget"]["linf_255"] == pytest.approx(measured, abs=1e-3)
        assert 0 < measured <= 16 and res["budget"]["perceptual"] <= 0.03 and res["budget"]["psnr_db"] > 25


@pytest.mark.parametrize("form, code", [({"protection": "glaze-real"}, "invalid_parameter"),
                                        ({"protection": "mist-16", "steps": "3"}, "invalid_parameter")])
def test_bad_protect_requests_are_refused(service, form, code):
    r = service.post("/v1/protect", files=[upload("a.png", photo())], data=form)
    assert r.status_code == 422 and r.json()["error"]["code"] == code, r.text
