"""The evaluation pictures: photographs and illustrations from sources disjoint from any training.

Every picture is named here with its source and licence (the data card). Two sources:

- photographs that Python wheels ship (scikit-image, scikit-learn, matplotlib sample data), always
  present where the engine is installed;
- photographs and illustrations from three Debian packages, fetched once with `apt-get download`
  into a cache folder (`impress pictures fetch`, `IMPRESS_PICTURE_CACHE`) and read offline after:
  sway-backgrounds, openclipart-png and tuxpaint-stamps-default.

No model of this project trains on them: the tiny VAE and the amortised purifier train on other
Debian packages (mate-backgrounds, lomiri-wallpapers-*, plasma-workspace-wallpapers,
gnome-backgrounds, debian-edu-artwork-*), and taef2 was trained by its author on neither.

`EVALUATION` (24 pictures, 12 photographs and 12 illustrations) is what protections are measured
on; `CALIBRATION` (clean only, disjoint from `EVALUATION`) is what detection thresholds are set on,
so the evaluation's false positive rate is out of sample. Cut-outs and clip art keep their
transparency in the packages: they are laid on white, as a page shows them.
"""
from __future__ import annotations

import importlib
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image

from impress.images import DecodedImage

from .tensors import square_images

Kind = Literal["photo", "illustration"]

# Licence of each source, as its copyright file states it.
LICENCES = {
    "skimage": "public domain or CC0, per file in scikit-image's data/README.txt (astronaut NASA, coffee and "
               "chelsea CC0, rocket and hubble_deep_field public domain; motorcycle: Middlebury stereo data set)",
    "sklearn": "CC BY 2.0 (china.jpg, flower.jpg: sklearn/datasets/images/README.txt)",
    "matplotlib": "grace_hopper.jpg: public domain (US Navy)",
    "sway-backgrounds": "Expat (MIT), debian/copyright of sway",
    "openclipart-png": "public domain (Creative Commons Public Domain Dedication, every file)",
    "tuxpaint-stamps-default": "GPL-2 (debian/copyright)",
}
DEBIAN_PACKAGES = ("sway-backgrounds", "openclipart-png", "tuxpaint-stamps-default")
WHEELS = ("skimage", "sklearn", "matplotlib")
ROOTS = {"sway-backgrounds": "usr/share/backgrounds/sway", "openclipart-png": "usr/share/openclipart/png",
         "tuxpaint-stamps-default": "usr/share/tuxpaint/stamps", "skimage": "data", "sklearn": "datasets/images",
         "matplotlib": "mpl-data/sample_data"}


@dataclass(frozen=True)
class Picture:
    source: str   # a wheel (import name) or a Debian package
    path: str     # under the source's root (ROOTS)
    kind: Kind

    @property
    def name(self) -> str:
        return Path(self.path).stem

    @property
    def licence(self) -> str:
        return LICENCES[self.source]

    @property
    def from_debian(self) -> bool:
        return self.source in DEBIAN_PACKAGES


def _pictures(source: str, kind: Kind, paths: str) -> tuple[Picture, ...]:
    return tuple(Picture(source, p, kind) for p in paths.split())


EVALUATION: tuple[Picture, ...] = (
    *_pictures("skimage", "photo", "astronaut.png coffee.png chelsea.png motorcycle_left.png rocket.jpg "
                                   "hubble_deep_field.jpg"),
    *_pictures("sklearn", "photo", "china.jpg flower.jpg"),
    *_pictures("matplotlib", "photo", "grace_hopper.jpg"),
    *_pictures("tuxpaint-stamps-default", "photo", "animals/mammals/bears/european-bear.png "
               "animals/birds/helmeted_guineafowl.png plants/trees/rambutan.png"),
    *_pictures("sway-backgrounds", "illustration", "Sway_Wallpaper_Blue_1366x768.png"),
    *_pictures("openclipart-png", "illustration", "people/my_lovely_baby_enrique_m_02.png "
               "decorations/lightly_decorated_evergreen_01.png food/desserts/gateau_jean_victor_balin_.png "
               "recreation/sports/8ball_form_jarno_vasama.png recreation/holiday/pumpkin2_yemu_01.png "
               "transportation/car_jamin_ellis_.png transportation/motorcycle_jarno_vasama_.png"),
    *_pictures("tuxpaint-stamps-default", "illustration", "people/cartoon/snowman.png "
               "animals/insects/cartoon/snail2.png town/houses/cartoon/circus.png town/houses/cartoon/blacksmith.png"),
)

CALIBRATION: tuple[Picture, ...] = (
    *_pictures("skimage", "photo", "retina.jpg ihc.png"),
    *_pictures("tuxpaint-stamps-default", "photo", "food/spices/ginger.png vehicles/emergency/firetruck.png "
               "animals/insects/mantis.png animals/birds/albino_peahen.png plants/flowers/daffodil.png "
               "plants/trees/tree336.png food/fruit/Strawberry2.png vehicles/wheel_tractor.png "
               "military/vehicles/infantry-stryker.png animals/mammals/bovines/gnu-baby-stand.png "
               "animals/mammals/bovines/gnu-baby.png household/tools/cementmixer.png animals/fish/lobster.png "
               "vehicles/construction/dumper.png animals/insects/Woodlouse.png food/fruit/Cherry_Stella.png "
               "military/vehicles/f22_raptor.png food/fruit/Apricot_whole.png plants/flowers/anemone_red.png "
               "food/fruit/avocado.png military/vehicles/bradley.png"),
    *_pictures("matplotlib", "illustration", "logo2.png Minduka_Present_Blue_Pack.png"),
    *_pictures("tuxpaint-stamps-default", "illustration", "town/houses/cartoon/fairytale_castle.png "
               "town/houses/cartoon/windmill.png town/houses/cartoon/igloo.png town/houses/cartoon/farm.png "
               "town/houses/cartoon/tavern.png animals/birds/cartoon/penguin_with_spider.png "
               "town/houses/cartoon/monastery.png animals/mammals/bears/cartoon/teddy_bear.png "
               "town/houses/cartoon/tower_square.png animals/insects/cartoon/spider_fly.png "
               "town/houses/cartoon/stables.png town/monuments/cartoon/graveyard.png town/cartoon/watch_tower.png "
               "town/cartoon/shipwreck.png"),
    *_pictures("openclipart-png", "illustration", "signs_and_symbols/sheriff_star_celso_junio_02.png "
               "logos/francobollo_gnome_ezechi_02.png people/bodypart/thumbs_up_nathan_eady_01.png "
               "unsorted/texturelegno.png plants/fall_coloured_leaf_geral_02.png people/self_portrait_hardi1.png "
               "office/video_lcd_sergio_luiz_ar_01.png transportation/vehicles/aircraft_jarno_vasamaa1.png "
               "signs_and_symbols/flags/america/united_states/usa_virgin_islands.png food/fruit/pear.png "
               "geography/europe_francesco_rollan_.png recreation/games/chess/tamerlane_chess_jonadab_.png "
               "plants/bamboo_01.png shapes/cfbulb_brightlit_benji_p_.png buildings/homes/home9.png "
               "recreation/music/guitar_jarno_vasamaa2.png signs_and_symbols/flags/europe/germany/germany_eastfrisia.png "
               "electronics/satellite_dish_ali_hussn_01.png transportation/roadsigns/buses_and_bikes.png "
               "plants/flowers/funnyflower_02.png signs_and_symbols/flags/europe/united_kingdom/uk_wales.png "
               "transportation/hummer_03.png food/fruit/strawberry_01.png buildings/homes/lowtec_house_christoph_b_01.png "
               "recreation/sports/tennis_racket_01.png animals/mascot_enrique_meza_c_01.png "
               "signs_and_symbols/weather/tsunami_warning_sign_bob_01.png plants/shamrock_for_march_natha_01.png "
               "buildings/us_capitol_building_cli_01.png"),
)


class PicturesUnavailable(RuntimeError):
    """A Debian package's pictures are not in the cache (and could not be fetched)."""


def package_folder(cache: Path, package: str) -> Path:
    return Path(cache).expanduser() / package


def fetch_packages(cache: Path, packages: tuple[str, ...] = DEBIAN_PACKAGES) -> list[Path]:
    """Each package downloaded with `apt-get download` into `cache`/debs and unpacked (dpkg-deb -x) into
    `cache`/PACKAGE, unless already unpacked: offline after the first run. Returns the folders."""
    debs = Path(cache).expanduser() / "debs"
    folders = []
    for package in packages:
        folder = package_folder(cache, package)
        if not (folder / ROOTS[package]).is_dir():
            debs.mkdir(parents=True, exist_ok=True)
            if not list(debs.glob(f"{package}_*.deb")):
                if shutil.which("apt-get") is None:
                    raise PicturesUnavailable(f"{package} is not cached in {debs} and apt-get is not available")
                done = subprocess.run(["apt-get", "download", package], cwd=debs, capture_output=True, text=True)
                if done.returncode != 0:
                    raise PicturesUnavailable(f"apt-get download {package} failed: {done.stderr.strip()[-500:]}")
            (deb,) = sorted(debs.glob(f"{package}_*.deb"))[-1:]
            subprocess.run(["dpkg-deb", "-x", str(deb), str(folder)], check=True)
        folders.append(folder)
    return folders


def picture_path(picture: Picture, cache: Path) -> Path:
    if picture.from_debian:
        path = package_folder(cache, picture.source) / ROOTS[picture.source] / picture.path
        if not path.is_file():
            raise PicturesUnavailable(f"{picture.path} of {picture.source} is not in {cache}: fetch the pictures "
                                      f"once with `impress pictures fetch --cache {cache}` (apt-get download)")
        return path
    return Path(importlib.import_module(picture.source).__file__).parent / ROOTS[picture.source] / picture.path


def load_picture(picture: Picture, cache: Path) -> np.ndarray:
    """The picture as uint8 H x W x 3, transparency laid on white."""
    with Image.open(picture_path(picture, cache)) as img:
        rgba = img.convert("RGBA")
    return np.asarray(Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba).convert("RGB"))


def picture_batch(pictures: tuple[Picture, ...], size: int, cache: Path) -> torch.Tensor:
    """The pictures centre-cropped to squares and resized to size x size (Lanczos): B x 3 x size x size in [-1, 1]."""
    return square_images([DecodedImage(load_picture(p, cache), None, "png") for p in pictures], size)


def available(pictures: tuple[Picture, ...], cache: Path) -> tuple[Picture, ...]:
    """Those of `pictures` readable now: the wheels' always, the Debian packages' once fetched."""
    def readable(p: Picture) -> bool:
        try:
            return picture_path(p, cache).is_file()
        except PicturesUnavailable:
            return False
    return tuple(p for p in pictures if readable(p))
