"""The IMPRESS premise on one VAE: protect clean photos, purify, measure, detect. The figures of
reports/tiny-vae.md (scripts/report_tiny_vae.py)."""
from __future__ import annotations

import torch

from impress.contract import PurifyParams

from .metrics import (consistency_error, encode, latent_distance, pair_metrics, psnr, reconstruction, roc_auc,
                      rounded_mean)
from .protect import encoder_attack, grey_target
from .purify import purify
from .tensors import quantize_8bit


def _summary(metrics: dict[str, list[float]]) -> dict[str, float]:
    return {k: rounded_mean(v) for k, v in metrics.items()}


def _against_clean(vae, x: torch.Tensor, x_err: torch.Tensor, clean: torch.Tensor, clean_err: torch.Tensor) -> dict:
    """Mean consistency error of x (and its ratio to the clean images'), PSNR and latent distance to clean."""
    return {"consistency_error": rounded_mean(x_err.tolist()),
            "consistency_ratio_to_clean": round(rounded_mean(x_err.tolist()) / rounded_mean(clean_err.tolist()), 4),
            "psnr_to_clean_db": rounded_mean(psnr(x, clean).tolist()),
            "latent_distance_to_clean": rounded_mean(latent_distance(vae, x, clean).tolist())}


def premise_report(vae, distance, clean: torch.Tensor, *, eps_255: tuple[int, ...] = (8, 16),
                   attack_steps: int = 200, impress: PurifyParams, batch: int = 16) -> dict:
    """The figures of reports/tiny-vae.md, deterministic for a given input and seed."""
    out: dict = {"images": int(clean.shape[0]), "size": list(clean.shape[-2:])}
    recon_err = consistency_error(vae, clean)
    recon = reconstruction(vae, clean)
    out["clean"] = {"reconstruction_psnr_db": rounded_mean(psnr(recon, clean).tolist()),
                    "consistency_error": rounded_mean(recon_err.tolist()),
                    "consistency_error_median": round(float(recon_err.median()), 6)}
    target = grey_target(clean)
    z_clean, z_target = encode(vae, clean), encode(vae, target)
    out["attacks"] = []
    for eps in eps_255:
        protected = quantize_8bit(torch.cat([  # measured and purified as saved, 8-bit
            encoder_attack(vae, clean[i:i + batch], target[i:i + batch], eps=eps / 255, steps=attack_steps, seed=i)
            for i in range(0, clean.shape[0], batch)]))
        z_prot = encode(vae, protected)
        moved = 1 - (z_prot - z_target).flatten(1).norm(dim=1) / (z_clean - z_target).flatten(1).norm(dim=1)
        prot_err = consistency_error(vae, protected)
        outcomes = [purify(vae, distance, protected[i:i + batch], impress, log_every=impress.iters)
                    for i in range(0, clean.shape[0], batch)]
        purified = quantize_8bit(torch.cat([o.images for o in outcomes]))  # scored as saved, like the protected
        pur_err = consistency_error(vae, purified)
        out["attacks"].append({
            "attack": f"photoguard-encoder eps {eps}/255, {attack_steps} PGD steps toward E(grey)",
            "eps_255": eps,
            "latent_moved_toward_target": rounded_mean(moved.tolist()),
            "budget": _summary(pair_metrics(protected, clean)),
            "protected": _against_clean(vae, protected, prot_err, clean, recon_err),
            "purified": {**_against_clean(vae, purified, pur_err, clean, recon_err),
                         "impress_objective_first": rounded_mean([t[0]["loss"] for o in outcomes for t in o.traces]),
                         "impress_objective_last": rounded_mean([t[-1]["loss"] for o in outcomes for t in o.traces])},
            "detection_auc_clean_vs_protected": round(roc_auc(recon_err.tolist(), prot_err.tolist()), 4),
            "detection_auc_clean_vs_purified": round(roc_auc(recon_err.tolist(), pur_err.tolist()), 4),
        })
    return out
