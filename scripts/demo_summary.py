"""The demo's last step: a table, the demo's two claims checked, and a side-by-side image.

    python scripts/demo_summary.py CLEAN_DIR DEMO_DIR [--model taef2] [--delta 0.05]

DEMO_DIR holds protected/ and purified/ (one PNG per clean image, same stem) and detect.jsonl (the
output of `impress detect` over the clean, protected and purified images). Per image and stage the
table gives the detection score and verdict; what the autoencoder makes of the image (the distance of
its latent to the clean image's latent, and the PSNR of its decoded latent D(E(x)) against the clean
image's reconstruction D(E(clean)): what an editing model works from); PSNR and SSIM to the clean
image; and 1 - SSIM to the stage's input, the hinge's distance (clean -> protected -> purified).
Then, per image, whether the purified image stayed within the hinge's budget `delta` of its input
and how many dB purification gave back to the decoded latent. DEMO_DIR/side_by_side.png shows each
stage and, under it, its decoded latent.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from impress.contract import OFFLINE_MODEL, PERCEPTUAL_DEFAULT_DELTA
from impress.records import DetectedImage
from worker.engine.autoencoder import Autoencoder
from worker.engine.metrics import latent_distance, psnr, reconstruction, ssim
from worker.engine.models import load_vae
from worker.engine.tensors import to_tensor, to_uint8

STAGES = ("clean", "protected", "purified")
# The demo's claim for purification: the decoded latent at least this much closer to the clean one.
DECODED_GAIN_DB = 1.5


def load(path: Path) -> torch.Tensor:
    return to_tensor(np.array(Image.open(path).convert("RGB")))


def stage_paths(clean_dir: Path, demo: Path, stem: str) -> dict[str, Path]:
    return {"clean": next(clean_dir.glob(f"{stem}.*")), "protected": demo / "protected" / f"{stem}.png",
            "purified": demo / "purified" / f"{stem}.png"}


@dataclass(frozen=True)
class Stage:
    name: str
    image: torch.Tensor
    decoded: torch.Tensor          # D(E(image)), clamped: what an editing model works from
    latent_distance: float         # RMS distance of E(image) to E(clean)
    decoded_psnr_db: float         # D(E(image)) against D(E(clean))
    psnr_db: float                 # image against clean
    ssim: float
    dssim_to_input: float          # 1 - SSIM to the stage before it (0 for the clean image)


def stages(vae: Autoencoder, paths: dict[str, Path]) -> list[Stage]:
    images = {name: load(paths[name]) for name in STAGES}
    clean = images["clean"]
    h, w = (side - side % vae.downscale for side in clean.shape[-2:])
    crop = {name: x[..., :h, :w] for name, x in images.items()}  # the autoencoder's whole latent cells
    clean_decoded = reconstruction(vae, crop["clean"])
    out, previous = [], clean
    for name, x in images.items():
        decoded = reconstruction(vae, crop[name])
        out.append(Stage(name=name, image=x, decoded=decoded,
                         latent_distance=float(latent_distance(vae, crop[name], crop["clean"])),
                         decoded_psnr_db=float(psnr(decoded, clean_decoded)), psnr_db=float(psnr(x, clean)),
                         ssim=float(ssim(x, clean)), dssim_to_input=float(1 - ssim(x, previous))))  # the hinge's 1 - SSIM
        previous = x
    return out


def table(rows: dict[str, list[Stage]], detections: dict[str, DetectedImage], paths: dict[str, dict[str, Path]]
          ) -> list[str]:
    lines = ["| image | stage | detection score | verdict | latent distance to clean | decoded PSNR | "
             "PSNR to clean | SSIM to clean | 1 − SSIM to its input |", "|---|---|---:|---|---:|---:|---:|---:|---:|"]
    for stem, stems_stages in rows.items():
        for s in stems_stages:
            d = detections[str(paths[stem][s.name])]
            clean = s.name == "clean"
            lines.append(" | ".join([
                f"| {stem}", s.name, f"{d.score:.5f}", d.verdict.value if d.verdict else "–",
                f"{s.latent_distance:.4f}", "∞" if clean else f"{s.decoded_psnr_db:.2f} dB",
                "–" if clean else f"{s.psnr_db:.2f} dB", "1" if clean else f"{s.ssim:.4f}",
                "–" if clean else f"{s.dssim_to_input:.4f}"]) + " |")
    return lines


def claims(rows: dict[str, list[Stage]], delta: float) -> list[str]:
    """The demo's two claims per image, each marked as it holds or not."""
    lines = []
    for stem, (_, protected, purified) in rows.items():
        gain = purified.decoded_psnr_db - protected.decoded_psnr_db
        within = purified.dssim_to_input <= delta
        lines.append(f"{stem}: purified {'within' if within else 'OUTSIDE'} the hinge's budget of its input "
                     f"(1 − SSIM {purified.dssim_to_input:.4f}, Δ {delta}); decoded latent "
                     f"{protected.decoded_psnr_db:.2f} → {purified.decoded_psnr_db:.2f} dB against the clean "
                     f"image's reconstruction ({gain:+.2f} dB, {'at least' if gain >= DECODED_GAIN_DB else 'LESS than'} "
                     f"{DECODED_GAIN_DB} dB)")
    return lines


def side_by_side(rows: dict[str, list[Stage]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2 * len(rows), 3, figsize=(9, 6.2 * len(rows)), squeeze=False)
    for k, (stem, stem_stages) in enumerate(rows.items()):
        for col, s in enumerate(stem_stages):
            for row, (picture, title) in enumerate(((s.image, f"{stem}: {s.name}"),
                                                    (s.decoded, f"decoded latent, {'' if s.name == 'clean' else f'{s.decoded_psnr_db:.1f} dB'}"))):
                ax = axes[2 * k + row][col]
                ax.imshow(to_uint8(picture), interpolation="nearest")
                ax.set_title(title.rstrip(", "), fontsize=10)
                ax.axis("off")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("clean_dir", type=Path)
    p.add_argument("demo_dir", type=Path)
    p.add_argument("--model", default=OFFLINE_MODEL, help="the autoencoder the demo ran on")
    p.add_argument("--delta", type=float, default=PERCEPTUAL_DEFAULT_DELTA["dssim"],
                   help="the hinge's budget (1 - SSIM) the purification ran with")
    args = p.parse_args()
    detections = {d.name: d for d in (DetectedImage.model_validate_json(line)
                                      for line in (args.demo_dir / "detect.jsonl").read_text().splitlines())}
    vae, _ = load_vae(args.model)
    stems = sorted(path.stem for path in (args.demo_dir / "purified").glob("*.png"))
    paths = {stem: stage_paths(args.clean_dir, args.demo_dir, stem) for stem in stems}
    rows = {stem: stages(vae, paths[stem]) for stem in stems}
    print("\n".join(table(rows, detections, paths)))
    print()
    print("\n".join(claims(rows, args.delta)))
    side_by_side(rows, args.demo_dir / "side_by_side.png")
    print(f"side by side: {args.demo_dir / 'side_by_side.png'}")


if __name__ == "__main__":
    main()
