"""Worst case per image (BlurGuard's scoring): a protection is only as good as the best purifier
against it, image by image. For each image the purifier that best restores it is picked, on one
metric, and the protection's score is the mean of those per-image bests."""
from __future__ import annotations

import statistics

from impress.results import WorstCase


def worst_case_per_image(per_purifier: dict[str, list[float]], metric: str, higher_is_better: bool) -> WorstCase:
    """Per image, the purifier with the best value of `metric` (`per_purifier`: purifier -> one value per
    image, all lists aligned); ties go to the first purifier listed."""
    if not per_purifier:
        raise ValueError("worst case of no purifiers")
    lengths = {len(v) for v in per_purifier.values()}
    if len(lengths) != 1:
        raise ValueError(f"purifiers scored different numbers of images: {sorted(lengths)}")
    pick = max if higher_is_better else min
    values, winners = [], []
    for i in range(lengths.pop()):
        name = pick(per_purifier, key=lambda p: per_purifier[p][i])
        values.append(per_purifier[name][i])
        winners.append(name)
    return WorstCase(metric=metric, higher_is_better=higher_is_better, values=values, purifiers=winners,
                     mean=statistics.fmean(values) if values else float("nan"))
