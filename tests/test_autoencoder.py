"""The one autoencoder interface: TAEF2 as shipped, and both families through the same engine functions."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from impress.contract import OFFLINE_MODEL, PurifyParams
from worker.engine.autoencoder import Autoencoder, KLAutoencoder
from worker.engine.detect import consistency_scores
from worker.engine.metrics import consistency_error, encode, latent_distance, psnr, reconstruction
from worker.engine.models import BUNDLED, BUNDLED_SHA256, ModelUnavailable, load_vae
from worker.engine.perceptual import load_perceptual
from worker.engine.protect import encoder_attack, grey_target
from worker.engine.purify import purify
from worker.engine.tensors import to_tensor
from worker.engine.tiny_autoencoder import TinyAutoencoder, load_state

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# TAEF2 reconstructs the example photos as they are (128 px short side) at 25.5 and 29.0 dB.
RECONSTRUCTION_FLOOR_DB = 24.0


def example(name: str, size: int | None = None) -> torch.Tensor:
    """An example photo as it is, or centre-cropped to a square and resized to `size`."""
    image = Image.open(f"examples/{name}.png").convert("RGB")
    return to_tensor(np.array(image if size is None else ImageOps.fit(image, (size, size), Image.LANCZOS)))


@pytest.fixture(scope="module", params=["taef2", "autoencoder-kl"])
def autoencoder(request, small_vae_dir) -> Autoencoder:
    """Each family as the engine gets it: the bundled TAEF2, and a small random AutoencoderKL loaded from
    the folder save_pretrained wrote (the real folder-loading path)."""
    return load_vae(OFFLINE_MODEL if request.param == "taef2" else str(small_vae_dir))[0]


def test_taef2_state_dicts_load_strictly_as_published():
    folder = BUNDLED[OFFLINE_MODEL]
    encoder_state, decoder_state = (load_state(folder / f"taef2_{half}.pth") for half in ("encoder", "decoder"))
    model = TinyAutoencoder(encoder_state, decoder_state)
    assert model.encoder.state_dict().keys() == encoder_state.keys()
    assert model.decoder.state_dict().keys() == decoder_state.keys()
    assert model.latent_channels == 32 and model.downscale == 8
    assert sum(p.numel() for p in model.encoder.parameters()) == 1_338_528
    with pytest.raises(RuntimeError, match="Missing key"):  # strict: a key short is refused, not ignored
        TinyAutoencoder({k: v for k, v in encoder_state.items() if k != "1.conv.0.weight"}, decoder_state)


def test_taef2_identity_records_both_checksums():
    model, identity = load_vae(OFFLINE_MODEL)
    assert isinstance(model, TinyAutoencoder) and identity.source == "bundled" and identity.name == "taef2"
    for file, digest in BUNDLED_SHA256[OFFLINE_MODEL].items():
        assert f"{file} sha256:{digest}" in identity.revision
    assert not any(p.requires_grad for p in model.parameters()) and not model.training


def test_a_bundled_model_that_does_not_match_its_checksum_is_refused(tmp_path, monkeypatch):
    from worker.engine import models

    shutil.copytree(BUNDLED[OFFLINE_MODEL], tmp_path / "taef2")
    decoder = tmp_path / "taef2" / "taef2_decoder.pth"
    decoder.chmod(0o644)
    state = load_state(decoder)
    state["19.bias"] = state["19.bias"] + 1
    torch.save(state, decoder)
    monkeypatch.setitem(models.BUNDLED, OFFLINE_MODEL, tmp_path / "taef2")
    models._load_vae_cached.cache_clear()
    try:
        with pytest.raises(ModelUnavailable, match="does not match its published sha256"):
            load_vae(OFFLINE_MODEL)
    finally:
        models._load_vae_cached.cache_clear()


def test_a_folder_of_tiny_state_dicts_loads_as_a_tiny_autoencoder(tmp_path):
    for file in BUNDLED_SHA256[OFFLINE_MODEL]:
        shutil.copy(BUNDLED[OFFLINE_MODEL] / file, tmp_path / file)
    model, identity = load_vae(str(tmp_path))
    assert isinstance(model, TinyAutoencoder) and identity.source == "folder"
    x = example("coffee", 64)
    torch.testing.assert_close(encode(model, x), encode(load_vae(OFFLINE_MODEL)[0], x))


@pytest.mark.parametrize("name", ["astronaut", "coffee"])
def test_taef2_reconstructs_the_example_photos(name):
    model, _ = load_vae(OFFLINE_MODEL)
    x = example(name)
    assert float(psnr(reconstruction(model, x), x)) > RECONSTRUCTION_FLOOR_DB


def test_both_families_through_the_same_functions(autoencoder):
    x = torch.cat([example("astronaut", 64), example("coffee", 64)])
    z = encode(autoencoder, x)
    assert z.shape == (2, autoencoder.latent_channels, 64 // autoencoder.downscale, 64 // autoencoder.downscale)
    assert reconstruction(autoencoder, x).shape == x.shape
    errors = consistency_error(autoencoder, x)
    assert errors.shape == (2,) and (errors > 0).all()
    torch.testing.assert_close(torch.tensor(consistency_scores(autoencoder, list(x.split(1)))), errors)
    assert latent_distance(autoencoder, x, x).abs().max() == 0
    assert (latent_distance(autoencoder, x, x.flip(0)) > 0).all()
    # The attack moves the latent toward its target, through the one interface.
    target = grey_target(x)
    attacked = encoder_attack(autoencoder, x, target, eps=8 / 255, steps=3)
    z_target = encode(autoencoder, target)
    assert ((encode(autoencoder, attacked) - z_target).norm() < (z - z_target).norm())
    params = PurifyParams(preset="photoguard", iters=2, lr=0.005, alpha=0.1, delta=0.01, noise=0.05,
                          early_stop=False)
    out = purify(autoencoder, load_perceptual("dssim"), x, params)
    assert out.images.shape == x.shape and out.iterations == 2


def test_sample_draws_from_the_posterior_seeded(autoencoder):
    x = example("coffee", 64)
    with torch.no_grad():
        first, again = (autoencoder.sample(x, torch.Generator().manual_seed(3)) for _ in range(2))
    torch.testing.assert_close(first, again)
    if isinstance(autoencoder, KLAutoencoder):  # a Gaussian posterior: a draw is not its mode
        assert not torch.equal(first, encode(autoencoder, x))
    else:  # a deterministic encoder: the draw is the latent
        torch.testing.assert_close(first, encode(autoencoder, x))
