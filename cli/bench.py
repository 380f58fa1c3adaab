"""`impress bench`: the protections x purifiers matrix over a folder, with a resumable cache and reports."""
from __future__ import annotations

import argparse
from pathlib import Path

from pydantic import ValidationError

from impress.contract import DEFAULT_PRESET, DEVICES, MODEL_CHOICES, PERCEPTUALS, EvaluateParams, vae_for
from impress.images import IMAGE_SUFFIXES
from impress.pipelines import check_size, configured_pipelines
from impress.settings import get_settings

from .common import BarReporter, CommandFailed, decode_files, load_vae_or_fail


def add_parser(sub) -> None:
    ben = sub.add_parser("bench", help="protections x purifiers over a folder: JSON, Markdown, HTML report")
    ben.add_argument("--images", required=True, help="folder of images (centre-cropped and resized to --size)")
    ben.add_argument("--protections", default="photoguard-8,photoguard-16,glaze-like,mist-16",
                     help="comma-separated NAME[:KEY=VALUE...] (impress/methods.py PROTECTIONS)")
    ben.add_argument("--purifiers", default="jpeg-15,jpeg-75,noise-0.05,noise-0.1,blur,resize,impress,noise-impress",
                     help="comma-separated NAME[:KEY=VALUE...] (impress/methods.py PURIFIERS)")
    ben.add_argument("-o", "--output", required=True, help="folder for results and the resumable cell cache")
    ben.add_argument("--model", help=f"autoencoder of every measurement and of IMPRESS: {MODEL_CHOICES} (default: "
                                     "the configured one, else the photoguard preset's, and IMPRESS on its own preset's)")
    ben.add_argument("--perceptual", choices=PERCEPTUALS)
    ben.add_argument("--size", type=int, default=256, help="square side the images are brought to")
    ben.add_argument("--limit", type=int, help="first N images of the folder")
    ben.add_argument("--impress-iters", type=int, help="iterations of the IMPRESS purifiers")
    ben.add_argument("--attack-steps", type=int, help="optimisation steps of every protection")
    ben.add_argument("--device", choices=DEVICES)
    ben.add_argument("--batch-size", type=int, default=8)
    ben.add_argument("--edit", help="also run the editing scenario: inpaint, img2img, or a JSON object of EditParams "
                                    "(needs IMPRESS_INPAINT_PIPELINE / IMPRESS_PIPELINE; docs/diffusion.md)")
    ben.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """The protections x purifiers matrix over a folder of images (worker/engine/matrix.py), resumable."""
    from worker.engine.diffusion.scenario import EditingRun, PipelineSet
    from worker.engine.matrix import run_matrix
    from worker.engine.tensors import square_images
    from worker.engine.matrix_cache import ResumeFolder
    from worker.engine.models import ModelUnavailable
    from worker.engine.perceptual import load_perceptual

    settings = get_settings()
    paths = sorted(p for p in Path(args.images).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[:args.limit]
    if not paths:
        raise CommandFailed(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {args.images}")
    try:
        chosen = EvaluateParams(protections=args.protections.split(","), purifiers=args.purifiers.split(","),
                                size=args.size, attack_steps=args.attack_steps, impress_iters=args.impress_iters,
                                edit=args.edit)
    except ValidationError as exc:
        raise CommandFailed("; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors())) from exc
    try:
        check_size(chosen.size, chosen.size, chosen.pipeline_users(), configured_pipelines(settings))
    except ValueError as exc:
        raise CommandFailed(str(exc)) from exc
    images = decode_files(paths, settings)
    vae, identity = load_vae_or_fail(args.model or vae_for(DEFAULT_PRESET, settings.vae), args.device, settings)
    device = identity.device
    try:
        distance = load_perceptual(args.perceptual or settings.perceptual_for(identity.name), device)
    except ModelUnavailable as exc:
        raise CommandFailed(str(exc), 3) from exc
    names = [p.name for p in paths]
    clean = square_images(images, args.size).to(device)
    pipelines = PipelineSet.from_settings(settings, device)
    revisions, edit = pipelines.revisions(), chosen.edit.model_dump() if chosen.edit else None
    diffusion = {"pipelines": revisions, "edit": edit} if revisions or edit else None  # in the cache key
    folder = ResumeFolder(Path(args.output), images=names, size=args.size, model=identity,
                          perceptual=distance.name, diffusion=diffusion)
    try:
        editing = EditingRun(pipelines, chosen.edit, distance, clean, batch=args.batch_size) if chosen.edit else None
        with BarReporter("matrix") as reporter:
            result = run_matrix(vae, identity, distance, clean, names, chosen.protection_choices(),
                                chosen.purifier_choices(), batch=args.batch_size, cache=folder, reporter=reporter,
                                pipelines=pipelines, editing=editing,
                                impress_vae=lambda preset: load_vae_or_fail(args.model or vae_for(preset, settings.vae),
                                                                            args.device, settings)[0])
    except ModelUnavailable as exc:
        raise CommandFailed(str(exc), 3) from exc
    folder.write_reports(result)
    print(f"{folder.computed} cells computed, {folder.skipped} resumed; "
          f"{args.output}/results.json, results.md, report.html")
    return 0
