"""The IMPRESS premise on one autoencoder, per picture: what protection does to the consistency error,
and what each purifier gives back (bench/premise.py writes the report, reports/premise-taef2.md).

Every purified picture is scored as saved, 8-bit. The decoded PSNR compares D(E(x)) with the clean
picture's reconstruction D(E(clean)): what an editing model working in the latent space would see.
"""
from __future__ import annotations

import torch

from .autoencoder import Autoencoder
from .metrics import consistency_error, latent_distance, psnr, reconstruction, ssim
from .tensors import quantize_8bit

# The figures of a purified (or protected) picture against its clean original, and whether higher is better.
FIGURES = {"consistency_error": False, "psnr_to_clean_db": True, "ssim_to_clean": True,
           "latent_distance_to_clean": False, "decoded_psnr_db": True}


def figures_against_clean(vae: Autoencoder, x: torch.Tensor, clean: torch.Tensor) -> dict[str, list[float]]:
    """`FIGURES` of each picture of x (8-bit first) against the same picture of `clean`."""
    x = quantize_8bit(x)
    with torch.no_grad():
        return {"consistency_error": consistency_error(vae, x).tolist(),
                "psnr_to_clean_db": psnr(x, clean).tolist(),
                "ssim_to_clean": ssim(x, clean).tolist(),
                "latent_distance_to_clean": latent_distance(vae, x, clean).tolist(),
                "decoded_psnr_db": psnr(reconstruction(vae, x), reconstruction(vae, clean)).tolist()}


def reconstruction_psnr(vae: Autoencoder, clean: torch.Tensor) -> list[float]:
    return psnr(reconstruction(vae, clean), clean).tolist()
