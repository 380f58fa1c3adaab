"""Worst case per image: each image scored by the purifier that restores it best."""
from __future__ import annotations

import pytest

from worker.engine.diffusion.worst_case import worst_case_per_image


def test_each_image_takes_its_best_purifier():
    psnr = {"jpeg": [20.0, 30.0, 25.0], "diffpure": [28.0, 22.0, 25.0]}
    worst = worst_case_per_image(psnr, "psnr_db", higher_is_better=True)
    assert worst.values == [28.0, 30.0, 25.0] and worst.purifiers == ["diffpure", "jpeg", "jpeg"]
    assert worst.mean == pytest.approx(83 / 3)
    lpips = worst_case_per_image({"a": [0.3, 0.1], "b": [0.2, 0.4]}, "lpips", higher_is_better=False)
    assert lpips.values == [0.2, 0.1] and lpips.purifiers == ["b", "a"]


def test_misaligned_or_empty_inputs_are_refused():
    with pytest.raises(ValueError, match="different numbers"):
        worst_case_per_image({"a": [1.0], "b": [1.0, 2.0]}, "psnr_db", True)
    with pytest.raises(ValueError, match="no purifiers"):
        worst_case_per_image({}, "psnr_db", True)
