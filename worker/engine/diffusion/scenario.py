"""The editing scenario over a benchmark matrix, and the pipelines a run may use.

`PipelineSet` loads each configured pipeline kind on first use (a run that needs no inpainting never
loads the inpainting model) and says what to configure when a kind is missing. An `EditingRun` edits
the clean images once and every protected and purified variant alike and compares each with the clean
edit (the matrix calls it for every row and cell); `worst_cases` scores a protection by its worst case
per image: for each image the purifier whose purified copy edits most like the clean image (BlurGuard's
scoring).
"""
from __future__ import annotations

from typing import Optional

import torch

from impress.pipelines import configured_pipelines
from impress.results import EditComparison, PipelineIdentity, WorstCases
from impress.scenarios import EditParams

from ..models import ModelUnavailable
from .editing import compare, edit
from .pipelines import load_pipeline, missing_pipeline, resolve_pipeline
from .worst_case import worst_case_per_image


class PipelineSet:
    """The configured pipeline of each kind (name or None), loaded on first use, with identities."""

    def __init__(self, names: dict[str, Optional[str]], device: str = "cpu", dtype: torch.dtype = torch.float32):
        self.names, self.device, self.dtype = names, device, dtype
        self.identities: dict[str, PipelineIdentity] = {}

    @classmethod
    def from_settings(cls, settings, device: str) -> "PipelineSet":
        """The service's configured pipelines (IMPRESS_PIPELINE, ...) in the engine's precision on `device`
        (bf16 weights on CUDA under precision auto, fp32 on the CPU)."""
        from ..purify import autocast_dtype

        return cls(configured_pipelines(settings), device, autocast_dtype(device, settings.precision) or torch.float32)

    def configured(self, kind: str) -> bool:
        return bool(self.names.get(kind))

    def get(self, kind: str):
        """The pipeline of `kind`; ModelUnavailable when none is configured or it is not here."""
        if not self.configured(kind):
            raise missing_pipeline(kind)
        pipe, identity = load_pipeline(self.names[kind], kind, self.device, self.dtype)
        self.identities[kind] = identity
        return pipe

    def revisions(self) -> dict[str, list[str]]:
        """[name, revision] of each configured pipeline, read from disk without loading (cache keys);
        'missing' for one that is not here (its first use fails with model_unavailable)."""
        found = {}
        for kind, name in self.names.items():
            if name:
                try:
                    found[kind] = [name, resolve_pipeline(name, kind)[2]]
                except ModelUnavailable:
                    found[kind] = [name, "missing"]
        return found

    def used(self) -> dict[str, PipelineIdentity]:
        """Identities of the pipelines this run loaded, by kind: what produced its results."""
        return dict(self.identities)


# The editing metrics a worst case is taken on (WorstCases' fields), and which way is better.
WORST_CASE_METRICS = {"psnr_db": True, "ssim": True, "perceptual": False}


class EditingRun:
    """One editing scenario over one set of clean images: the clean images are edited once (the
    reference), then each variant (protected, purified) is edited alike and compared with it."""

    def __init__(self, pipelines: PipelineSet, params: EditParams, distance, clean: torch.Tensor,
                 mask: Optional[torch.Tensor] = None, batch: Optional[int] = None):
        self.pipe = pipelines.get(params.pipeline_kind)
        self.pipeline = pipelines.used()[params.pipeline_kind]
        self.params, self.distance, self.mask, self.batch = params, distance, mask, batch or len(clean)
        self.reference = self._edit(clean)

    def _edit(self, images: torch.Tensor) -> torch.Tensor:
        masks = [None] * len(images) if self.mask is None else list(self.mask.split(1))
        return torch.cat([edit(self.pipe, images[i:i + self.batch], self.params,
                               None if self.mask is None else torch.cat(masks[i:i + self.batch]))
                          for i in range(0, len(images), self.batch)])

    def score(self, images: torch.Tensor) -> EditComparison:
        """How the edits of `images` (one per clean image, same order) compare with the clean edits."""
        return compare(self._edit(images), self.reference, self.distance)


def worst_cases(purified: dict[str, EditComparison]) -> WorstCases:
    """Per metric, each image's best purifier against one protection (the worst case for it)."""
    return WorstCases(**{metric: worst_case_per_image({p: getattr(c, metric) for p, c in purified.items()}, metric,
                                                      higher)
                         for metric, higher in WORST_CASE_METRICS.items()})
