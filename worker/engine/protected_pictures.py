"""Protected copies of the evaluation pictures, kept as 8-bit PNGs so a long run resumes where it stopped.

Protections cost hundreds of autoencoder gradient steps per picture; the detection bench and the
premise report measure the same protected pictures, so both read them from one folder keyed by the
model's revision, the size and the protection's full parameters (`protection_key`).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from PIL import Image

from impress.methods import MethodChoice

from .protect import apply_protection
from .tensors import to_tensor, to_uint8


def protection_key(choice: MethodChoice) -> str:
    """A folder name that changes whenever the protection's parameters do."""
    params = json.dumps(choice.params.model_dump(), sort_keys=True)
    return f"{choice.name}-{hashlib.sha256(params.encode()).hexdigest()[:10]}"


def protected_pictures(vae, distance, clean: torch.Tensor, names: list[str], choice: MethodChoice, folder: Path,
                       batch: int = 4, done: Optional[Callable[[int], None]] = None) -> torch.Tensor:
    """`clean` (B x 3 x H x W in [-1, 1]) protected by `choice`: each picture read from folder/NAME.png
    when an earlier run wrote it, else protected (in batches of `batch`) and written there. `done` is
    told how many pictures each batch finished."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{name}.png" for name in names]
    missing = [i for i, p in enumerate(paths) if not p.is_file()]
    for k in range(0, len(missing), batch):
        part = missing[k:k + batch]
        protected = apply_protection(choice, vae, clean[part], distance)
        for i, image in zip(part, protected):
            Image.fromarray(to_uint8(image)).save(paths[i])
        if done is not None:
            done(len(part))
    return torch.cat([to_tensor(np.asarray(Image.open(p).convert("RGB"))) for p in paths]).to(clean)
