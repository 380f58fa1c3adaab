"""What must hold on any model: attacks stay within budget, the report is reproducible."""
from __future__ import annotations

import torch

from impress.contract import PurifyParams
from tests.support import photo
from worker.engine.evaluate import premise_report
from worker.engine.metrics import encode, linf_255, psnr, roc_auc, ssim
from worker.engine.models import load_vae
from worker.engine.perceptual import load_perceptual
from worker.engine.protect import encoder_attack, grey_target
from worker.engine.tensors import to_tensor


def clean_batch(n=3, size=32):
    return torch.cat([to_tensor(photo(size, size, seed=s)) for s in range(n)])


def test_encoder_attack_stays_in_budget_and_moves_the_latent(small_vae_dir):
    vae, _ = load_vae(str(small_vae_dir))
    x = clean_batch()
    target = grey_target(x)
    for eps in (8, 16):
        adv = encoder_attack(vae, x, target, eps=eps / 255, steps=20)
        assert float(linf_255(adv, x).max()) <= eps + 1e-3
        assert adv.min() >= -1 and adv.max() <= 1
        z, zt = encode(vae, x), encode(vae, target)
        assert ((encode(vae, adv) - zt).norm() < (z - zt).norm())


def test_metrics_agree_with_known_values():
    a = torch.zeros(1, 3, 16, 16)
    b = a + 2 * 0.1  # 0.1 on the [0, 1] scale: MSE 0.01 -> 20 dB
    assert abs(float(psnr(a, b)) - 20.0) < 1e-4
    assert abs(float(ssim(a, a)) - 1.0) < 1e-6
    assert float(linf_255(a, b)) == 25.5
    assert roc_auc([0.1, 0.2], [0.3, 0.4]) == 1.0 and roc_auc([0.1, 0.3], [0.2, 0.4]) == 0.75


def test_premise_report_is_reproducible(small_vae_dir):
    vae, _ = load_vae(str(small_vae_dir))
    params = PurifyParams(preset="photoguard", iters=5, lr=0.005, alpha=0.01, delta=0.05, noise=0.05, early_stop=False)
    runs = [premise_report(vae, load_perceptual("dssim"), clean_batch(), eps_255=(8,), attack_steps=5, impress=params)
            for _ in range(2)]
    assert runs[0] == runs[1]
    attack = runs[0]["attacks"][0]
    assert attack["budget"]["linf_255"] <= 8 + 1e-3
    assert attack["purified"]["impress_objective_last"] < attack["purified"]["impress_objective_first"]
