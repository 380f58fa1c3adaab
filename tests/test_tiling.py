"""Pictures of any size: tiles that cover the picture with the stated overlap, seams blended back
without a trace, and run_purification purifying a large picture tile by tile."""
from __future__ import annotations

import numpy as np
import pytest

from impress.contract import PurifyParams, StopReason
from impress.images import DecodedImage, decode_image
from tests.support import photo, png_bytes
from worker.engine.pipeline import EngineOptions, run_purification
from worker.engine.tiling import Tiling, blend, cut, origins, tiles_of


@pytest.mark.parametrize("length, size, overlap", [(100, 100, 10), (101, 50, 10), (2048, 512, 64), (600, 512, 64)])
def test_tiles_cover_the_axis_with_at_least_the_overlap(length, size, overlap):
    starts = origins(length, size, overlap)
    assert starts[0] == 0 and starts[-1] + min(size, length) == length
    assert all(b - a <= size - overlap for a, b in zip(starts, starts[1:]))   # neighbours share >= overlap


def test_blending_tiles_cut_from_a_picture_gives_it_back_exactly():
    image = DecodedImage(rgb=photo(150, 110, seed=3), alpha=None, format="PNG")
    tiles = tiles_of(110, 150, Tiling(size=64, overlap=16, above=64))
    assert len(tiles) == 2 * 3
    pieces = [piece.rgb for piece in cut(image, tiles)]
    assert np.array_equal(blend(pieces, tiles, 110, 150), image.rgb)


def test_seams_are_ramps_not_steps():
    """Two flat tiles of different grey meet in a ramp across their overlap."""
    tiles = tiles_of(8, 48, Tiling(size=32, overlap=16, above=8))
    pieces = [np.full((8, 32, 3), 0, np.uint8), np.full((8, 32, 3), 160, np.uint8)]
    row = blend(pieces, tiles, 8, 48)[0, :, 0].astype(int)
    assert row[0] == 0 and row[-1] == 160 and np.all(np.diff(row) >= 0) and np.max(np.diff(row)) <= 160 / 16 + 1


class Recorder:
    def __init__(self):
        self.calls: list[tuple[int, int]] = []

    def advance(self, step: int, total: int, loss=None) -> None:
        self.calls.append((step, total))


def test_a_large_picture_is_purified_as_tiles_and_blended_back(small_vae_dir, one_torch_thread):
    big = decode_image(png_bytes(photo(80, 56, seed=1)), max_bytes=10**7, max_pixels=10**6)
    small = decode_image(png_bytes(photo(24, 16, seed=2)), max_bytes=10**7, max_pixels=10**6)
    params = PurifyParams(preset="photoguard", iters=4, lr=0.01, alpha=0.5, delta=0.0, noise=0.05, early_stop=False)
    seen = Recorder()
    run = run_purification([big, small], params, vae=str(small_vae_dir), perceptual="dssim", report_every=2,
                           options=EngineOptions(device="cpu", tiling=Tiling(size=32, overlap=8, above=40)),
                           reporter=seen)
    tiled, untouched = run.images
    assert tiled.rgb.shape == (56, 80, 3) and untouched.rgb.shape == (16, 24, 3)
    assert run.engine.tiles == {"0": 2 * 3}
    assert tiled.stop_reason == StopReason.completed and tiled.iterations == 4 and tiled.trace[-1]["step"] == 4
    assert seen.calls[-1] == (4 * 7, 4 * 7)     # six tiles and the small picture, four iterations each
    assert np.abs(tiled.rgb.astype(int) - big.rgb).mean() < 40    # the picture, not noise
