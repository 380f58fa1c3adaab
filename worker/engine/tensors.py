"""Between decoded images (uint8 H x W x 3) and engine tensors (1 x 3 x H x W in [-1, 1])."""
from __future__ import annotations

import numpy as np
import torch


def to_tensor(rgb: np.ndarray) -> torch.Tensor:
    # The float copy is the tensor's own memory (decoded images are read-only arrays).
    return torch.from_numpy(np.asarray(rgb, dtype=np.float32)).permute(2, 0, 1)[None] / 127.5 - 1


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """One image (3 x H x W or 1 x 3 x H x W, [-1, 1]) to uint8 H x W x 3, rounded."""
    x = x.reshape(3, *x.shape[-2:])
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
