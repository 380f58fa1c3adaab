"""The demo's last step: a table and a side-by-side image of clean, protected and purified photos.

    python scripts/demo_summary.py CLEAN_DIR DEMO_DIR

DEMO_DIR holds protected/ and purified/ (one PNG per clean image, same stem) and detect.jsonl (the
output of `impress detect` over the clean, protected and purified images). Prints a Markdown table
per image (consistency error; PSNR and SSIM to the clean image) and writes DEMO_DIR/side_by_side.png.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from impress.records import DetectedImage
from worker.engine.metrics import psnr, ssim
from worker.engine.tensors import to_tensor

STAGES = ("clean", "protected", "purified")


def load(path: Path) -> torch.Tensor:
    return to_tensor(np.array(Image.open(path).convert("RGB")))


def stage_paths(clean_dir: Path, demo: Path, stem: str) -> dict[str, Path]:
    return {"clean": next(clean_dir.glob(f"{stem}.*")), "protected": demo / "protected" / f"{stem}.png",
            "purified": demo / "purified" / f"{stem}.png"}


def table(clean_dir: Path, demo: Path, stems: list[str], scores: dict[str, float]) -> list[str]:
    lines = ["| image | stage | consistency error | PSNR to clean | SSIM to clean |", "|---|---|---:|---:|---:|"]
    for stem in stems:
        paths = stage_paths(clean_dir, demo, stem)
        clean = load(paths["clean"])
        for stage in STAGES:
            x = load(paths[stage])
            quality = ("–", "1") if stage == "clean" else (f"{float(psnr(x, clean)):.2f} dB", f"{float(ssim(x, clean)):.4f}")
            lines.append(f"| {stem} | {stage} | {scores[str(paths[stage])]:.5f} | {quality[0]} | {quality[1]} |")
    return lines


def side_by_side(clean_dir: Path, demo: Path, stems: list[str], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(stems), 3, figsize=(9, 3.2 * len(stems)), squeeze=False)
    for row, stem in zip(axes, stems):
        for ax, (stage, path) in zip(row, stage_paths(clean_dir, demo, stem).items()):
            ax.imshow(Image.open(path).convert("RGB"), interpolation="nearest")
            ax.set_title(f"{stem}: {stage}", fontsize=10)
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("clean_dir", type=Path)
    p.add_argument("demo_dir", type=Path)
    args = p.parse_args()
    detections = [DetectedImage.model_validate_json(line)
                  for line in (args.demo_dir / "detect.jsonl").read_text().splitlines()]
    scores = {d.name: d.score for d in detections}
    stems = sorted(path.stem for path in (args.demo_dir / "purified").glob("*.png"))
    print("\n".join(table(args.clean_dir, args.demo_dir, stems, scores)))
    side_by_side(args.clean_dir, args.demo_dir, stems, args.demo_dir / "side_by_side.png")
    print(f"side by side: {args.demo_dir / 'side_by_side.png'}")


if __name__ == "__main__":
    main()
