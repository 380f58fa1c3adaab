"""A manifest per purified image (in-process: run_job on fakeredis, the API on the same store):
its fields, GET /v1/jobs/{id}/results/{i}/manifest, the C2PA signature embedded in the PNG, and
`impress verify FILE`."""
from __future__ import annotations

import hashlib
import io

import pytest
from PIL import Image

from impress.contract import JobKind, PurifyParams
from impress.images import decode_image
from impress.manifest import read_manifest
from impress.records import InputImage
from impress.settings import Settings
from tests.support import photo, png_bytes

# A JPEG upload: the service keeps it decoded and re-encoded as PNG; the manifest names the upload's bytes.
UPLOAD = png_bytes(photo(32, 24, seed=4), fmt="JPEG")


@pytest.fixture(scope="module")
def purified(small_vae_dir, one_torch_thread):
    """A purify job run in-process; (store, record, result PNG bytes)."""
    import fakeredis

    from impress.store import JobStore
    from worker.runner import run_job

    server = fakeredis.FakeServer()
    store = JobStore(fakeredis.FakeRedis(server=server), "impress-fast", 3600,
                     aio=fakeredis.FakeAsyncRedis(server=server))
    stored = png_bytes(decode_image(UPLOAD, max_bytes=1 << 20, max_pixels=1 << 20).rgb)
    item = InputImage(name="cat.jpg", blob=store.put_blob(stored), width=32, height=24, format="JPEG",
                      upload_sha256=hashlib.sha256(UPLOAD).hexdigest(), upload_bytes=len(UPLOAD))
    params = PurifyParams(preset="photoguard", iters=2, lr=0.01, alpha=0.5, delta=0.0, noise=0.05, early_stop=False,
                          schedule="fast")
    record = store.create(JobKind.purify, params, [item], vae=str(small_vae_dir), perceptual="dssim")
    assert run_job(store, Settings(_env_file=None, device="cpu"), record.id, on_time_limit=TimeoutError) == "succeeded"
    record = store.get(record.id)
    return store, record, store.get_blob(record.result.images[0].blob)


def test_the_manifest_says_what_by_what_to_what_with_what_effect_and_when(purified, small_vae_dir):
    _, record, _ = purified
    manifest = record.result.images[0].manifest
    assert (manifest.method.kind, manifest.method.name, manifest.method.schedule) == ("purify", "impress", "fast")
    assert manifest.method.parameters["iters"] == 2 and manifest.method.parameters["alpha"] == 0.5
    weights = next(small_vae_dir.glob("*.safetensors")).read_bytes()
    assert manifest.software.model_sha256 == hashlib.sha256(weights).hexdigest()
    assert manifest.software.perceptual == "dssim" and manifest.software.version
    assert manifest.input.sha256 == hashlib.sha256(UPLOAD).hexdigest() and manifest.input.bytes == len(UPLOAD)
    assert (manifest.input.width, manifest.input.height, manifest.output["name"]) == (32, 24, "cat.png")
    effect = manifest.effect
    assert effect.consistency_before > 0 and effect.consistency_after > 0 and effect.distance_to_input >= 0
    # the detection's default score (latent-shift), not the consistency error
    assert effect.detection_score_before != effect.consistency_before and 0 < effect.detection_score_before < 100
    assert effect.psnr_db > 10
    assert manifest.signature.development and manifest.signature.format == "c2pa"
    assert manifest.created_at.timestamp() <= record.finished_at + 1


def test_the_png_carries_the_signed_manifest_and_tampering_breaks_it(purified):
    _, record, png = purified
    assert Image.open(io.BytesIO(png)).size == (32, 24)
    checked = read_manifest(png)
    assert checked.valid and not checked.trusted
    assert checked.manifest.input == record.result.images[0].manifest.input
    pixels = png.find(b"IDAT") + 12
    tampered = png[:pixels] + bytes([png[pixels] ^ 0xFF]) + png[pixels + 1:]
    assert not read_manifest(tampered).valid
    assert not read_manifest(png_bytes(photo())).valid     # no manifest at all


def test_the_manifest_route_and_impress_verify(purified, make_fast_api, tmp_path, capsys):
    from fastapi.testclient import TestClient

    from app.main import create_app
    from cli.main import main

    store, record, png = purified
    with TestClient(create_app(Settings(_env_file=None, key_prefix="impress-fast"), store=store)) as client:
        view = client.get(f"/v1/jobs/{record.id}").json()
        answer = client.get(view["results"][0]["manifest_url"])
        assert answer.status_code == 200 and answer.json()["input"]["sha256"] == record.result.images[0].manifest.input.sha256
        assert client.get(f"/v1/jobs/{record.id}/results/1/manifest").status_code == 404
    (tmp_path / "cat.png").write_bytes(png)
    assert main(["verify", str(tmp_path / "cat.png")]) == 0
    out = capsys.readouterr().out
    assert '"consistency_after"' in out and "DEVELOPMENT certificate" in out
    (tmp_path / "plain.png").write_bytes(png_bytes(photo()))
    assert main(["verify", str(tmp_path / "plain.png")]) == 1
