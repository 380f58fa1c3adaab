"""Natural photos that Python wheels ship: a held-out evaluation set.

Nothing this project trains uses these photos. The bundled autoencoder (taef2) was trained by its
author on images that are not published, so for it they are common sample photos, not proven unseen.
"""
from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F

# (package, path inside the package): astronaut (NASA, public domain), coffee and chelsea (CC0),
# motorcycle (Middlebury stereo), rocket (public domain), china and flower (sklearn, CC BY 2.0),
# grace_hopper (public domain).
HELD_OUT = [
    ("skimage", "data/astronaut.png"), ("skimage", "data/coffee.png"), ("skimage", "data/chelsea.png"),
    ("skimage", "data/motorcycle_left.png"), ("skimage", "data/rocket.jpg"),
    ("sklearn", "datasets/images/china.jpg"), ("sklearn", "datasets/images/flower.jpg"),
    ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
]


def held_out_paths() -> list[str]:
    import importlib

    return [os.path.join(os.path.dirname(importlib.import_module(pkg).__file__), rel) for pkg, rel in HELD_OUT]


def held_out_photos(crop: int = 64, short_sides: tuple[int, ...] = (128, 256)) -> torch.Tensor:
    """Non-overlapping crop x crop tiles of each held-out photo resized to each short side, in [-1, 1]."""
    from PIL import Image

    tiles = []
    for path in held_out_paths():
        img = Image.open(path).convert("RGB")
        for short in short_sides:
            s = short / min(img.size)
            im = img.resize((round(img.width * s), round(img.height * s)), Image.LANCZOS)
            t = torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1).float() / 127.5 - 1
            h, w = (t.shape[1] // crop) * crop, (t.shape[2] // crop) * crop
            t = t[:, :h, :w].unfold(1, crop, crop).unfold(2, crop, crop)  # 3, nh, nw, crop, crop
            tiles.append(t.permute(1, 2, 0, 3, 4).reshape(-1, 3, crop, crop))
    return torch.cat(tiles)


def resize_short_side(x: torch.Tensor, short: int) -> torch.Tensor:
    s = short / min(x.shape[-2:])
    return F.interpolate(x, scale_factor=s, mode="bilinear", antialias=True, align_corners=False)
