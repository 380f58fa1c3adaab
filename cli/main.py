"""`impress`: purify, protect, detect and benchmark in this process, or run the API, a worker, or
both on one machine."""
from __future__ import annotations

import argparse
import sys

from impress.logs import configure_logging
from impress.settings import get_settings

from . import bench, detect, mimicry, models, pictures, protect, purify, service, train_amortised, verify
from .common import CommandFailed


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="impress", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    purify.add_parser(sub)
    protect.add_parser(sub)
    detect.add_parsers(sub)
    bench.add_parser(sub)
    mimicry.add_parser(sub)
    service.add_parsers(sub)
    models.add_parser(sub)
    pictures.add_parser(sub)
    train_amortised.add_parser(sub)
    verify.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(get_settings().log_format)
    try:
        return args.func(args)
    except CommandFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.code


if __name__ == "__main__":
    sys.exit(main())
