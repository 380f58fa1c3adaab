"""The editing scenario over a benchmark matrix, and the pipelines a run may use.

`PipelineSet` loads each configured pipeline kind on first use (a run that needs no inpainting never
loads the inpainting model) and says what to configure when a kind is missing. `editing_matrix` edits
the clean images once and every protected and purified variant alike, compares each with the clean
edit, and scores every protection by its worst case per image: for each image the purifier whose
purified copy edits most like the clean image (BlurGuard's scoring).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Optional

import torch

from impress.scenarios import EditParams

from .editing import EditComparison, compare, edit
from .pipelines import SETTING_OF_KIND, PipelineIdentity, load_pipeline, missing_pipeline
from .worst_case import WorstCase, worst_case_per_image


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

        names = {kind: getattr(settings, SETTING_OF_KIND[kind].removeprefix("IMPRESS_").lower())
                 for kind in SETTING_OF_KIND}
        return cls(names, device, autocast_dtype(device, settings.precision) or torch.float32)

    def configured(self, kind: str) -> bool:
        return bool(self.names.get(kind))

    def get(self, kind: str):
        """The pipeline of `kind`; ModelUnavailable when none is configured or it is not here."""
        if not self.configured(kind):
            raise missing_pipeline(kind)
        pipe, identity = load_pipeline(self.names[kind], kind, self.device, self.dtype)
        self.identities[kind] = identity
        return pipe

    def used(self) -> dict[str, dict]:
        """Identities of the pipelines this run loaded, by kind: what produced its results."""
        return {kind: identity.as_dict() for kind, identity in self.identities.items()}


# The editing metrics a worst case is taken on, and which way is better.
WORST_CASE_METRICS = {"psnr_db": True, "ssim": True, "perceptual": False}


@dataclass
class ProtectionEdits:
    protected: EditComparison                                   # edit(protected) vs edit(clean)
    purified: dict[str, EditComparison] = field(default_factory=dict)   # by purifier
    worst_case: dict[str, WorstCase] = field(default_factory=dict)      # by metric, over purifiers


@dataclass
class EditingMatrix:
    settings: EditParams
    pipeline: dict                                   # PipelineIdentity.as_dict()
    perceptual: str
    protections: dict[str, ProtectionEdits] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {**asdict(self), "settings": self.settings.model_dump()}


def editing_matrix(pipelines: PipelineSet, settings: EditParams, distance, clean: torch.Tensor,
                   protected: dict[str, torch.Tensor], purified: dict[tuple[str, str], torch.Tensor],
                   mask: Optional[torch.Tensor] = None) -> EditingMatrix:
    """Edit clean, protected (by protection) and purified (by (protection, purifier)) images alike and
    compare each with the clean edit; worst case per image over each protection's purifiers."""
    pipe = pipelines.get(settings.pipeline_kind)
    reference = edit(pipe, clean, settings, mask)
    result = EditingMatrix(settings, pipelines.used()[settings.pipeline_kind], distance.name)
    for name, images in protected.items():
        cell = ProtectionEdits(compare(edit(pipe, images, settings, mask), reference, distance))
        for (protection, purifier), out in purified.items():
            if protection == name:
                cell.purified[purifier] = compare(edit(pipe, out, settings, mask), reference, distance)
        if cell.purified:
            cell.worst_case = {metric: worst_case_per_image(
                {p: getattr(c, metric) for p, c in cell.purified.items()}, metric, higher)
                for metric, higher in WORST_CASE_METRICS.items()}
        result.protections[name] = cell
    return result
