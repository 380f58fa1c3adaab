"""Training pictures that Debian packages ship, disjoint from every evaluation set.

Photographs (first chosen, by eye, for the retired impress-tiny-vae) and illustrations train the
amortised purifier. Evaluation uses other sources (the photographs that
Python wheels ship, worker/engine/photos.py; sway-backgrounds, openclipart, tuxpaint stamps), so
no evaluated picture is ever trained on.

    apt-get download mate-backgrounds lomiri-wallpapers-16.04 lomiri-wallpapers-20.04 \
        plasma-workspace-wallpapers gnome-backgrounds debian-edu-artwork-buster \
        debian-edu-artwork-emerald debian-edu-artwork-homeworld debian-edu-artwork-softwaves \
        debian-edu-artwork-spacefun
"""
from __future__ import annotations

import glob
import os
import subprocess
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

# Photographs only: these packages also ship illustrations and renders. Each name was checked by eye.
TRAIN_PHOTOS = {
    "usr/share/backgrounds/mate/nature": [     # mate-backgrounds (GPL-2+)
        "Aqua", "Blinds", "Dune", "FreshFlower", "Garden", "GreenMeadow", "LadyBird", "RainDrops",
        "Storm", "TwoWings", "Wood", "YellowFlower"],
    "usr/share/backgrounds": [                 # lomiri-wallpapers-16.04 and -20.04 (CC-BY(-SA), CC0)
        "Bridge_by_Sander_Klootwijk", "Dragonfly_by_Bolly", "Picture_0B_by_freespace",
        "Picture_1A_by_freespace", "Wine_by_Jakkub_Mede", "aitzgorri_by_Aitzol_Berasategi",
        "free_by_Peter_Nerlich", "friends_by_Aitzol_Berasategi", "greentock_by_Peter_Nerlich",
        "life_by_Aitzol_Berasategi", "picosdeeuropa_by_Aitzol_Berasategi",
        "seeding_by_Clements_Engelhardt", "sunset_by_Aitzol_Berasategi", "Kleiber_by_Lukas_Baubkus"],
    "usr/share/wallpapers": [                  # plasma-workspace-wallpapers (GPL-2+)
        "BytheWater", "ColdRipple", "ColorfulCups", "DarkestHour", "EveningGlow", "FallenLeaf",
        "Grey", "Kite", "OneStandsOut", "Path", "summer_1am"],
}
PHOTO_DEBS = ["mate-backgrounds", "lomiri-wallpapers-16.04", "lomiri-wallpapers-20.04", "plasma-workspace-wallpapers"]

# Illustrations (flat colour, lines, gradients, pixel art): the raster files of GNOME's backgrounds
# (CC-BY-SA-3.0) and Debian Edu's themes (GPL-2+), one of each light/dark pair.
TRAIN_ILLUSTRATIONS = [
    "usr/share/backgrounds/gnome/adwaita-d.webp", "usr/share/backgrounds/gnome/grid-l.webp",
    "usr/share/backgrounds/gnome/licorice-d.webp", "usr/share/backgrounds/gnome/pixels-l.webp",
    "usr/share/backgrounds/gnome/symbolic-d.webp", "usr/share/backgrounds/gnome/truchet-l.webp",
    "usr/share/backgrounds/gnome/wood-l.webp",
    *(f"usr/share/desktop-base/debian-edu-{theme}-theme/grub/grub-16x9.png"
      for theme in ("buster", "emerald", "homeworld", "softwaves", "spacefun")),
]
ILLUSTRATION_DEBS = ["gnome-backgrounds", *(f"debian-edu-artwork-{theme}" for theme in
                                            ("buster", "emerald", "homeworld", "softwaves", "spacefun"))]


def photo_file(root: Path, folder: str, name: str) -> Path:
    """A wallpaper by name: a plain .jpg, or a Plasma package whose largest rendition we take."""
    plain = root / folder / f"{name}.jpg"
    if plain.exists():
        return plain
    sizes = glob.glob(str(root / folder / name / "contents" / "images" / "*"))
    if not sizes:
        raise SystemExit(f"training photo {folder}/{name} not found: download the packages {PHOTO_DEBS}")
    return Path(max(sizes, key=os.path.getsize))


def fetch_debs(folder: Path, packages: list[str]) -> None:
    """apt-get download the packages whose .deb is not in `folder` yet; RuntimeError saying what failed."""
    missing = [p for p in packages if not list(folder.glob(f"{p}_*.deb"))]
    if missing:
        folder.mkdir(parents=True, exist_ok=True)
        try:
            subprocess.run(["apt-get", "download", *missing], cwd=folder, check=True)
        except (OSError, subprocess.CalledProcessError) as exc:
            raise RuntimeError(f"could not download {' '.join(missing)} ({exc}); put their .deb files in {folder}")


def extract_debs(debs_dir: Path, into: Path, packages: list[str]) -> None:
    """Unpack the newest .deb of each package found in `debs_dir` into `into`."""
    for package in packages:
        debs = sorted(debs_dir.glob(f"{package}_*.deb"))
        if not debs:
            raise SystemExit(f"{package}_*.deb not in {debs_dir}: apt-get download {' '.join(packages)}")
        subprocess.run(["dpkg-deb", "-x", str(debs[-1]), str(into)], check=True)


def photo_files(debs_dir: Path, into: Path) -> list[Path]:
    extract_debs(debs_dir, into, PHOTO_DEBS)
    return [photo_file(into, folder, name) for folder, names in TRAIN_PHOTOS.items() for name in names]


def illustration_files(debs_dir: Path, into: Path) -> list[Path]:
    extract_debs(debs_dir, into, ILLUSTRATION_DEBS)
    return [into / relative for relative in TRAIN_ILLUSTRATIONS]


def load_rgb(path: Path, short_side: int) -> torch.Tensor:
    """3 x H x W in [-1, 1], downscaled (Lanczos) to `short_side` on the short side when larger."""
    img = Image.open(path).convert("RGB")
    scale = short_side / min(img.size)
    if scale < 1:
        img = img.resize((round(img.width * scale), round(img.height * scale)), Image.LANCZOS)
    return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float() / 127.5 - 1


def random_crops(images: list[torch.Tensor], n: int, gen: torch.Generator, crop: int = 64) -> torch.Tensor:
    """Crops at log-uniform random scales: a crop-px window shows anything from fine texture to a
    whole scene, with each octave of scale equally likely (as the service sees images of any size)."""
    out = []
    for _ in range(n):
        img = images[int(torch.randint(len(images), (1,), generator=gen))]
        short = min(img.shape[1:])
        u = float(torch.rand(1, generator=gen))
        target = min(short, round(crop * (short / crop) ** u))
        if target != short:
            img = F.interpolate(img[None], scale_factor=target / short, mode="bilinear",
                                antialias=True, align_corners=False)[0]
        top = int(torch.randint(img.shape[1] - crop + 1, (1,), generator=gen))
        left = int(torch.randint(img.shape[2] - crop + 1, (1,), generator=gen))
        piece = img[:, top:top + crop, left:left + crop]
        if torch.rand(1, generator=gen) < 0.5:
            piece = piece.flip(-1)
        out.append(piece)
    return torch.stack(out).clamp(-1, 1)
