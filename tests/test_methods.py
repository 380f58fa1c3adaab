"""Method choices are parsed and validated in the contract, before anything is queued (no torch here)."""
from __future__ import annotations

import pytest
from pydantic import ValidationError

from impress.contract import PROTECTION_NAMES, PURIFIER_NAMES, EvaluateParams, PurifyOverrides, method_steps
from impress.jobspec import over_limit
from impress.kinds import EVALUATE
from impress.methods import (PHOTOGUARD_STEP_OF_EPS, PROTECTIONS, PURIFIERS, ImpressParams, JpegParams, NoiseImpressParams,
                             NoiseParams, PhotoguardParams, choose, l2_budget_scale, parse_choice)
from tests.support import photo, png_bytes


def test_a_choice_is_its_model_with_the_named_defaults_and_the_given_values():
    choice = parse_choice("photoguard-16:steps=7:seed=3", "protection")
    assert (choice.label, choice.name) == ("photoguard-16:steps=7:seed=3", "photoguard-16")
    assert choice.params == PhotoguardParams(eps=16 / 255, steps=7, seed=3) and choice.step_count == 7
    assert parse_choice("jpeg-15", "purifier").params == JpegParams(quality=15)
    impress = parse_choice("impress:preset=glaze:early_stop=false:lr=0.02", "purifier").params
    assert impress == ImpressParams(preset="glaze", early_stop=False, lr=0.02) and impress.step_count is None
    assert (PROTECTION_NAMES, PURIFIER_NAMES) == (tuple(PROTECTIONS), tuple(PURIFIERS))


def test_impress_in_the_matrix_runs_the_full_published_count_unless_asked():
    for name in ("impress", "noise-impress", "impress++"):
        chosen = parse_choice(name, "purifier")
        assert chosen.params.early_stop is None and method_steps(chosen) == 1000 * (3 if name == "impress++" else 1)
    resolved = PurifyOverrides(**parse_choice("impress", "purifier").params.impress_fields()).resolve("dssim")
    assert (resolved.schedule, resolved.iters, resolved.early_stop) == ("published", 1000, False)


def test_photoguard_follows_photoguards_own_schedule_and_the_cheaper_variant_says_so():
    """MadryLab/photoguard's notebooks run `pgd` for 1000 iterations with a first step of eps/3 (0.02 for
    eps 0.06); the 200-step variants carry their count in their names."""
    for eps in (8, 16):
        full = choose("protection", f"photoguard-{eps}").params
        assert (full.eps, full.steps, full.step) == (eps / 255, 1000, None)  # None: eps/3 (PHOTOGUARD_STEP_OF_EPS)
        short = choose("protection", f"photoguard-{eps}-200steps").params
        assert short.model_dump() == {**full.model_dump(), "steps": 200}
    # A name that states its step count keeps it when an evaluation sets every protection's count.
    chosen = EvaluateParams(protections=["photoguard-16-200steps", "photoguard-16"], attack_steps=3)
    assert [c.step_count for c in chosen.protection_choices()] == [200, 3]
    assert PHOTOGUARD_STEP_OF_EPS == pytest.approx(0.02 / 0.06)


def test_noise_is_stated_in_0_1_pixel_units_and_impress_plus_plus_is_noise_then_impress():
    assert choose("purifier", "noise-0.05").params.sigma == 0.05 and choose("purifier", "noise-0.1").params.sigma == 0.1
    assert "[0, 1] pixel units" in NoiseParams.model_fields["sigma"].description
    plus = choose("purifier", "impress++").params
    assert isinstance(plus, NoiseImpressParams) and plus.sigma == 0.05 and plus.preset == "glaze"


def test_the_l2_budget_is_stated_per_512_and_scales_with_the_side():
    assert l2_budget_scale(512, 512) == 1 and l2_budget_scale(64, 64) == pytest.approx(1 / 8)
    assert l2_budget_scale(256, 1024) == pytest.approx(1.0)
    assert choose("protection", "photoguard-diffusion").params.masked_weight == 0
    assert choose("protection", "photoguard-diffusion-impress").params.masked_weight == 10


@pytest.mark.parametrize("text, kind, message", [
    ("sharpen", "purifier", "unknown purifier 'sharpen'; known: jpeg"),
    ("jpeg:sigma=1", "purifier", "purifier 'jpeg' has no parameter 'sigma'; its parameters: quality"),
    ("jpeg:quality=high", "purifier", "purifier 'jpeg': quality: Input should be a valid integer"),
    ("jpeg:quality=0", "purifier", "quality: Input should be greater than or equal to 1"),
    ("impress:preset=mist", "purifier", "preset: Input should be 'glaze' or 'photoguard'"),
    ("photoguard-8:steps=10000000", "protection", "steps: Input should be less than or equal to 100000"),
    ("blur:sigma", "purifier", "expected KEY=VALUE after the name, got 'sigma'"),
    ("blur:sigma=1:sigma=2", "purifier", "sigma is given twice"),
])
def test_bad_choices_name_what_is_wrong(text, kind, message):
    with pytest.raises(ValueError) as exc:
        parse_choice(text, kind)
    assert message in str(exc.value)


def test_the_service_iteration_limit_holds_for_every_method():
    assert parse_choice("impress:iters=100000", "purifier").step_count == 100_000  # within the engine's range
    for form in ({"purifiers": ["impress:iters=100000"]}, {"protections": ["photoguard-8:steps=2001"]},
                 {"purifiers": ["impress:preset=glaze"]},                    # the glaze preset runs 3000
                 {"purifiers": ["noise-impress"], "impress_iters": 2001},
                 {"protections": ["glaze-like"], "attack_steps": 2001}):
        params = EvaluateParams.model_validate(form)  # the engine's own ranges allow it
        assert over_limit(EVALUATE, params, 2000) and not over_limit(EVALUATE, params, 100_000)
    fine = EvaluateParams.model_validate({"purifiers": ["impress:preset=glaze:schedule=fast", "jpeg"]})
    assert fine.purifiers[0].params.schedule == "fast" and not over_limit(EVALUATE, fine, 2000)


def test_evaluate_params_travel_as_text_and_run_with_their_step_counts():
    params = EvaluateParams(protections=["photoguard-8", "mist-16:steps=5"], purifiers=["impress", "blur:sigma=2"],
                            attack_steps=3, impress_iters=4)
    dumped = params.model_dump(mode="json")
    assert dumped["protections"] == ["photoguard-8", "mist-16:steps=5"]
    assert EvaluateParams.model_validate(dumped) == params
    assert [c.step_count for c in params.protection_choices()] == [3, 5]   # a choice's own count wins
    assert [c.step_count for c in params.purifier_choices()] == [4, None]
    with pytest.raises(ValidationError, match="unknown protection 'glaze-real'"):
        EvaluateParams(protections=["glaze-real"])
    schema = EvaluateParams.model_json_schema()["properties"]["purifiers"]
    assert schema["type"] == "array" and schema["items"]["type"] == "string"


def test_purify_overrides_are_the_impress_purifier_parameters_plus_the_plateau_rule():
    assert set(PurifyOverrides.model_fields) == set(ImpressParams.model_fields) | {"plateau_window", "plateau_rel_tol"}
    chosen = choose("purifier", "noise-impress", iters=5).params
    assert chosen.impress_fields() == ImpressParams(iters=5).model_dump() and chosen.sigma == 0.05


@pytest.mark.parametrize("form", [
    {"purifiers": ["impress:iters=100000"]},              # within the engine's range, above this service's limit
    {"purifiers": ["impress:preset=glaze"]},              # the preset's 3000 iterations, above the limit
    {"protections": ["photoguard-8:steps=10000000"]},
    {"protections": ["photoguard-8:steps=2001"]},
    {"purifiers": ["jpeg:quality=high"]},
    {"purifiers": ["jpeg:sigma=1"]},
    {"purifiers": ["jpeg"], "impress_iters": "2001"},
])
def test_the_api_refuses_bad_method_parameters_before_queueing(make_fast_api, form):
    client, _, queue, _ = make_fast_api(max_iterations=2000)
    r = client.post("/v1/evaluate", files=[("clean", ("c.png", png_bytes(photo()), "image/png"))], data=form)
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_parameter", r.text
    assert queue.sent == []


def test_the_api_queues_a_valid_matrix_with_typed_choices(make_fast_api):
    client, store, queue, _ = make_fast_api(max_iterations=2000)
    r = client.post("/v1/evaluate", files=[("clean", ("c.png", png_bytes(photo()), "image/png"))],
                    data={"protections": ["mist-16:steps=5"], "purifiers": ["impress:preset=glaze:schedule=fast"]})
    assert r.status_code == 202, r.text
    params = store.get(r.json()["id"]).params
    assert isinstance(params, EvaluateParams) and params.protections[0].step_count == 5
    assert params.purifiers[0].params == ImpressParams(preset="glaze", schedule="fast")
    assert len(queue.sent) == 1


@pytest.mark.parametrize("protection, status", [
    ("glaze-like:steps=2001", 422), ("photoguard-8:steps=10000000", 422), ("mist-16:eps=high", 422),
    ("glaze-real", 422), ("photoguard-16:steps=2000", 202)])
def test_the_protect_route_holds_its_choice_to_the_same_rules(make_fast_api, protection, status):
    client, store, queue, _ = make_fast_api(max_iterations=2000)
    r = client.post("/v1/protect", files=[("images", ("a.png", png_bytes(photo()), "image/png"))],
                    data={"protection": protection})
    assert r.status_code == status, r.text
    if status == 202:
        assert store.get(r.json()["id"]).params.protection.params == PhotoguardParams(eps=16 / 255, steps=2000)
    else:
        assert r.json()["error"]["code"] == "invalid_parameter" and queue.sent == []


def test_evaluation_defaults_to_256_px():
    assert EvaluateParams().size == 256


@pytest.mark.parametrize("form, message", [
    ({"protections": ["advdm:steps=1"], "size": "64"}, "sample size is 512 px: size 64 is below it"),
    ({"purifiers": ["diffpure"], "size": "516"}, "size 516 must be a multiple of 8"),
    ({"purifiers": ["noisy-upscale"], "size": "64"}, "sample size is 128 px"),
    ({"purifiers": ["jpeg"], "edit": "inpaint", "size": "256"}, "the inpaint edit runs on the inpaint pipeline"),
])
def test_diffusion_methods_refuse_sizes_their_pipeline_cannot_work_at_before_queueing(make_fast_api, form, message):
    client, _, queue, _ = make_fast_api()
    r = client.post("/v1/evaluate", files=[("clean", ("c.png", png_bytes(photo()), "image/png"))], data=form)
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_parameter", r.text
    assert message in r.json()["error"]["message"] and queue.sent == []
    ok = client.post("/v1/evaluate", files=[("clean", ("c.png", png_bytes(photo()), "image/png"))],
                     data={**form, "size": "512"})
    assert ok.status_code == 202, ok.text


def test_the_sample_size_is_read_from_a_pipeline_folder(tmp_path):
    import json

    from impress.pipelines import sample_size

    (tmp_path / "unet").mkdir()
    (tmp_path / "vae").mkdir()
    (tmp_path / "unet" / "config.json").write_text(json.dumps({"sample_size": 8}))
    (tmp_path / "vae" / "config.json").write_text(json.dumps({"block_out_channels": [8, 16, 32]}))
    assert sample_size(str(tmp_path), "img2img") == 32 and sample_size(str(tmp_path), "upscale") == 8
    assert sample_size("stable-diffusion-v1-5/stable-diffusion-v1-5", "img2img") == 512
    assert sample_size(None, "inpaint") == 512

