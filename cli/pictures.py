"""`impress pictures fetch` and `impress pictures list`: the evaluation pictures (worker/engine/pictures.py)."""
from __future__ import annotations

import argparse
from pathlib import Path

from impress.settings import get_settings

from .common import CommandFailed


def add_parser(sub) -> None:
    pictures = sub.add_parser("pictures", help="the evaluation pictures: fetch their Debian packages once, or list them")
    actions = pictures.add_subparsers(dest="action", required=True)
    for name, func, text in (("fetch", run_fetch, "apt-get download and unpack the pictures' Debian packages into "
                                                  "the cache (nothing is fetched when they are there)"),
                             ("list", run_list, "every picture with its set, kind, source, licence and whether it "
                                                "is available")):
        action = actions.add_parser(name, help=text, description=text)
        action.add_argument("--cache", type=Path, help="the folder (default: IMPRESS_PICTURE_CACHE, "
                                                       "~/.cache/impress/pictures)")
        action.set_defaults(func=func)


def cache_of(args: argparse.Namespace) -> Path:
    return (args.cache or Path(get_settings().picture_cache)).expanduser()


def run_fetch(args: argparse.Namespace) -> int:
    from worker.engine.pictures import PicturesUnavailable, fetch_packages

    try:
        for folder in fetch_packages(cache_of(args)):
            print(f"ready    {folder}")
    except PicturesUnavailable as exc:
        raise CommandFailed(str(exc), 3) from exc
    return 0


def run_list(args: argparse.Namespace) -> int:
    from worker.engine.pictures import CALIBRATION, EVALUATION, available

    cache = cache_of(args)
    for label, pictures in (("evaluation", EVALUATION), ("calibration", CALIBRATION)):
        present = set(available(pictures, cache))
        for p in pictures:
            state = "present" if p in present else "MISSING"
            print(f"{state:8} {label:11} {p.kind:12} {p.source}: {p.path} ({p.licence.split(',')[0]})")
    return 0
