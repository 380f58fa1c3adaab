"""Pipelines load offline by folder or hub id, record their identity, and fail with ModelUnavailable."""
from __future__ import annotations

import pytest
import torch

from worker.engine.diffusion.pipelines import load_pipeline, missing_pipeline
from worker.engine.models import ModelUnavailable


@pytest.mark.parametrize("kind", ["img2img", "inpaint", "upscale"])
def test_each_kind_loads_from_its_folder_with_an_identity(tiny_pipelines, kind):
    pipe, identity = load_pipeline(str(tiny_pipelines[kind]), kind)
    assert type(pipe).__name__.startswith("StableDiffusion")
    assert identity.kind == kind and identity.source == "folder"
    assert identity.revision.startswith("sha256:") and identity.location == str(tiny_pipelines[kind].resolve())
    assert not any(p.requires_grad for p in pipe.unet.parameters())
    assert pipe.unet.config.in_channels == {"img2img": 4, "inpaint": 9, "upscale": 7}[kind]


def test_missing_pipelines_say_what_to_fetch(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelUnavailable, match="huggingface-cli download owner/absent.*IMPRESS_INPAINT_PIPELINE"):
        load_pipeline("owner/absent", "inpaint")
    with pytest.raises(ModelUnavailable, match="no model_index.json"):
        load_pipeline(str(tmp_path), "img2img")
    with pytest.raises(ModelUnavailable, match="not a hub id"):
        load_pipeline("/no/such/folder", "upscale")
    assert "IMPRESS_PIPELINE" in str(missing_pipeline("img2img"))


def test_a_hub_id_loads_from_the_local_cache_and_records_its_commit(tiny_pipelines, tmp_path, monkeypatch):
    """A cached hub snapshot (the layout huggingface-cli download writes) loads without network and its
    revision is the snapshot's commit."""
    import shutil

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hf" / "hub" / "models--owner--tiny"
    shutil.copytree(tiny_pipelines["img2img"], repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    pipe, identity = load_pipeline("owner/tiny", "img2img")
    assert identity.source == "hub" and identity.revision == commit
    assert isinstance(pipe.unet, torch.nn.Module)


def test_pipeline_settings_name_each_kind(monkeypatch, tiny_pipelines):
    from impress.settings import Settings
    from worker.engine.diffusion.scenario import PipelineSet

    monkeypatch.setenv("IMPRESS_PIPELINE", str(tiny_pipelines["img2img"]))
    monkeypatch.setenv("IMPRESS_UPSCALE_PIPELINE", str(tiny_pipelines["upscale"]))
    pipelines = PipelineSet.from_settings(Settings(), "cpu")
    assert pipelines.configured("img2img") and pipelines.configured("upscale") and not pipelines.configured("inpaint")
    assert pipelines.dtype == torch.float32
    pipelines.get("upscale")
    assert pipelines.used()["upscale"].kind == "upscale"


def test_models_check_reports_configured_pipelines(tiny_pipelines, tmp_path, monkeypatch, capsys):
    from cli.main import main

    monkeypatch.setenv("IMPRESS_VAE", "taef2")
    monkeypatch.setenv("IMPRESS_PERCEPTUAL", "dssim")
    monkeypatch.setenv("IMPRESS_PIPELINE", str(tiny_pipelines["img2img"]))
    monkeypatch.setenv("IMPRESS_INPAINT_PIPELINE", str(tmp_path / "absent"))
    assert main(["models", "check"]) == 1
    out = capsys.readouterr().out
    assert f"present  pipeline {tiny_pipelines['img2img']} (img2img pipeline)" in out
    assert f"MISSING  pipeline {tmp_path / 'absent'} (inpaint pipeline)" in out


def test_revisions_name_what_each_configured_pipeline_is_without_loading(tiny_pipelines, tmp_path):
    from worker.engine.diffusion.scenario import PipelineSet

    pipelines = PipelineSet({"img2img": str(tiny_pipelines["img2img"]), "inpaint": str(tmp_path), "upscale": None})
    revisions = pipelines.revisions()
    assert revisions["img2img"][1].startswith("sha256:") and revisions["inpaint"][1] == "missing"
    assert "upscale" not in revisions and pipelines.used() == {}
