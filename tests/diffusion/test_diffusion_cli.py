"""The diffusion scenarios from the command line, in this process, on the tiny pipelines."""
from __future__ import annotations

import json

from PIL import Image

from cli.main import main
from impress.results import MatrixResult, MimicryMetrics, ProtectionMetrics
from tests.support import photo


def image_folder(path, seeds):
    path.mkdir()
    for seed in seeds:
        Image.fromarray(photo(32, 32, seed)).save(path / f"{seed}.png")
    return path


def test_mimicry_command_writes_scores_and_samples(tmp_path, tiny_pipelines, capsys):
    clean, protected = image_folder(tmp_path / "clean", [0, 1]), image_folder(tmp_path / "protected", [2, 3])
    out = tmp_path / "out"
    code = main(["mimicry", "--clean", str(clean), "--protected", str(protected), "-o", str(out),
                 "--pipeline", str(tiny_pipelines["img2img"]), "--device", "cpu", "--steps", "2", "--size", "32",
                 "--eval-samples", "1", "--generate", "1", "--generate-steps", "2"])
    assert code == 0
    results = MimicryMetrics.model_validate_json((out / "results.json").read_text())   # as a mimicry job's metrics
    assert set(results.sets) == {"clean", "protected"} and results.params.steps == 2
    assert sorted(results.split.train + results.split.held_out) == [0, 1]
    assert results.pipeline.kind == "img2img"
    assert (out / "clean-0.png").exists() and (out / "protected-0.png").exists()
    assert "relative gain" in capsys.readouterr().out


def test_mimicry_command_without_a_pipeline_says_what_to_configure(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("IMPRESS_PIPELINE", raising=False)
    clean = image_folder(tmp_path / "clean", [0])
    assert main(["mimicry", "--clean", str(clean), "-o", str(tmp_path / "out"), "--device", "cpu"]) == 3
    assert "IMPRESS_PIPELINE" in capsys.readouterr().err


def test_protect_command_runs_a_diffusion_protection_and_records_its_pipeline(tmp_path, tiny_pipelines, monkeypatch):
    monkeypatch.setenv("IMPRESS_PIPELINE", str(tiny_pipelines["img2img"]))
    images = image_folder(tmp_path / "in", [0, 1])
    out = tmp_path / "out"
    code = main(["protect", *map(str, sorted(images.iterdir())), "-o", str(out), "--protection", "advdm:steps=2",
                 "--model", "taef2", "--perceptual", "dssim", "--device", "cpu"])
    assert code == 0
    summary = json.loads(next(out.glob("*.json")).read_text())
    assert ProtectionMetrics.model_validate(summary).pipelines["img2img"].kind == "img2img"
    assert all(image["budget"]["linf_255"] <= 16 + 1e-3 for image in summary["images"])
    assert len(list(out.glob("*.png"))) == 2


def test_bench_command_runs_diffusion_methods_with_the_editing_scenario(tmp_path, tiny_pipelines, monkeypatch):
    for kind, env in (("img2img", "IMPRESS_PIPELINE"), ("inpaint", "IMPRESS_INPAINT_PIPELINE")):
        monkeypatch.setenv(env, str(tiny_pipelines[kind]))
    images = image_folder(tmp_path / "in", [0, 1])
    out = tmp_path / "out"
    args = ["bench", "--images", str(images), "-o", str(out), "--protections", "sds-minus:steps=1",
            "--purifiers", "diffpure:steps=10,jpeg-75", "--size", "32", "--model", "taef2",
            "--perceptual", "dssim", "--device", "cpu", "--edit", '{"mode": "inpaint", "steps": 2}']
    assert main(args) == 0
    results = MatrixResult.model_validate_json((out / "results.json").read_text())
    assert set(results.editing.worst_case) == {"none", "sds-minus:steps=1"}
    assert "Worst case per image" in (out / "results.md").read_text()
    assert main(args) == 0 and json.loads((out / "results.json").read_text())["skipped"] == 4   # resumed


def test_bench_refuses_a_size_below_the_pipelines_sample_size_before_running(tmp_path, tiny_pipelines, monkeypatch,
                                                                              capsys):
    monkeypatch.setenv("IMPRESS_PIPELINE", str(tiny_pipelines["img2img"]))
    images = image_folder(tmp_path / "in", [0])
    args = ["bench", "--images", str(images), "-o", str(tmp_path / "out"), "--protections", "advdm:steps=1",
            "--purifiers", "jpeg-75", "--model", "taef2", "--perceptual", "dssim", "--device", "cpu"]
    assert main([*args, "--size", "24"]) != 0
    assert "sample size is 32 px: size 24 is below it" in capsys.readouterr().err
    assert main([*args, "--size", "36"]) != 0
    assert "must be a multiple of 8" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
