"""Perceptual distances for IMPRESS's hinge, per image, with the fixed image's side computed once.

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

import torch
import torch.nn.functional as F

from .models import ModelUnavailable

VGG16_FILE = "vgg16-397923af.pth"  # torchvision's IMAGENET1K_V1 weights, which lpips loads


class LpipsDistance(torch.nn.Module):
    """LPIPS whose reference-image features are computed once (`set_reference`), not every step."""

    def __init__(self, random_backbone: bool):
        super().__init__()
        import lpips

        self.name = "lpips-vgg-random-backbone" if random_backbone else "lpips-vgg"
        self.net = lpips.LPIPS(net="vgg", pretrained=True, pnet_rand=random_backbone, verbose=False)
        self.net.eval().requires_grad_(False)
        self._ref_feats: list[torch.Tensor] | None = None

    def _features(self, x: torch.Tensor) -> list[torch.Tensor]:
        import lpips

        outs = self.net.net(self.net.scaling_layer(x))
        # The backbone may run in bf16 under autocast; the unit-normalised features are compared in
        # fp32, since their difference cancels most of their digits.
        return [lpips.normalize_tensor(o.float()) for o in outs]

    def set_reference(self, ref: torch.Tensor) -> None:
        with torch.no_grad():
            self._ref_feats = [f.detach() for f in self._features(ref)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Distance of each image of x to the matching reference image: shape (B,)."""
        feats = self._features(x)
        total = 0
        for lin, f, r in zip(self.net.lins, feats, self._ref_feats):
            total = total + lin((f - r) ** 2).mean(dim=(2, 3), keepdim=True)
        return total.flatten()


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    g = torch.exp(-((torch.arange(size) - size // 2) ** 2) / (2 * sigma**2))
    return g / g.sum()


class SsimDistance(torch.nn.Module):
    """1 - SSIM per image, channels averaged; inputs in [-1, 1]."""

    name = "dssim"

    def __init__(self):
        super().__init__()
        self.register_buffer("window", _gaussian_window())
        self._ref: tuple[torch.Tensor, ...] | None = None

    def _blur(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        w = self.window.to(x.dtype)
        x = F.conv2d(x, w.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
        return F.conv2d(x, w.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)

    def set_reference(self, ref: torch.Tensor) -> None:
        y = (ref.float() + 1) / 2
        mu_y = self._blur(y)
        self._ref = (y, mu_y, self._blur(y * y) - mu_y**2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Always fp32: variances are differences of close numbers (E[x²] − E[x]²), which bf16's
        # 8-bit mantissa turns into noise that misleads the optimiser under autocast.
        with torch.autocast(device_type=x.device.type, enabled=False):
            return 1 - ssim_against(self, (x.float() + 1) / 2, *self._ref)


def ssim_against(dist: SsimDistance, x: torch.Tensor, y, mu_y, var_y) -> torch.Tensor:
    c1, c2 = 0.01**2, 0.03**2
    mu_x = dist._blur(x)
    var_x = dist._blur(x * x) - mu_x**2
    cov = dist._blur(x * y) - mu_x * mu_y
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return s.mean(dim=(1, 2, 3))


def vgg16_cache_file() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / VGG16_FILE


def require_vgg16() -> None:
    if not vgg16_cache_file().exists():
        raise ModelUnavailable(
            f"LPIPS-VGG needs torchvision's VGG16 ImageNet weights at {vgg16_cache_file()} "
            f"(TORCH_HOME={os.environ.get('TORCH_HOME', 'unset')}). On a connected machine run "
            "`impress models pull` with the same TORCH_HOME and copy that file here, or choose the "
            "offline distance IMPRESS_PERCEPTUAL=dssim.")


def load_perceptual(name: str, device: str = "cpu"):
    """A perceptual distance module by name, on device, frozen."""
    if name == "dssim":
        return SsimDistance().to(device)
    if name in ("lpips-vgg", "lpips-vgg-random-backbone"):
        random_backbone = name.endswith("random-backbone")
        if not random_backbone:
            require_vgg16()
        return LpipsDistance(random_backbone).to(device)
    raise ValueError(f"unknown perceptual distance {name!r}: lpips-vgg, dssim")
