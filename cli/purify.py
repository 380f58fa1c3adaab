"""`impress purify`: IMPRESS in this process, with a progress bar. Its parameter flags are made from
the contract's PurifyOverrides, so the CLI offers exactly what the API accepts."""
from __future__ import annotations

import argparse
import json
import types
import typing
from pathlib import Path

from pydantic import BaseModel, ValidationError

from impress.contract import DEVICES, MODEL_CHOICES, PERCEPTUALS, PRECISIONS, PurifyOverrides, vae_for
from impress.images import encode_png
from impress.settings import get_settings

from .common import BarReporter, CommandFailed, decode_files


def _flag_type(annotation) -> tuple[type, tuple | None]:
    """(argparse type, choices) of a field's annotation, Optional[...] unwrapped."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        annotation = args[0]
    if typing.get_origin(annotation) is typing.Literal:
        return str, typing.get_args(annotation)
    return annotation, None


def add_override_flags(parser: argparse.ArgumentParser, model: type[BaseModel] = PurifyOverrides) -> None:
    """One flag per field of the parameter model (--iters, --early-stop/--no-early-stop, ...)."""
    for name, field in model.model_fields.items():
        kind, choices = _flag_type(field.annotation)
        flag = "--" + name.replace("_", "-")
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=field.description)
        else:
            parser.add_argument(flag, type=kind, choices=choices, default=None, help=field.description)


def overrides_from(args: argparse.Namespace, model: type[BaseModel] = PurifyOverrides):
    given = {name: getattr(args, name) for name in model.model_fields if getattr(args, name) is not None}
    try:
        return model(**given)
    except ValidationError as exc:
        raise CommandFailed("; ".join(f"--{'.'.join(map(str, e['loc'])).replace('_', '-')}: {e['msg']}"
                                      for e in exc.errors())) from exc


def add_parser(sub) -> None:
    pur = sub.add_parser("purify", help="purify images with IMPRESS, in this process")
    pur.add_argument("images", nargs="+", help="image files")
    pur.add_argument("-o", "--output", required=True, help="folder for one PNG per input (same stem)")
    add_override_flags(pur)
    pur.add_argument("--model", help=f"autoencoder: {MODEL_CHOICES} (default: the configured one, else the preset's)")
    pur.add_argument("--perceptual", choices=PERCEPTUALS, help="perceptual distance of the hinge")
    pur.add_argument("--device", choices=DEVICES)
    pur.add_argument("--batch-size", type=int)
    pur.add_argument("--compile", action="store_true", help="torch.compile the step (eager if it fails)")
    pur.add_argument("--precision", choices=PRECISIONS,
                     help="forward-pass autocast (default IMPRESS_PRECISION, auto: bf16 on CUDA, fp32 on CPU)")
    pur.add_argument("--report-every", type=int, default=10, help=argparse.SUPPRESS)
    pur.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from worker.engine.model_cache import require
    from worker.engine.models import ModelUnavailable
    from worker.engine.pipeline import EngineOptions, run_purification

    settings = get_settings()
    perceptual = args.perceptual or settings.perceptual
    params = overrides_from(args).resolve(perceptual, settings.schedule)
    images = decode_files(args.images, settings)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    options = EngineOptions.from_settings(settings, device=args.device, batch_size=args.batch_size,
                                          compile=args.compile or None, precision=args.precision)
    try:  # a missing model fails here, before any progress bar (and without minutes of hub retries)
        require(vae_for(params.preset, args.model or settings.vae), perceptual)
    except ModelUnavailable as exc:
        raise CommandFailed(str(exc), 3) from exc
    with BarReporter("purify") as reporter:
        try:
            run = run_purification(images, params, vae=args.model or settings.vae, perceptual=perceptual,
                                   options=options, reporter=reporter, report_every=args.report_every)
        except ModelUnavailable as exc:
            raise CommandFailed(str(exc), 3) from exc
    summary = {"model": run.model.model_dump(), "perceptual": run.perceptual.model_dump(), "params": params.model_dump(),
               "device": run.device, "engine": run.engine.model_dump(), "seconds": round(run.seconds, 2), "images": []}
    for path, decoded, im in zip(args.images, images, run.images):
        target = out / (Path(path).stem + ".png")
        target.write_bytes(encode_png(im.rgb, decoded.alpha))
        summary["images"].append({"input": str(path), "output": str(target), "iterations": im.iterations,
                                  "stop_reason": im.stop_reason.value, "final": im.trace[-1] if im.trace else {}})
        print(f"{path} -> {target} ({im.iterations} steps, {im.stop_reason.value})")
    (out / "purify.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"model {run.model.name} ({run.model.revision}), perceptual {run.perceptual.name}, "
          f"{run.seconds:.1f}s on {run.device}; details in {out / 'purify.json'}")
    return 0
