"""The amortised purifier and the cascade through the real API and a real worker (bundled weights)."""
from __future__ import annotations

import io

import pytest
from PIL import Image

from tests.conftest import running_service
from tests.support import photo, png_bytes, poll

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def flagging_service(small_vae_dir, tmp_path_factory):
    # A detection threshold of 0 flags every image, so the cascade's second stage runs too.
    with running_service(small_vae_dir, tmp_path_factory.mktemp("logs"), IMPRESS_DETECT_THRESHOLD="0") as client:
        yield client


def finished(client, response) -> dict:
    assert response.status_code == 202, response.text
    return poll(client, response.headers["location"], lambda j: j["state"] in ("succeeded", "failed", "canceled"))


def test_amortised_and_cascade_jobs_record_method_weights_and_paths(flagging_service):
    client = flagging_service
    files = [("images", ("wide.png", png_bytes(photo(45, 30)), "image/png")),
             ("images", ("small.png", png_bytes(photo(16, 24, 1)), "image/png"))]
    job = finished(client, client.post("/v1/purify", files=files, data={"method": "amortised"}))
    assert job["state"] == "succeeded", job
    assert job["purifier"]["method"] == "amortised" and job["purifier"]["weights"] == "amortised-taef2"
    assert job["purifier"]["weights_sha256"].startswith("sha256:")
    assert [r["path"] for r in job["results"]] == [["amortised"], ["amortised"]]
    assert all(r["seconds"] >= 0 and r["iterations"] == 0 for r in job["results"])
    sizes = [Image.open(io.BytesIO(client.get(r["url"]).content)).size for r in job["results"]]
    assert sizes == [(45, 30), (16, 24)]

    job = finished(client, client.post("/v1/purify", files=files[:1], data={"method": "cascade", "iters": "2"}))
    assert job["state"] == "succeeded", job
    assert job["purifier"]["method"] == "cascade" and job["purifier"]["threshold"] == 0
    result = job["results"][0]
    assert result["path"] == ["amortised", "impress"] and result["iterations"] == 2
    assert result["detection_score"] > 0 and job["params"]["method"] == "cascade"
