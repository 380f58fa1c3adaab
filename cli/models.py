"""`impress models pull` and `impress models check`: the models a preset needs, fetched ahead of
time on a connected host and verified offline where the service runs (worker/engine/model_cache.py)."""
from __future__ import annotations

import argparse

from impress.contract import MODEL_CHOICES, PRESETS
from impress.settings import get_settings

from .common import CommandFailed


def add_parser(sub) -> None:
    models = sub.add_parser("models", help="fetch the models presets need (pull) or verify them offline (check)")
    actions = models.add_subparsers(dest="action", required=True)
    for name, func, text in (("pull", run_pull, "download the VAEs and LPIPS' VGG weights into the model caches"),
                             ("check", run_check, "verify offline that the models are present; list what is missing")):
        action = actions.add_parser(name, help=text, description=f"{text} (HF_HOME, TORCH_HOME; "
                                    "IMPRESS_VAE, IMPRESS_PERCEPTUAL and the IMPRESS_*PIPELINE settings say which)")
        action.add_argument("--preset", action="append", choices=sorted(PRESETS),
                            help="only this preset's models (repeatable; default: every preset)")
        action.add_argument("--model", help=f"autoencoder: {MODEL_CHOICES} (default: IMPRESS_VAE, else each "
                                            "preset's own)")
        action.set_defaults(func=func)


def _wanted(args: argparse.Namespace) -> tuple[list[str], str | None, str, dict]:
    from impress.pipelines import configured_pipelines

    settings = get_settings()
    return args.preset or list(PRESETS), args.model or settings.vae, settings.perceptual, configured_pipelines(settings)


def run_pull(args: argparse.Namespace) -> int:
    from worker.engine.model_cache import needs, pull
    from worker.engine.models import ModelUnavailable

    try:
        pull(needs(*_wanted(args)))
    except ModelUnavailable as exc:
        raise CommandFailed(str(exc), 3) from exc
    return 0


def run_check(args: argparse.Namespace) -> int:
    from worker.engine.model_cache import check

    report = check(*_wanted(args))
    for line in report.present:
        print(f"present  {line}")
    for line in report.missing:
        print(f"MISSING  {line}")
    if not report.complete:
        raise CommandFailed(f"{len(report.missing)} model(s) missing: run `impress models pull` on a connected "
                            "host with the same HF_HOME/TORCH_HOME (or copy those caches here)", 1)
    return 0
