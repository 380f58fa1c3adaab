"""The protection x purification matrix, in memory: every protection, then every purifier, over a batch.

For each cell (protection x purifier, plus a 'none' protection row of clean images) it measures the
purified image against the clean one (PSNR, SSIM, L-inf, L2, perceptual distance), the consistency
error of clean, protected and purified images, the latent distance to E(clean) before and after
purification and the fraction of the protection's latent shift removed. Per protection: the measured
budget and the detection ROC AUC of the consistency error (clean vs protected). Purified images are
scored as saved, 8-bit, like protected ones. IMPRESS purifiers run on their preset's model when the
caller names one per preset (`impress_vae`), else on the matrix's. A cache (the CLI's resumable
folder, matrix_cache.py) may hand back protected images and cells computed before.
"""
from __future__ import annotations

import time
from typing import Callable, Optional, Protocol, TypeVar

import torch
from pydantic import BaseModel

from impress.contract import method_steps
from impress.images import encode_png
from impress.methods import ImpressParams, MethodChoice
from impress.progress import SILENT, Reporter, Span, spans
from impress.results import (BudgetMeans, Cell, CellMeans, CellPerImage, CleanSummary, EditComparison,
                             EditingSummary, MatrixResult, MethodLabel, ModelIdentity, ProtectionSummary,
                             UploadedResult)

from .detect import consistency_scores
from .diffusion.scenario import EditingRun, PipelineSet, worst_cases
from .metrics import latent_distance, rounded_mean, roc_auc
from .protect import apply_protection, budget
from .purifiers import apply_purifier
from .tensors import quantize_8bit, to_uint8

NONE = "none"  # the protection row of clean images: what each purifier costs an unprotected image
UPLOADED = "uploaded"  # protected or purified images made elsewhere


M = TypeVar("M", bound=BaseModel)


def means(per_image: BaseModel, into: type[M]) -> M:
    """Each figure's mean over the images (`rounded_mean`), as `into`."""
    return into(**{name: rounded_mean(values) for name, values in per_image if values is not None})


def editing_summary(editing: EditingRun, cells: list[Cell]) -> EditingSummary:
    by_protection: dict[str, dict[str, EditComparison]] = {}
    for cell in cells:
        if cell.edit is not None:
            by_protection.setdefault(cell.protection or UPLOADED, {})[cell.purifier] = cell.edit
    return EditingSummary(settings=editing.params, pipeline=editing.pipeline,
                          worst_case={label: worst_cases(edits) for label, edits in by_protection.items()})


class MatrixCache(Protocol):
    """Where earlier results of the same settings may come from (matrix_cache.ResumeFolder)."""

    def protected(self, label: str, choice: MethodChoice, compute: Callable[[], torch.Tensor]) -> torch.Tensor: ...

    def cell(self, protection: str, choice: Optional[MethodChoice], purifier: MethodChoice,
             compute: Callable[[], Cell]) -> Cell: ...


class Recompute:
    """No cache: every protection and cell is computed (the evaluation job)."""

    def protected(self, label, choice, compute):
        return compute()

    def cell(self, protection, choice, purifier, compute):
        return compute()


def thumbnail(x: torch.Tensor) -> bytes:
    return encode_png(to_uint8(x[0]))


def _chunked(fn: Callable[[torch.Tensor, Reporter], torch.Tensor], x: torch.Tensor, batch: int,
             reporter: Reporter = SILENT) -> torch.Tensor:
    """`fn` over `x` in chunks of `batch` images, each chunk reporting its share of `reporter`'s count."""
    starts = range(0, x.shape[0], batch)
    parts = spans(reporter, [min(batch, x.shape[0] - i) for i in starts])
    return torch.cat([fn(x[i:i + batch], part) for i, part in zip(starts, parts)])


def work(choice: Optional[MethodChoice]) -> int:
    """A method's share of the matrix's progress count: its optimisation steps (1 for one that runs none)."""
    return max(1, (method_steps(choice) or 1) if choice is not None else 1)


class MatrixProgress:
    """The matrix's progress over its units of work (each protection, then each cell), weighted by steps."""

    def __init__(self, reporter: Reporter, lengths: list[int]):
        self.reporter, self.total, self.done = reporter, sum(lengths), 0

    def unit(self, length: int) -> Span:
        span = Span(self.reporter, self.done, length, self.total)
        self.done += length
        return span

    def finished(self, span: Span) -> None:
        """A unit done, whether it ran (its loops reported) or came from a cache (they did not)."""
        self.reporter.advance(span.start + span.length, self.total)


def summarize_protection(vae, distance, clean: torch.Tensor, protected: torch.Tensor, clean_scores: list[float],
                         name: str, params: dict, batch: int, scores: Optional[list[float]] = None,
                         editing: Optional[EditingRun] = None) -> ProtectionSummary:
    """What a protection spent and how detectable it is (and, with an editing scenario, how its images
    edit); `scores` are the protected images' consistency errors when already known (the 'none' row's
    are the clean ones)."""
    scores = scores if scores is not None else consistency_scores(vae, list(protected.split(1)), batch)
    spent = budget(protected, clean, distance)
    return ProtectionSummary(name=name, params=params, budget=means(spent, BudgetMeans),
                             budget_per_image=spent, consistency_error=scores,
                             detection_auc=None if name == NONE else round(roc_auc(clean_scores, scores), 4),
                             edit=editing.score(protected) if editing else None, thumbnail=thumbnail(protected))


def measure_purified(vae, distance, clean: torch.Tensor, protected: torch.Tensor, purified: torch.Tensor,
                     clean_scores: list[float], protected_scores: list[float], batch: int,
                     editing: Optional[EditingRun] = None, **cell) -> Cell:
    """Purified against clean, how much of the protection's latent shift the purifier removed and, with
    an editing scenario, how the purified images edit."""
    before, after = (torch.cat([latent_distance(vae, x[i:i + batch], clean[i:i + batch])
                                for i in range(0, len(x), batch)]).tolist() for x in (protected, purified))
    purified_scores = consistency_scores(vae, list(purified.split(1)), batch)
    per_image = CellPerImage(**budget(purified, clean, distance).model_dump(),
                             consistency_clean=clean_scores, consistency_protected=protected_scores,
                             consistency_purified=purified_scores,
                             latent_distance_before=before, latent_distance_after=after,
                             shift_removed=[1 - a / b if b > 0 else None for a, b in zip(after, before)])
    return Cell(mean=means(per_image, CellMeans), per_image=per_image,
                detection_auc_clean_vs_purified=round(roc_auc(clean_scores, purified_scores), 4),
                edit=editing.score(purified) if editing else None, thumbnail=thumbnail(purified), **cell)


ImpressVae = Callable[[str], object]  # preset name -> the VAE an IMPRESS purifier of that preset runs on


def purify_cell(vae, distance, clean: torch.Tensor, protected: torch.Tensor, clean_scores: list[float],
                protected_scores: list[float], purifier: MethodChoice, batch: int,
                protection: Optional[str] = None, pipelines: Optional[PipelineSet] = None,
                editing: Optional[EditingRun] = None, impress_vae: Optional[ImpressVae] = None,
                reporter: Reporter = SILENT) -> Cell:
    """Run `purifier` on the protected images (timed; an IMPRESS purifier on `impress_vae(its preset)` when
    given) and measure the result, saved as 8 bits, with the matrix's `vae`."""
    runs_on = impress_vae(purifier.params.preset) if impress_vae and isinstance(purifier.params, ImpressParams) else vae
    t0 = time.perf_counter()
    purified = quantize_8bit(_chunked(
        lambda part, share: apply_purifier(purifier, part, runs_on, distance, pipelines, reporter=share),
        protected, batch, reporter))
    seconds = round(time.perf_counter() - t0, 3)
    return measure_purified(vae, distance, clean, protected, purified, clean_scores, protected_scores, batch, editing,
                            protection=protection, purifier=purifier.label, params=purifier.params.model_dump(),
                            seconds=seconds)


def run_matrix(vae, identity: ModelIdentity, distance, clean: torch.Tensor, names: list[str],
               protections: list[MethodChoice], purifiers: list[MethodChoice], *, batch: int = 8,
               cache: MatrixCache = Recompute(), reporter: Reporter = SILENT, pipelines: Optional[PipelineSet] = None,
               editing: Optional[EditingRun] = None, impress_vae: Optional[ImpressVae] = None) -> MatrixResult:
    """The matrix over `clean` (N x 3 x S x S in [-1, 1], on the VAE's device). Diffusion protections and
    purifiers run on `pipelines`; `editing` adds the editing scenario to every row and cell; IMPRESS
    purifiers run on `impress_vae(preset)` when given. The `reporter` counts the optimisation steps of
    every protection and cell (a cancel raises out of it)."""
    clean_scores = consistency_scores(vae, list(clean.split(1)), batch)
    rows: list[tuple[str, Optional[MethodChoice]]] = [(NONE, None), *((p.label, p) for p in protections)]
    progress = MatrixProgress(reporter, [work(choice) + sum(work(q) for q in purifiers) for _, choice in rows])
    summaries: dict[str, ProtectionSummary] = {}
    cells: list[Cell] = []
    for label, choice in rows:
        unit = progress.unit(work(choice))
        if choice is None:
            protected = clean
            summary = summarize_protection(vae, distance, clean, clean, clean_scores, NONE, {}, batch, clean_scores,
                                           editing)
        else:
            protected = cache.protected(label, choice, lambda c=choice: _chunked(
                lambda part, share: apply_protection(c, vae, part, distance, pipelines=pipelines, reporter=share),
                clean, batch, unit)).to(clean)
            summary = summarize_protection(vae, distance, clean, protected, clean_scores, choice.name,
                                           choice.params.model_dump(), batch, editing=editing)
        progress.finished(unit)
        summaries[label] = summary
        for purifier in purifiers:
            unit = progress.unit(work(purifier))
            cells.append(cache.cell(label, choice, purifier, lambda q=purifier, share=unit: purify_cell(
                vae, distance, clean, protected, clean_scores, summary.consistency_error, q, batch, label, pipelines,
                editing, impress_vae, share)))
            progress.finished(unit)
    return MatrixResult(model=identity, perceptual=distance.name, size=clean.shape[-1], images=names,
                        clean=CleanSummary(consistency_error=clean_scores),
                        purifiers={q.label: MethodLabel(name=q.name, params=q.params.model_dump()) for q in purifiers},
                        protections=summaries, cells=cells, pipelines=pipelines.used() if pipelines else {},
                        editing=editing_summary(editing, cells) if editing else None, clean_thumbnail=thumbnail(clean))


def measure_uploaded(vae, identity: ModelIdentity, distance, clean: torch.Tensor, protected: torch.Tensor,
                     purified: Optional[torch.Tensor], purifiers: list[MethodChoice], batch: int = 8, *,
                     pipelines: Optional[PipelineSet] = None, editing: Optional[EditingRun] = None,
                     impress_vae: Optional[ImpressVae] = None, reporter: Reporter = SILENT) -> UploadedResult:
    """The "upload your own" path: protections made elsewhere (real Glaze/Mist outputs), measured
    against their clean originals; an uploaded purified set and each named purifier are measured too.
    The `reporter` counts the purifiers' optimisation steps."""
    clean_scores = consistency_scores(vae, list(clean.split(1)), batch)
    summary = summarize_protection(vae, distance, clean, protected, clean_scores, UPLOADED, {}, batch, editing=editing)
    cells = [] if purified is None else [measure_purified(vae, distance, clean, protected, purified, clean_scores,
                                                          summary.consistency_error, batch, editing, purifier=UPLOADED)]
    cells += [purify_cell(vae, distance, clean, protected, clean_scores, summary.consistency_error, q, batch,
                          pipelines=pipelines, editing=editing, impress_vae=impress_vae, reporter=share)
              for q, share in zip(purifiers, spans(reporter, [work(q) for q in purifiers]))]
    return UploadedResult(model=identity, perceptual=distance.name, clean=CleanSummary(consistency_error=clean_scores),
                          protection=summary, cells=cells, pipelines=pipelines.used() if pipelines else {},
                          editing=editing_summary(editing, cells) if editing else None)
