"""Findings 11, 12 and 14: any file name downloads (RFC 6266 filename*), no name is a path (the API
keeps basenames, the client writes inside its folder whatever a server says), and what is downloaded
cannot act in the console's origin (CSP sandbox), while the console runs only its own scripts."""
from __future__ import annotations

from urllib.parse import unquote

from impress.client import ImpressClient
from impress.contract import StopReason
from impress.images import encode_png
from impress.records import JobResult, ResultFile, ResultImage
from tests.hostile.conftest import IMAGE, TENANT_A, bearer, served
from tests.support import photo

UNICODE_NAME = 'Ünïcødé "quoted" 写真;.png'


def finish(store, job_id: str, image_name: str) -> None:
    """What a worker does: the job succeeded with one image named `image_name` and a report."""
    store.start(job_id, 2)
    png = encode_png(photo(8, 8))
    store.succeed(job_id, JobResult(
        images=[ResultImage(name=image_name, blob=store.put_blob(png), width=8, height=8, iterations=1,
                            stop_reason=StopReason.completed, trace=[])],
        files=[ResultFile(name="report.html", blob=store.put_blob(b"<script>alert(localStorage)</script>"),
                          media_type="text/html")],
        model={"name": "m"}, seconds=0.1, device="cpu"))


def filename_star(header: str) -> str:
    """The name a browser saves: RFC 6266's filename* wins over filename."""
    (encoded,) = [part.strip()[len("filename*="):] for part in header.split(";") if part.strip().startswith("filename*=")]
    charset, _, quoted = encoded.partition("''")
    assert charset.upper() == "UTF-8"
    return unquote(quoted)


def test_finding_11_a_unicode_filename_downloads(keyed_api):
    client, store, *_ = keyed_api()
    job = client.post("/v1/purify", headers=bearer(TENANT_A), files={"images": (UNICODE_NAME, IMAGE)}).json()["id"]
    assert "写真" in store.get(job).inputs[0].name   # as the client's multipart encoder sent it
    finish(store, job, UNICODE_NAME)
    result = client.get(f"/v1/jobs/{job}/results/0", headers=bearer(TENANT_A))
    assert result.status_code == 200 and result.content.startswith(b"\x89PNG")
    disposition = result.headers["content-disposition"]
    assert disposition.isascii() and filename_star(disposition) == UNICODE_NAME


def test_finding_12_names_are_basenames_and_the_client_stays_in_its_folder(keyed_api, tmp_path):
    client, store, *_ = keyed_api()
    job = client.post("/v1/purify", headers=bearer(TENANT_A),
                      files={"images": ("../../etc/evil.png", IMAGE)}).json()["id"]
    assert store.get(job).inputs[0].name == "evil.png"
    finish(store, job, "../../escaped.png")   # a server that names a result with a path anyway
    folder = tmp_path / "out" / "results"
    with served(client.app) as (host, port), ImpressClient(f"http://{host}:{port}", TENANT_A) as impress:
        written = impress.download_results(impress.job(job), folder)
    assert [path.name for path in written] == ["escaped.png"]
    assert [p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.png")] == ["out/results/escaped.png"]


def test_finding_14_downloads_are_sandboxed_and_the_console_has_a_csp(keyed_api):
    client, store, *_ = keyed_api()
    job = client.post("/v1/purify", headers=bearer(TENANT_A), files={"images": ("a.png", IMAGE)}).json()["id"]
    finish(store, job, "a.png")
    for url in (f"/v1/jobs/{job}/files/report.html", f"/v1/jobs/{job}/results/0"):
        answer = client.get(url, headers=bearer(TENANT_A))
        assert answer.headers["content-security-policy"] == "sandbox"
        assert answer.headers["x-content-type-options"] == "nosniff"
    page = client.get("/console/try")
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy.split("script-src")[1].split(";")[0]
    assert "frame-ancestors 'none'" in policy
