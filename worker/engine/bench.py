"""The benchmark matrix (DESIGN.md section 3): every protection, then every purifier, over a folder.

For each cell (protection x purifier, plus a 'none' protection row of clean images) it measures the
purified image against the clean one (PSNR, SSIM, L-inf, L2, perceptual distance), the consistency
error of clean, protected and purified images, the latent distance to E(clean) before and after
purification and the fraction of the protection's latent shift removed. Per protection: the measured
budget and the detection ROC AUC of the consistency error (clean vs protected).

Resumable: each finished cell is a file OUTDIR/cells/<protection>__<purifier>.json and each protected
batch is cached in OUTDIR/protected/; a rerun skips what was computed with the same settings
(protection and purifier parameters, images, size, model revision, perceptual distance).
"""
from __future__ import annotations

import base64
import html
import io
import json
import os
import re
import statistics
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from PIL import Image, ImageOps
from tqdm import tqdm

from impress.images import DecodedImage, encode_png
from impress.methods import MethodChoice

from .detect import consistency_scores
from .metrics import latent_distance, roc_auc, roc_curve
from .protect import apply_protection, budget
from .purifiers import apply_purifier
from .tensors import to_tensor, to_uint8

NONE = "none"  # the protection row of clean images: what each purifier costs an unprotected image


def square_images(images: list[DecodedImage], size: int) -> torch.Tensor:
    """Centre-cropped to a square and resized to size x size (Lanczos): one batch in [-1, 1]."""
    return torch.cat([to_tensor(np.array(ImageOps.fit(Image.fromarray(im.rgb), (size, size), Image.LANCZOS)))
                      for im in images])


def _chunked(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, batch: int) -> torch.Tensor:
    return torch.cat([fn(x[i:i + batch]) for i in range(0, x.shape[0], batch)])


def _mean(values: list) -> Optional[float]:
    values = [v for v in values if v is not None]
    return round(float(statistics.fmean(values)), 6) if values else None


def _safe(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", label)


def _key(**parts) -> str:
    return json.dumps(parts, sort_keys=True, default=str)


def _write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)  # a killed run leaves no half-written cell


def _thumbnail(x: torch.Tensor) -> bytes:
    return encode_png(to_uint8(x[0]))


def run_bench(vae, identity: dict, distance, clean: torch.Tensor, names: list[str],
              protections: list[MethodChoice], purifiers: list[MethodChoice], out: Path, *,
              batch: int = 8, progress: bool = True) -> dict:
    """Run (or resume) the matrix over `clean` (N x 3 x S x S in [-1, 1], on the VAE's device), write
    results.json, results.md and report.html to `out`, and return the results."""
    out = Path(out)
    (out / "cells").mkdir(parents=True, exist_ok=True)
    (out / "protected").mkdir(exist_ok=True)
    setting = dict(images=names, size=list(clean.shape[-2:]), model=[identity["name"], identity["revision"]],
                   perceptual=distance.name)
    clean_scores = consistency_scores(vae, list(clean.split(1)), batch)
    (out / "clean.png").write_bytes(_thumbnail(clean))
    results = {"model": identity, "perceptual": distance.name, "size": clean.shape[-1], "images": names,
               "clean": {"consistency_error": clean_scores},
               "purifiers": {q.label: {"name": q.name, "params": q.params.model_dump()} for q in purifiers},
               "protections": {}, "cells": [], "computed": 0, "skipped": 0}
    rows: dict[str, Optional[MethodChoice]] = {NONE: None, **{p.label: p for p in protections}}
    bar = tqdm(total=len(rows) * len(purifiers), desc="bench", unit="cell", disable=not progress)
    for p_label, p_spec in rows.items():
        protected = _protected(vae, distance, clean, p_label, p_spec, out, setting, batch)
        for q_spec in purifiers:
            q_label = q_spec.label
            path = out / "cells" / f"{_safe(p_label)}__{_safe(q_label)}.json"
            key = _key(protection=_identity(p_spec), purifier=_identity(q_spec), **setting)
            bar.set_postfix_str(f"{p_label} / {q_label}")
            if path.exists() and json.loads(path.read_text()).get("key") == key:
                results["skipped"] += 1
            else:
                cell = _cell(vae, distance, clean, protected, clean_scores, q_spec, batch)
                cell.update(protection=p_label, purifier=q_label, key=key)
                path.with_suffix(".png").write_bytes(_thumbnail(cell.pop("images")))
                _write(path, json.dumps(cell, indent=1, default=str) + "\n")
                results["computed"] += 1
            results["cells"].append(json.loads(path.read_text()))
            bar.update()
        results["protections"][p_label] = _protection_summary(vae, distance, clean, protected, clean_scores,
                                                              *_identity(p_spec), batch)
    bar.close()
    _write(out / "results.json", json.dumps(results, indent=1, default=str) + "\n")
    _write(out / "results.md", markdown_report(results))
    _write(out / "report.html", html_report(results, out))
    return results


def _protected(vae, distance, clean, label, spec, out, setting, batch) -> torch.Tensor:
    """The protected images, from the cache when it holds them for these settings."""
    if spec is None:
        return clean
    path = out / "protected" / f"{_safe(label)}.pt"
    key = _key(protection=_identity(spec), **setting)
    if path.exists():
        cached = torch.load(path, weights_only=True)
        if cached["key"] == key:
            return cached["images"].to(clean)
    images = _chunked(lambda part: apply_protection(spec, vae, part, distance), clean, batch)
    tmp = path.with_suffix(".tmp")
    torch.save({"key": key, "images": images.cpu()}, tmp)
    os.replace(tmp, path)
    path.with_suffix(".png").write_bytes(_thumbnail(images))
    return images


def _identity(choice: Optional[MethodChoice]) -> list:
    return [NONE, {}] if choice is None else [choice.name, choice.params.model_dump()]


def _protection_summary(vae, distance, clean, protected, clean_scores, name, params, batch) -> dict:
    scores = consistency_scores(vae, list(protected.split(1)), batch)
    spent = budget(protected, clean, distance)
    return {"name": name, "params": params, "budget": {k: _mean(v) for k, v in spent.items()},
            "budget_per_image": spent, "consistency_error": scores,
            "detection_auc": None if name == NONE else round(roc_auc(clean_scores, scores), 4)}


def _cell(vae, distance, clean, protected, clean_scores, spec, batch) -> dict:
    t0 = time.perf_counter()
    purified = _chunked(lambda part: apply_purifier(spec, part, vae, distance), protected, batch)
    seconds = time.perf_counter() - t0
    return {"params": spec.params.model_dump(), "seconds": round(seconds, 3),
            **cell_metrics(vae, distance, clean, protected, purified, clean_scores, batch)}


def cell_metrics(vae, distance, clean, protected, purified, clean_scores, batch) -> dict:
    """Purified against clean, and how much of the protection's latent shift the purifier removed."""
    before, after = (torch.cat([latent_distance(vae, x[i:i + batch], clean[i:i + batch])
                                for i in range(0, len(x), batch)]).tolist() for x in (protected, purified))
    purified_scores = consistency_scores(vae, list(purified.split(1)), batch)
    per_image = {**budget(purified, clean, distance),
                 "consistency_clean": clean_scores,
                 "consistency_protected": consistency_scores(vae, list(protected.split(1)), batch),
                 "consistency_purified": purified_scores,
                 "latent_distance_before": before, "latent_distance_after": after,
                 "shift_removed": [1 - a / b if b > 0 else None for a, b in zip(after, before)]}
    return {"mean": {k: _mean(v) for k, v in per_image.items()}, "per_image": per_image,
            "detection_auc_clean_vs_purified": round(roc_auc(clean_scores, purified_scores), 4),
            "images": purified}


def evaluate_uploaded(vae, identity: dict, distance, clean: torch.Tensor, protected: torch.Tensor,
                      purified: Optional[torch.Tensor], purifiers: list[MethodChoice], batch: int = 8) -> dict:
    """The "upload your own" path: protections made elsewhere (real Glaze/Mist outputs), measured
    against their clean originals; an uploaded purified set and each named purifier are measured too."""
    clean_scores = consistency_scores(vae, list(clean.split(1)), batch)
    results = {"model": identity, "perceptual": distance.name, "clean": {"consistency_error": clean_scores},
               "protection": _protection_summary(vae, distance, clean, protected, clean_scores, "uploaded", {},
                                                 batch), "cells": []}
    if purified is not None:
        cell = cell_metrics(vae, distance, clean, protected, purified, clean_scores, batch)
        cell.pop("images")
        results["cells"].append({"purifier": "uploaded", **cell})
    for spec in purifiers:
        cell = _cell(vae, distance, clean, protected, clean_scores, spec, batch)
        cell.pop("images")
        results["cells"].append({"purifier": spec.label, **cell})
    return results


def _fmt(v) -> str:
    return "–" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)


def _tables(results: dict) -> list[tuple[str, list[str], list[list]]]:
    """(title, header, rows) of the two result tables, shared by the Markdown and HTML reports."""
    perceptual = results["perceptual"]
    budget_keys = ["linf_255", "l2_255", "psnr_db", "ssim", perceptual]
    prot_rows = [[label, *(p["budget"].get(k) for k in budget_keys), p["detection_auc"]]
                 for label, p in results["protections"].items()]
    cell_keys = ["psnr_db", "ssim", "linf_255", "l2_255", perceptual, "consistency_clean", "consistency_protected",
                 "consistency_purified", "latent_distance_before", "latent_distance_after", "shift_removed"]
    cell_rows = [[c["protection"], c["purifier"], *(c["mean"].get(k) for k in cell_keys),
                  c["detection_auc_clean_vs_purified"], c["seconds"]] for c in results["cells"]]
    return [("Protections: measured budget (vs clean, /255 units) and detection ROC AUC (clean vs protected)",
             ["protection", "L∞", "L2", "PSNR dB", "SSIM", perceptual, "detection AUC"], prot_rows),
            ("Purified vs clean, means over images",
             ["protection", "purifier", "PSNR dB", "SSIM", "L∞", "L2", perceptual, "cons. clean", "cons. protected",
              "cons. purified", "latent dist. before", "latent dist. after", "shift removed",
              "AUC clean vs purified", "seconds"], cell_rows)]


def _header(results: dict) -> str:
    m = results["model"]
    return (f"model {m['name']} ({m['revision']}), perceptual {results['perceptual']}, "
            f"{len(results['images'])} images at {results['size']}x{results['size']}")


def markdown_report(results: dict) -> str:
    lines = ["# Protection x purification benchmark", "", _header(results), ""]
    for title, header, rows in _tables(results):
        lines += [f"## {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
        lines.append("")
    return "\n".join(lines)


def _png_b64(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def _figure_b64(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return _png_b64(buf.getvalue())


def _grouped_bars(results: dict, metric: str, title: str, protections: list[str]) -> str:
    import matplotlib.pyplot as plt

    purifiers = list(results["purifiers"])
    cells = {(c["protection"], c["purifier"]): c["mean"].get(metric) for c in results["cells"]}
    fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(protections) * max(1, len(purifiers)) / 3), 3.5))
    width = 0.8 / max(1, len(purifiers))
    for j, q in enumerate(purifiers):
        values = [cells.get((p, q)) for p in protections]
        ax.bar([i + j * width for i in range(len(protections))], [v if v is not None else 0 for v in values],
               width, label=q)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(protections))], protections)
    ax.set_title(title)
    ax.legend(fontsize="small", bbox_to_anchor=(1.01, 1), loc="upper left")
    return _figure_b64(fig)


def _roc_figure(results: dict) -> str:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 4))
    clean = results["clean"]["consistency_error"]
    for label, p in results["protections"].items():
        if p["detection_auc"] is not None:
            fpr, tpr = roc_curve(clean, p["consistency_error"])
            ax.plot(fpr, tpr, label=f"{label} (AUC {p['detection_auc']:.3f})")
    ax.plot([0, 1], [0, 1], ":", color="grey")
    ax.set(xlabel="false positive rate (clean flagged)", ylabel="true positive rate",
           title="Detection by consistency error")
    ax.legend(fontsize="small")
    return _figure_b64(fig)


def html_report(results: dict, out: Path) -> str:
    """One self-contained page: tables, plots and the thumbnails of the first image, all inline."""
    import matplotlib

    matplotlib.use("Agg")
    esc = html.escape
    protections = list(results["protections"])
    parts = ["<!doctype html><meta charset='utf-8'><title>IMPRESS benchmark</title><style>"
             "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;font-size:13px}"
             "td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}"
             "img.t{width:128px;image-rendering:pixelated}</style>",
             f"<h1>Protection x purification benchmark</h1><p>{esc(_header(results))}</p>"]
    for title, header, rows in _tables(results):
        parts.append(f"<h2>{esc(title)}</h2><table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr>")
        parts += ["<tr>" + "".join(f"<td>{esc(_fmt(v))}</td>" for v in row) + "</tr>" for row in rows]
        parts.append("</table>")
    plots = [_grouped_bars(results, "psnr_db", "PSNR purified vs clean (dB)", protections),
             _grouped_bars(results, "shift_removed", "Fraction of the latent shift removed",
                           [p for p in protections if p != NONE] or protections),
             _roc_figure(results)]
    parts.append("<h2>Plots</h2>" + "".join(f"<img src='{src}'> " for src in plots))
    thumb = lambda path: f"<img class='t' src='{_png_b64(path.read_bytes())}'>"  # noqa: E731
    parts.append(f"<h2>First image ({esc(results['images'][0])})</h2><p>clean {thumb(out / 'clean.png')}</p>"
                 "<table><tr><th>protection</th><th>protected</th>"
                 + "".join(f"<th>{esc(q)}</th>" for q in results["purifiers"]) + "</tr>")
    for p in protections:
        protected = out / "clean.png" if p == NONE else out / "protected" / f"{_safe(p)}.png"
        parts.append(f"<tr><th>{esc(p)}</th><td>{thumb(protected)}</td>"
                     + "".join(f"<td>{thumb(out / 'cells' / f'{_safe(p)}__{_safe(q)}.png')}</td>"
                               for q in results["purifiers"]) + "</tr>")
    parts.append("</table>")
    return "\n".join(parts) + "\n"
