"""run_purification hands back one image array per input, in order, with its stop reason."""
from __future__ import annotations

import numpy as np
import pytest

from impress.contract import PurifyParams, StopReason
from impress.images import decode_image
from impress.progress import Canceled
from tests.support import StepRecorder, photo, png_bytes
from worker.engine.pipeline import EngineOptions, run_purification


def decoded(width: int, height: int, seed: int):
    return decode_image(png_bytes(photo(width, height, seed=seed)), max_bytes=10**7, max_pixels=10**6)


def test_results_follow_the_inputs_and_a_cancel_leaves_the_rest_without_pixels(small_vae_dir):
    # Sizes interleaved, so the batches (grouped by size) run in another order than the inputs.
    images = [decoded(24, 16, 0), decoded(16, 24, 1), decoded(24, 16, 2), decoded(16, 24, 3)]
    params = PurifyParams(preset="photoguard", iters=4, lr=0.01, alpha=0.5, delta=0.0, noise=0.05, early_stop=False)
    full = run_purification(images, params, vae=str(small_vae_dir), perceptual="dssim",
                            options=EngineOptions(device="cpu", batch_size=1))
    assert [im.rgb.shape for im in full.images] == [(16, 24, 3), (24, 16, 3), (16, 24, 3), (24, 16, 3)]
    assert all(im.stop_reason == StopReason.completed and im.iterations == 4 for im in full.images)
    assert all(len(im.trace) >= 2 for im in full.images)

    # A cancel during the second batch (the third input, second of the 24x16 group) stops the run there.
    reporter = StepRecorder(stop_after=lambda done, total: done > 4)
    with pytest.raises(Canceled):
        run_purification(images, params, vae=str(small_vae_dir), perceptual="dssim",
                         options=EngineOptions(device="cpu", batch_size=1), reporter=reporter, report_every=2)
    assert reporter.seen == [(2, 16), (4, 16), (6, 16)]   # image-iterations of the whole run


def test_cli_purify_writes_each_input_as_png_with_its_alpha(small_vae_dir, tmp_path):
    import json

    from PIL import Image

    from cli.main import main
    from tests.support import png_bytes

    rgba = np.dstack([photo(20, 12), np.full((12, 20), 90, np.uint8)])
    (tmp_path / "a.png").write_bytes(png_bytes(rgba, mode="RGBA"))
    (tmp_path / "b.png").write_bytes(png_bytes(photo(16, 16, seed=1)))
    out = tmp_path / "out"
    assert main(["purify", str(tmp_path / "a.png"), str(tmp_path / "b.png"), "-o", str(out), "--iters", "2",
                 "--model", str(small_vae_dir), "--perceptual", "dssim", "--device", "cpu"]) == 0
    a, b = Image.open(out / "a.png"), Image.open(out / "b.png")
    assert (a.size, a.mode, b.size, b.mode) == ((20, 12), "RGBA", (16, 16), "RGB")
    assert (np.asarray(a)[..., 3] == 90).all()
    summary = json.loads((out / "purify.json").read_text())
    assert [im["stop_reason"] for im in summary["images"]] == ["completed", "completed"]
