"""Perceptual distances for IMPRESS's hinge, per image, with the reference image's side computed once.

- ``lpips-vgg``: LPIPS (v0.1) with torchvision's ImageNet VGG16 backbone, as the authors used.
  The backbone weights come from the torch hub cache; when absent, a clear error says which file.
- ``lpips-vgg-random-backbone``: the same network with a random backbone. It costs exactly the same
  FLOPs, so speed benchmarks use it; it is NOT LPIPS and never labels a quality result.
- ``dssim``: 1 - SSIM (11x11 Gaussian window, sigma 1.5, on [0, 1] pixels). What we can honestly
  offer offline. Its scale differs from LPIPS: see contract.PERCEPTUAL_DEFAULT_DELTA and _ALPHA.
Every distance has a name that goes into every result.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from .models import ModelUnavailable

VGG16_FILE = "vgg16-397923af.pth"  # torchvision's IMAGENET1K_V1 weights, which lpips loads


# x (B x 3 x H x W in [-1, 1]) -> its distance to the bound reference images, per image: shape (B,)
Scorer = Callable[[torch.Tensor], torch.Tensor]


class PerceptualDistance(torch.nn.Module):
    """A distance between images and reference images, per image, without hidden state.

    `prepare(reference)` computes the reference's side once (features, local statistics); calling the
    distance with `(x, prepared)` compares x to it; `bind(reference)` is both in one scorer. Steps of an
    optimisation call it with the same prepared reference, so the fixed image costs nothing per step.
    """

    name: str

    def prepare(self, reference: torch.Tensor) -> Sequence[torch.Tensor]:
        raise NotImplementedError

    def bind(self, reference: torch.Tensor) -> Scorer:
        prepared = self.prepare(reference)
        return lambda x: self(x, prepared)


class LpipsDistance(PerceptualDistance):
    """LPIPS (v0.1, VGG16 backbone); the reference's side is its unit-normalised features."""

    def __init__(self, random_backbone: bool):
        super().__init__()
        import lpips

        self.name = "lpips-vgg-random-backbone" if random_backbone else "lpips-vgg"
        self.net = lpips.LPIPS(net="vgg", pretrained=True, pnet_rand=random_backbone, verbose=False)
        self.net.eval().requires_grad_(False)

    def _features(self, x: torch.Tensor) -> list[torch.Tensor]:
        import lpips

        outs = self.net.net(self.net.scaling_layer(x))
        # The backbone may run in bf16 under autocast; the unit-normalised features are compared in
        # fp32, since their difference cancels most of their digits.
        return [lpips.normalize_tensor(o.float()) for o in outs]

    def prepare(self, reference: torch.Tensor) -> list[torch.Tensor]:
        with torch.no_grad():
            return [f.detach() for f in self._features(reference)]

    def forward(self, x: torch.Tensor, prepared: Sequence[torch.Tensor]) -> torch.Tensor:
        feats = self._features(x)
        total = 0
        for lin, f, r in zip(self.net.lins, feats, prepared):
            total = total + lin((f - r) ** 2).mean(dim=(2, 3), keepdim=True)
        return total.flatten()


def gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """The normalised 1-D Gaussian of SSIM's window."""
    g = torch.exp(-((torch.arange(size) - size // 2) ** 2) / (2 * sigma**2))
    return g / g.sum()


class SsimDistance(PerceptualDistance):
    """1 - SSIM per image (11x11 Gaussian window, sigma 1.5, on [0, 1] pixels, channels averaged);
    inputs in [-1, 1]. The reference's side is its pixels, local means and local variances.

    Always fp32, also under autocast: variances are differences of close numbers (E[x²] − E[x]²),
    which bf16's 8-bit mantissa turns into noise that misleads the optimiser.
    """

    name = "dssim"

    def __init__(self):
        super().__init__()
        self.register_buffer("window", gaussian_window())

    def _local_mean(self, x: torch.Tensor) -> torch.Tensor:
        """Gaussian-weighted local means over the windows that fit in the image (no padding)."""
        c = x.shape[1]
        w = self.window.to(x.dtype)
        x = F.conv2d(x, w.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
        return F.conv2d(x, w.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)

    def prepare(self, reference: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        with torch.autocast(device_type=reference.device.type, enabled=False), torch.no_grad():
            y = (reference.float() + 1) / 2
            mu_y = self._local_mean(y)
            return y, mu_y, self._local_mean(y * y) - mu_y**2

    def similarity(self, x: torch.Tensor, prepared: Sequence[torch.Tensor]) -> torch.Tensor:
        """SSIM of each image of x to the prepared reference, per image."""
        y, mu_y, var_y = prepared
        c1, c2 = 0.01**2, 0.03**2
        with torch.autocast(device_type=x.device.type, enabled=False):
            x = (x.float() + 1) / 2
            mu_x = self._local_mean(x)
            var_x = self._local_mean(x * x) - mu_x**2
            cov = self._local_mean(x * y) - mu_x * mu_y
            s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
            return s.mean(dim=(1, 2, 3))

    def forward(self, x: torch.Tensor, prepared: Sequence[torch.Tensor]) -> torch.Tensor:
        return 1 - self.similarity(x, prepared)


def vgg16_cache_file() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / VGG16_FILE


def require_vgg16() -> None:
    if not vgg16_cache_file().exists():
        raise ModelUnavailable(
            f"LPIPS-VGG needs torchvision's VGG16 ImageNet weights at {vgg16_cache_file()} "
            f"(TORCH_HOME={os.environ.get('TORCH_HOME', 'unset')}). On a connected machine run "
            "`impress models pull` with the same TORCH_HOME and copy that file here, or choose the "
            "offline distance IMPRESS_PERCEPTUAL=dssim.")


def load_perceptual(name: str, device: str = "cpu") -> PerceptualDistance:
    """A perceptual distance module by name, on device, frozen."""
    if name == "dssim":
        return SsimDistance().to(device)
    if name in ("lpips-vgg", "lpips-vgg-random-backbone"):
        random_backbone = name.endswith("random-backbone")
        if not random_backbone:
            require_vgg16()
        return LpipsDistance(random_backbone).to(device)
    raise ValueError(f"unknown perceptual distance {name!r}: lpips-vgg, dssim")
