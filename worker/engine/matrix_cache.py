"""The CLI's resumable matrix folder: each finished cell and each protected batch is kept on disk, so
an interrupted `impress bench` resumes where it stopped; the reports are written next to them.

OUTDIR/cells/<protection>__<purifier>.json (+ .png, its first purified image) and
OUTDIR/protected/<protection>.pt hold what was computed, each with the key of its settings (method
parameters, image names, size, model revision, perceptual distance); a rerun reuses an entry only
when its key matches.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Callable, Optional

import torch

from impress.methods import MethodChoice
from impress.results import Cell, MatrixResult, ModelIdentity

from .matrix import NONE
from .report import html_report, markdown_report


# Bumped when a cell's figures change shape: cells stored in an older shape are computed again
# (2: the perceptual distance as `perceptual`, no longer under its own name).
CELL_FORMAT = 2


def _safe(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", label)


def _identity(choice: Optional[MethodChoice]) -> list:
    return [NONE, {}] if choice is None else [choice.name, choice.params.model_dump()]


def write_atomically(path: Path, data: bytes) -> None:
    """A killed run leaves no half-written file."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


class ResumeFolder:
    """A matrix cache in `folder` for one setting; counts the cells it computed and those it reused."""

    def __init__(self, folder: Path, *, images: list[str], size: int, model: ModelIdentity, perceptual: str,
                 diffusion: Optional[dict] = None):
        """`diffusion`: the configured pipelines' revisions and the editing scenario's settings, when
        any (a cell computed without them, or with others, is computed again)."""
        self.folder = Path(folder)
        (self.folder / "cells").mkdir(parents=True, exist_ok=True)
        (self.folder / "protected").mkdir(exist_ok=True)
        self.setting = dict(images=images, size=[size, size], model=[model.name, model.revision],
                            perceptual=perceptual)
        if diffusion:
            self.setting["diffusion"] = diffusion
        self.computed = self.skipped = 0

    def _key(self, **parts) -> str:
        return json.dumps({**parts, **self.setting}, sort_keys=True, default=str)

    def protected(self, label: str, choice: MethodChoice, compute: Callable[[], torch.Tensor]) -> torch.Tensor:
        path = self.folder / "protected" / f"{_safe(label)}.pt"
        key = self._key(protection=_identity(choice))
        if path.exists():
            cached = torch.load(path, weights_only=True)
            if cached["key"] == key:
                return cached["images"]
        images = compute()
        tmp = path.with_suffix(".tmp")
        torch.save({"key": key, "images": images.cpu()}, tmp)
        os.replace(tmp, path)
        return images

    def cell(self, protection: str, choice: Optional[MethodChoice], purifier: MethodChoice,
             compute: Callable[[], Cell]) -> Cell:
        path = self.folder / "cells" / f"{_safe(protection)}__{_safe(purifier.label)}.json"
        key = self._key(protection=_identity(choice), purifier=_identity(purifier), cell=CELL_FORMAT)
        if path.exists() and path.with_suffix(".png").exists():
            stored = json.loads(path.read_text())
            if stored.get("key") == key:
                self.skipped += 1
                return Cell(**stored["cell"], thumbnail=path.with_suffix(".png").read_bytes())
        cell = compute()
        write_atomically(path.with_suffix(".png"), cell.thumbnail)
        write_atomically(path, (json.dumps({"key": key, "cell": cell.model_dump(mode="json")}, indent=1)
                                + "\n").encode())
        self.computed += 1
        return cell

    def write_reports(self, result: MatrixResult) -> None:
        """results.json (with how many cells were computed and resumed), results.md and report.html."""
        record = {**result.model_dump(mode="json"), "computed": self.computed, "skipped": self.skipped}
        write_atomically(self.folder / "results.json", (json.dumps(record, indent=1) + "\n").encode())
        write_atomically(self.folder / "results.md", markdown_report(result).encode())
        write_atomically(self.folder / "report.html", html_report(result).encode())
