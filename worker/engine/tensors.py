"""Between decoded images (uint8 H x W x 3) and engine tensors (1 x 3 x H x W in [-1, 1])."""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageOps

from impress.images import DecodedImage


def to_tensor(rgb: np.ndarray) -> torch.Tensor:
    # The float copy is the tensor's own memory (decoded images are read-only arrays).
    return torch.from_numpy(np.asarray(rgb, dtype=np.float32)).permute(2, 0, 1)[None] / 127.5 - 1


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """One image (3 x H x W or 1 x 3 x H x W, [-1, 1]) to uint8 H x W x 3, rounded."""
    x = x.reshape(3, *x.shape[-2:])
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()


def quantize_8bit(x: torch.Tensor) -> torch.Tensor:
    """x (in [-1, 1]) as it is once saved as an 8-bit image and read back: what a user keeps, and so
    what budgets are measured on and what detection and purification see."""
    return ((x.clamp(-1, 1) + 1) * 127.5).round() / 127.5 - 1


def gaussian_noise(x: torch.Tensor, sigma: float, seed: int) -> torch.Tensor:
    """Additive Gaussian noise of std `sigma` in [0, 1] pixel units (2 sigma in the engine's [-1, 1]), as
    Hönig et al. state it (skimage's random_noise on [0, 1] images), clipped to the pixel range; drawn
    from a seeded CPU generator, so the same anywhere."""
    noise = torch.randn(x.shape, generator=torch.Generator(device="cpu").manual_seed(seed))
    return (x + 2 * sigma * noise.to(x)).clamp(-1, 1)


def fitted(image: DecodedImage, height: int, width: int) -> torch.Tensor:
    """The image centre-cropped to the aspect ratio of height x width and resized to it (Lanczos), in [-1, 1]."""
    return to_tensor(np.array(ImageOps.fit(Image.fromarray(image.rgb), (width, height), Image.LANCZOS)))


def square_images(images: list[DecodedImage], size: int) -> torch.Tensor:
    """Centre-cropped to a square and resized to size x size: one batch in [-1, 1]."""
    return torch.cat([fitted(im, size, size) for im in images])
