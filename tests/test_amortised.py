"""The amortised purifier (docs/amortised.md): its network, training loop, serving and cascade, fast."""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from impress.contract import PurifyOverrides
from impress.methods import AmortisedParams, PhotoguardAdaptiveParams, parse_choice
from worker.engine.amortised.network import NetworkConfig, PurifierNet, load_network, parameter_count, save_network
from worker.engine.amortised.serve import load_purifier, purify_images


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory):
    """A small purifier with a nudged output layer (so it is not the identity), saved as training saves it."""
    torch.manual_seed(0)
    net = PurifierNet(NetworkConfig(channels=(8, 16, 16)))
    with torch.no_grad():
        net.head[-1].weight.normal_(0, 1e-3)
    folder = tmp_path_factory.mktemp("purifier")
    save_network(net, folder)
    return folder


def test_the_untrained_network_is_the_identity_at_any_size():
    net = PurifierNet()
    assert parameter_count(net) <= 5_000_000
    for h, w in ((64, 64), (37, 53), (9, 130)):
        x = torch.rand(2, 3, h, w) * 2 - 1
        with torch.no_grad():
            assert torch.equal(net(x), x)


def test_weights_round_trip_with_their_sha256(weights_dir):
    net, sha = load_network(weights_dir)
    again, sha_again = load_network(weights_dir)
    x = torch.rand(1, 3, 40, 24) * 2 - 1
    assert sha == sha_again and len(sha) == 64
    assert torch.equal(net(x), again(x)) and not torch.equal(net(x), x)
    _, identity = load_purifier(str(weights_dir))
    assert identity.source == "folder" and identity.revision == f"sha256:{sha}"


def test_images_of_mixed_sizes_come_back_in_order_each_as_if_alone(weights_dir, one_torch_thread):
    net, _ = load_network(weights_dir)
    images = [torch.rand(1, 3, h, w) * 2 - 1 for h, w in ((32, 48), (20, 20), (32, 48), (17, 31))]
    outputs, seconds = purify_images(net, images, batch_pixels=2 * 32 * 48)
    assert [o.shape for o in outputs] == [x.shape for x in images] and all(s >= 0 for s in seconds)
    for x, out in zip(images, outputs):
        with torch.no_grad():
            assert torch.allclose(out, net(x), atol=1e-5)


def test_methods_name_the_amortised_purifier_and_the_adaptive_attack():
    assert parse_choice("amortised", "purifier").params == AmortisedParams()
    adaptive = parse_choice("photoguard-adaptive:steps=3", "protection").params
    assert adaptive == PhotoguardAdaptiveParams(steps=3) and adaptive.eps == 16 / 255
    with pytest.raises(ValueError, match="weights"):
        parse_choice("amortised:weights=../../etc", "purifier")  # a bundled name, never a path
    assert PurifyOverrides().resolve("dssim").method == "impress"  # the default stays IMPRESS
    assert PurifyOverrides(method="cascade").resolve("dssim").method == "cascade"
    with pytest.raises(ValueError):
        PurifyOverrides(method="fastest")


def test_the_adaptive_attack_differentiates_through_the_purifier(weights_dir, small_vae_dir, one_torch_thread):
    from worker.engine.models import load_vae
    from worker.engine.protect import photoguard_adaptive

    vae, _ = load_vae(str(small_vae_dir))
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    params = {**PhotoguardAdaptiveParams(steps=2).model_dump(), "weights": str(weights_dir)}
    out = photoguard_adaptive(vae, x, None, **params)
    assert out.shape == x.shape and 0 < (out - x).abs().max() <= 2 * 16 / 255 + 1e-6


def test_the_purify_form_takes_a_method(fast_api):
    from tests.support import photo, png_bytes

    client, store, queue, _ = fast_api
    png = ("a.png", png_bytes(photo()), "image/png")
    for method in ("amortised", "cascade"):
        r = client.post("/v1/purify", files=[("images", png)], data={"method": method})
        assert r.status_code == 202, r.text
        assert store.get(r.json()["id"]).params.method == method
    assert store.get(client.post("/v1/purify", files=[("images", png)]).json()["id"]).params.method == "impress"
    bad = client.post("/v1/purify", files=[("images", png)], data={"method": "fastest"})
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_parameter"


def test_the_cascade_sends_only_flagged_images_on_to_impress(weights_dir, small_vae_dir, one_torch_thread):
    from impress.images import decode_image
    from tests.support import photo, png_bytes
    from worker.engine.amortised.purification import run_amortised, run_cascade
    from worker.engine.models import ModelUnavailable
    from worker.engine.pipeline import EngineOptions

    decode = lambda rgb: decode_image(png_bytes(rgb), max_bytes=10**7, max_pixels=10**6)  # noqa: E731
    images = [decode(photo(40, 24, seed)) for seed in range(2)] + [decode(photo(16, 16))]
    params = PurifyOverrides(iters=2, method="cascade").resolve("dssim")
    options = EngineOptions(device="cpu")
    run = dict(weights=str(weights_dir), vae=str(small_vae_dir), perceptual="dssim", options=options)
    everything = run_cascade(images, params, threshold=0.0, **run)
    assert [im.path for im in everything.images] == [["amortised", "impress"]] * 3
    assert all(im.iterations == 2 and im.score > 0 and im.seconds > 0 for im in everything.images)
    assert [im.rgb.shape for im in everything.images] == [(24, 40, 3), (24, 40, 3), (16, 16, 3)]
    nothing = run_cascade(images, params, threshold=1e9, **run)
    assert [im.path for im in nothing.images] == [["amortised"]] * 3 and nothing.engine is None
    alone = run_amortised(images, weights=str(weights_dir), options=options)
    assert all((a.rgb == b.rgb).all() for a, b in zip(alone.images, nothing.images))
    assert alone.purifier.revision.startswith("sha256:") and alone.threshold is None
    with pytest.raises(ModelUnavailable, match="needs a latent-shift detection threshold"):
        run_cascade(images, params, threshold=None, **run)


def test_training_records_every_term_and_resumes_where_it_stopped(small_vae_dir, tmp_path, one_torch_thread):
    from worker.engine.amortised.data import TrainingImages
    from worker.engine.amortised.training import CHECKPOINT, Recipe, train
    from worker.engine.models import load_vae
    from worker.engine.perceptual import load_perceptual

    vae, _ = load_vae(str(small_vae_dir))
    gen = torch.Generator().manual_seed(1)
    images = TrainingImages([torch.rand(3, 48, 48, generator=gen) * 2 - 1 for _ in range(3)],
                            [torch.rand(3, 40, 40, generator=gen) * 2 - 1], illustration_share=0.3)
    recipe = Recipe(model="small", max_steps=10, minutes=10, batch=4, clean_per_batch=1, impress_per_batch=2,
                    crop=16, protections=("photoguard-16",), protection_steps=1, pool_size=8, initial_batches=1,
                    refresh_every=4, channels=(8, 16), held_out_crops=2, held_out_steps=1, checkpoint_every=5,
                    eval_every=5, impress_from_step=5)
    state = train(dataclasses.replace(recipe, max_steps=5), images, vae, load_perceptual("dssim"), tmp_path)
    assert state.step == 5 and (tmp_path / CHECKPOINT).exists() and not list(tmp_path.glob("*.partial"))
    state = train(recipe, images, vae, load_perceptual("dssim"), tmp_path)
    record = json.loads((tmp_path / "training.json").read_text())
    assert state.step == record["steps"] == 10 and record["finished"]
    assert set(record["curve"][-1]) >= {"loss", "consistency", "perceptual", "pair", "decoded_pair"}
    assert [p["step"] for p in record["held_out"]] == [0, 5, 10]
    assert record["recipe"]["decoded_pair_weight"] == recipe.decoded_pair_weight


def test_the_benchmark_reports_every_protection_trained_on_and_held_out():
    from bench.amortised_report import both_ways_section

    row = lambda weights, trained, protection, gain: {  # noqa: E731
        "weights": weights, "trained_on": trained, "steps": 600, "protection": protection, "held_out": protection not in trained,
        "gain_db": [gain, gain]}
    split = [row("amortised-taef2", ["photoguard-16"], "photoguard-16", 4.0), row("amortised-taef2", ["photoguard-16"], "mist-16", 3.0),
             row("runs/loo", ["mist-16"], "photoguard-16", 2.0), row("runs/loo", ["mist-16"], "mist-16", 5.0)]
    table = "\n".join(both_ways_section(split))
    assert "| photoguard-16 | +4.00 dB | +2.00 dB *held out* |" in table
    assert "| mist-16 | +3.00 dB *held out* | +5.00 dB |" in table
    assert "`loo` (trained on mist-16; 600 steps)" in table
    assert both_ways_section(split[:2]) == []       # one network: nothing to compare


@pytest.mark.parametrize("protections", ["nope", "advdm", ","])
def test_train_amortised_refuses_protections_it_cannot_train_on_before_any_work(tmp_path, capsys, protections):
    from cli.main import main

    assert main(["train-amortised", "--out", str(tmp_path / "out"), "--protections", protections]) == 2
    assert "--protections: not usable for training" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
