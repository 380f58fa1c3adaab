"""Reports of a matrix result: Markdown and one self-contained HTML page (tables, plots and the
thumbnails of the first image, all inline), rendered from the Jinja2 templates in templates/."""
from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from typing import Callable, Optional

import jinja2

from impress.results import BudgetMeans, CellMeans, EditComparison, MatrixResult

from .matrix import NONE
from .metrics import roc_curve, rounded_mean


@dataclass(frozen=True)
class Table:
    title: str
    header: list[str]
    rows: list[list]


@dataclass(frozen=True)
class ThumbnailRow:
    protection: str
    images: list[str]   # data URIs: the protected image, then each purifier's output


def fmt(value) -> str:
    return "–" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)


ENVIRONMENT = jinja2.Environment(
    loader=jinja2.PackageLoader("worker.engine", "templates"), undefined=jinja2.StrictUndefined,
    autoescape=jinja2.select_autoescape(enabled_extensions=("html.j2",), default_for_string=False),
    trim_blocks=True, lstrip_blocks=True)
ENVIRONMENT.filters["fmt"] = fmt


def summary_line(result: MatrixResult) -> str:
    m = result.model
    return (f"model {m.name} ({m.revision}), perceptual {result.perceptual}, "
            f"{len(result.images)} images at {result.size}x{result.size}")


def tables(result: MatrixResult) -> list[Table]:
    """The result tables (and the editing scenario's, when it ran), shared by the Markdown and HTML reports."""
    perceptual = result.perceptual

    def spent(b: BudgetMeans) -> list:
        return [b.linf_255, b.l2_255, b.psnr_db, b.ssim, b.perceptual]

    def purified(m: CellMeans) -> list:
        return [m.psnr_db, m.ssim, m.linf_255, m.l2_255, m.perceptual, m.consistency_clean, m.consistency_protected,
                m.consistency_purified, m.latent_distance_before, m.latent_distance_after, m.shift_removed]

    protection_rows = [[label, *spent(p.budget), p.detection_auc] for label, p in result.protections.items()]
    cell_rows = [[c.protection, c.purifier, *purified(c.mean), c.detection_auc_clean_vs_purified, c.seconds]
                 for c in result.cells]
    return [Table("Protections: measured budget (vs clean, /255 units) and detection ROC AUC (clean vs protected)",
                  ["protection", "L∞", "L2", "PSNR dB", "SSIM", perceptual, "detection AUC"], protection_rows),
            Table("Purified vs clean, means over images",
                  ["protection", "purifier", "PSNR dB", "SSIM", "L∞", "L2", perceptual, "cons. clean",
                   "cons. protected", "cons. purified", "latent dist. before", "latent dist. after", "shift removed",
                   "AUC clean vs purified", "seconds"], cell_rows),
            *editing_tables(result)]


def editing_tables(result: MatrixResult) -> list[Table]:
    """With the editing scenario: each protected and purified set's edits against the clean edits, and
    each protection's worst case per image over the purifiers."""
    editing = result.editing
    if editing is None:
        return []
    params, pipeline = editing.settings, editing.pipeline
    what = (f"{params.mode} with {pipeline.name} ({pipeline.revision}), prompt \"{params.prompt}\", "
            f"seed {params.seed}, {params.steps} steps, guidance {params.guidance}")

    def scores(edit: Optional[EditComparison]) -> list:
        return [rounded_mean(edit.psnr_db), rounded_mean(edit.ssim), rounded_mean(edit.perceptual)] if edit else [None] * 3

    rows = [[label, "(protected)", *scores(p.edit)] for label, p in result.protections.items()]
    rows += [[c.protection, c.purifier, *scores(c.edit)] for c in result.cells]
    worst = [[label, cases.psnr_db.mean, cases.ssim.mean, cases.perceptual.mean,
              ", ".join(f"{q} ×{cases.psnr_db.purifiers.count(q)}" for q in dict.fromkeys(cases.psnr_db.purifiers))]
             for label, cases in editing.worst_case.items()]
    return [Table(f"Editing: edit(variant) vs edit(clean), means over images — {what}",
                  ["protection", "variant", "PSNR dB", "SSIM", result.perceptual], rows),
            Table("Worst case per image over purifiers (each image's best purifier, per metric; mean over images)",
                  ["protection", "PSNR dB", "SSIM", result.perceptual, "best purifier by PSNR (images)"], worst)]


def markdown_report(result: MatrixResult) -> str:
    return ENVIRONMENT.get_template("results.md.j2").render(summary=summary_line(result), tables=tables(result))


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def _figure_uri(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return data_uri(buf.getvalue())


def _grouped_bars(result: MatrixResult, metric: Callable[[CellMeans], Optional[float]], title: str,
                  protections: list[str]) -> str:
    import matplotlib.pyplot as plt

    purifiers = list(result.purifiers)
    cells = {(c.protection, c.purifier): metric(c.mean) for c in result.cells}
    fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(protections) * max(1, len(purifiers)) / 3), 3.5))
    width = 0.8 / max(1, len(purifiers))
    for j, q in enumerate(purifiers):
        values = [cells.get((p, q)) for p in protections]
        ax.bar([i + j * width for i in range(len(protections))], [v if v is not None else 0 for v in values],
               width, label=q)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(protections))], protections)
    ax.set_title(title)
    ax.legend(fontsize="small", bbox_to_anchor=(1.01, 1), loc="upper left")
    return _figure_uri(fig)


def _roc_figure(result: MatrixResult) -> str:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 4))
    for label, p in result.protections.items():
        if p.detection_auc is not None:
            fpr, tpr = roc_curve(result.clean.consistency_error, p.consistency_error)
            ax.plot(fpr, tpr, label=f"{label} (AUC {p.detection_auc:.3f})")
    ax.plot([0, 1], [0, 1], ":", color="grey")
    ax.set(xlabel="false positive rate (clean flagged)", ylabel="true positive rate",
           title="Detection by consistency error")
    ax.legend(fontsize="small")
    return _figure_uri(fig)


def html_report(result: MatrixResult) -> str:
    import matplotlib

    matplotlib.use("Agg")
    protections = list(result.protections)
    plots = [_grouped_bars(result, lambda m: m.psnr_db, "PSNR purified vs clean (dB)", protections),
             _grouped_bars(result, lambda m: m.shift_removed, "Fraction of the latent shift removed",
                           [p for p in protections if p != NONE] or protections),
             _roc_figure(result)]
    cells = {(c.protection, c.purifier): c.thumbnail for c in result.cells}
    thumbnails = [ThumbnailRow(label, [data_uri(p.thumbnail)] + [data_uri(cells[label, q]) for q in result.purifiers])
                  for label, p in result.protections.items()]
    return ENVIRONMENT.get_template("report.html.j2").render(
        summary=summary_line(result), tables=tables(result), plots=plots, first_image=result.images[0],
        clean_thumbnail=data_uri(result.clean_thumbnail), purifiers=list(result.purifiers), thumbnails=thumbnails)
