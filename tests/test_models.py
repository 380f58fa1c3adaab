"""`impress models check` / `pull` logic and fail-fast loading: what a preset needs, found on disk
(bundled model, a Hugging Face cache laid out as the hub writes it) or reported missing, offline."""
from __future__ import annotations

import shutil
import time

import pytest
from huggingface_hub import constants

from cli.main import main
from impress.contract import PRESETS
from tests.support import photo, png_bytes
from worker.engine import model_cache, models
from worker.engine.models import ModelUnavailable, hub_vae_cached, load_vae

MISSING_HUB_ID = "impress-tests/no-such-vae"


@pytest.fixture
def offline_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache and torch hub dir, and no network (HF_HUB_OFFLINE)."""
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "hf"


def cache_hub_vae(cache, repo_id: str, vae_dir, commit: str = "0123456789abcdef0123456789abcdef01234567"):
    """Put a VAE into the cache as `huggingface_hub` lays a snapshot out (refs/main -> snapshots/<commit>)."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    shutil.copytree(vae_dir, repo / "snapshots" / commit / "vae")
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    return commit


def test_check_present_with_the_bundled_model(monkeypatch, capsys):
    monkeypatch.setenv("IMPRESS_VAE", "taef2")
    monkeypatch.setenv("IMPRESS_PERCEPTUAL", "dssim")
    assert main(["models", "check"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"present  vae taef2 ({model_cache.resolve_vae('taef2')[1]})"]


def test_check_names_the_bundled_model_with_model_and_verifies_its_checksums(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("IMPRESS_PERCEPTUAL", "dssim")
    assert main(["models", "check", "--model", "taef2"]) == 0
    assert capsys.readouterr().out.splitlines() == [f"present  vae taef2 ({model_cache.resolve_vae('taef2')[1]})"]
    damaged = tmp_path / "taef2"
    shutil.copytree(model_cache.resolve_vae("taef2")[1], damaged)
    (damaged / "taef2_encoder.pth").chmod(0o644)
    (damaged / "taef2_encoder.pth").write_bytes(b"not the published weights")
    monkeypatch.setitem(models.BUNDLED, "taef2", damaged)
    assert main(["models", "check", "--model", "taef2"]) == 1
    assert capsys.readouterr().out.splitlines() == [f"MISSING  vae taef2 ({damaged})"]


def test_check_missing_names_each_model_and_fails(offline_cache, monkeypatch, capsys):
    monkeypatch.setenv("IMPRESS_VAE", MISSING_HUB_ID)
    monkeypatch.setenv("IMPRESS_PERCEPTUAL", "lpips-vgg")
    assert main(["models", "check", "--preset", "glaze"]) == 1
    out, err = capsys.readouterr()
    assert out.splitlines() == [f"MISSING  vae {MISSING_HUB_ID} (hub cache: {MISSING_HUB_ID})",
                                f"MISSING  perceptual lpips-vgg ({model_cache.vgg16_cache_file()})"]
    assert "2 model(s) missing" in err and "impress models pull" in err


def test_presets_need_their_own_vaes_unless_one_is_configured():
    by_preset = model_cache.needs(PRESETS, None, "dssim")
    assert [need.name for need in by_preset] == [preset.vae for preset in PRESETS.values()]
    assert [need.name for need in model_cache.needs(PRESETS, "taef2", "dssim")] == ["taef2"]


def test_cached_hub_vae_is_present_and_loads_offline(offline_cache, small_vae_dir):
    commit = cache_hub_vae(offline_cache, "impress-tests/cached-vae", small_vae_dir)
    assert hub_vae_cached("impress-tests/cached-vae") and not hub_vae_cached(MISSING_HUB_ID)
    report = model_cache.check(["photoguard"], "impress-tests/cached-vae", "dssim")
    assert report.complete and report.present == ["vae impress-tests/cached-vae (hub cache: impress-tests/cached-vae)"]
    _, identity = load_vae("impress-tests/cached-vae")
    assert (identity.source, identity.revision) == ("hub", commit)


def test_missing_hub_vae_fails_at_once_when_the_hub_is_unreachable(offline_cache, monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr("worker.engine.models.hub_reachable", lambda repo_id: False)
    started = time.monotonic()
    with pytest.raises(ModelUnavailable, match="impress models pull"):
        load_vae(MISSING_HUB_ID)
    assert time.monotonic() - started < 5  # no retries (it used to take ~25 s)


def test_purify_with_a_missing_model_fails_before_any_progress_bar(offline_cache, tmp_path, monkeypatch, capsys):
    image = tmp_path / "x.png"
    image.write_bytes(png_bytes(photo(32, 32)))
    monkeypatch.setenv("IMPRESS_PERCEPTUAL", "dssim")
    assert main(["purify", str(image), "-o", str(tmp_path / "out"), "--model", MISSING_HUB_ID]) == 3
    err = capsys.readouterr().err
    assert "is not in the model cache" in err and "purify" not in err.split("error:")[0]


def test_pull_fetches_nothing_that_is_present_and_cannot_pull_a_folder(tmp_path):
    said = []
    model_cache.pull(model_cache.needs(["glaze"], "taef2", "dssim"), say=said.append)
    assert said == [f"present  vae taef2 ({model_cache.resolve_vae('taef2')[1]})"]
    absent = model_cache.ModelNeed("vae", str(tmp_path / "absent"), str(tmp_path / "absent"))
    with pytest.raises(ModelUnavailable):
        model_cache.pull([absent], say=said.append)
