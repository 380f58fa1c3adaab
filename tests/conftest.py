"""Shared fixtures: a small VAE saved and loaded through the real from_pretrained path, real Redis
on its own database index and key prefix, and (in test_service) a real Celery worker process."""
from __future__ import annotations

import io
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))  # reference_impress.py, the published loop

# The service tests talk to a real Redis on their own database index and key prefix.
TEST_REDIS_URL = os.environ.get("IMPRESS_TEST_REDIS_URL", "redis://127.0.0.1:6379/13")


def small_vae_config() -> dict:
    return dict(in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 2,
                up_block_types=["UpDecoderBlock2D"] * 2, block_out_channels=[16, 32], layers_per_block=1,
                latent_channels=4, norm_num_groups=8, sample_size=32)


@pytest.fixture(scope="session")
def small_vae_dir(tmp_path_factory) -> Path:
    """A randomly initialised small AutoencoderKL written with save_pretrained (loaded back offline)."""
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("models") / "small-vae"
    AutoencoderKL(**small_vae_config()).save_pretrained(folder, safe_serialization=True)
    return folder


@pytest.fixture(scope="session")
def random_lpips():
    from worker.engine.perceptual import load_perceptual

    return load_perceptual("lpips-vgg-random-backbone")


def photo(width: int = 48, height: int = 40, seed: int = 0) -> np.ndarray:
    """A smooth synthetic photo-like image (gradients plus a few shapes), uint8 H x W x 3."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width] / max(width, height)
    img = np.stack([np.sin(3 * xx + rng.uniform(0, 3)), np.cos(4 * yy + rng.uniform(0, 3)), xx * yy], -1)
    img = (img - img.min()) / (np.ptp(img) + 1e-9)
    return (img * 255).astype(np.uint8)


def png_bytes(rgb: np.ndarray, mode: str = "RGB", fmt: str = "PNG", **save) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).convert(mode).save(buf, format=fmt, **save)
    return buf.getvalue()
