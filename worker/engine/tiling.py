"""Pictures of any size: overlapping tiles purified like images of their own, blended back with
linear ramps across each overlap, so no seam shows and memory stays that of one tile.

A picture whose longer side exceeds `Tiling.above` is cut into tiles of at most `size` x `size`
pixels that overlap by at least `overlap` pixels (evenly spread, the last one flush with the edge).
Each tile is optimised by the IMPRESS loop on its own (its consistency and perceptual terms are the
tile's), in batches like any images of one size. Blending weighs each tile's pixel by the product
of two ramps that rise from 0 to 1 across the overlap with its neighbour (flat where a tile meets
the picture's border), so every output pixel is a convex mix of the tiles that cover it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from impress.images import DecodedImage


@dataclass(frozen=True)
class Tiling:
    size: int = 512       # a tile's side, at most
    overlap: int = 64     # pixels two neighbouring tiles share, at least
    above: int = 1024     # pictures with a longer side are tiled

    def applies(self, height: int, width: int) -> bool:
        return max(height, width) > self.above


@dataclass(frozen=True)
class Tile:
    top: int
    left: int
    height: int
    width: int


def origins(length: int, size: int, overlap: int) -> list[int]:
    """Tile starts along one axis: tiles of `size` covering [0, length) with at least `overlap` shared."""
    if length <= size:
        return [0]
    count = math.ceil((length - overlap) / (size - overlap))
    return [round(k * (length - size) / (count - 1)) for k in range(count)]


def tiles_of(height: int, width: int, tiling: Tiling) -> list[Tile]:
    th, tw = min(tiling.size, height), min(tiling.size, width)
    return [Tile(top, left, th, tw) for top in origins(height, th, tiling.overlap)
            for left in origins(width, tw, tiling.overlap)]


def cut(image: DecodedImage, tiles: list[Tile]) -> list[DecodedImage]:
    """The tiles as images of their own (RGB only: the picture's alpha is re-attached after blending)."""
    return [DecodedImage(rgb=image.rgb[t.top:t.top + t.height, t.left:t.left + t.width], alpha=None,
                         format=image.format) for t in tiles]


def ramp(length: int, rise_start: int, rise_end: int) -> np.ndarray:
    """Weights along one axis of a tile: rising over `rise_start` pixels at its start, falling over
    `rise_end` at its end (0: flat, the picture's border)."""
    weights = np.ones(length, dtype=np.float64)
    for rise, flip in ((rise_start, False), (rise_end, True)):
        if rise > 0:
            up = (np.arange(rise) + 0.5) / rise
            view = weights[::-1] if flip else weights
            view[:rise] = np.minimum(view[:rise], up)
    return weights


def blend(pieces: list[np.ndarray], tiles: list[Tile], height: int, width: int) -> np.ndarray:
    """The picture (uint8 H x W x 3) from its purified tiles (uint8 each), ramps across every overlap."""
    total = np.zeros((height, width, 3), dtype=np.float64)
    weight = np.zeros((height, width, 1), dtype=np.float64)
    for piece, t in zip(pieces, tiles):
        shared = lambda a, b: max(0, a - b)  # noqa: E731 - pixels this tile shares with the neighbour before it
        up = max((shared(o.top + o.height, t.top) for o in tiles if o.top < t.top and o.left == t.left), default=0)
        down = max((shared(t.top + t.height, o.top) for o in tiles if o.top > t.top and o.left == t.left), default=0)
        left = max((shared(o.left + o.width, t.left) for o in tiles if o.left < t.left and o.top == t.top), default=0)
        right = max((shared(t.left + t.width, o.left) for o in tiles if o.left > t.left and o.top == t.top), default=0)
        w = np.outer(ramp(t.height, up, down), ramp(t.width, left, right))[..., None]
        total[t.top:t.top + t.height, t.left:t.left + t.width] += w * piece
        weight[t.top:t.top + t.height, t.left:t.left + t.width] += w
    return np.clip(np.round(total / weight), 0, 255).astype(np.uint8)
