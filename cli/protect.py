"""`impress protect`: apply a protection to image files in this process, and measure what it spent."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from impress.contract import DEFAULT_PRESET, DEVICES, MODEL_CHOICES, PERCEPTUALS, PROTECTION_NAMES, vae_for
from impress.images import ImageRejected, encode_png
from impress.methods import parse_choice
from impress.settings import get_settings

from .common import BarReporter, CommandFailed, decode_files


def add_parser(sub) -> None:
    pro = sub.add_parser("protect", help="protect images (PhotoGuard, glaze-like, Mist), in this process")
    pro.add_argument("images", nargs="+", help="image files")
    pro.add_argument("-o", "--output", required=True, help="folder for one PNG per input (same stem) and protect.json")
    pro.add_argument("--protection", required=True,
                     help=f"NAME or NAME:KEY=VALUE[:KEY=VALUE...], NAME one of {', '.join(PROTECTION_NAMES)}")
    pro.add_argument("--target", help="target image (fitted to each input's size): for glaze-like the "
                                      "style-transferred copy, for photoguard and mist the image to pull toward")
    pro.add_argument("--model", help=f"autoencoder: {MODEL_CHOICES} (default: the configured one, else the "
                                     "photoguard preset's)")
    pro.add_argument("--perceptual", choices=PERCEPTUALS, help="perceptual distance (glaze-like's budget, and measured)")
    pro.add_argument("--device", choices=DEVICES)
    pro.add_argument("--batch-size", type=int, default=4)
    pro.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from worker.engine.diffusion.scenario import PipelineSet
    from worker.engine.models import ModelUnavailable, resolve_device
    from worker.engine.protect_images import run_protection

    settings = get_settings()
    try:
        protection = parse_choice(args.protection, "protection")
    except ValueError as exc:
        raise CommandFailed(str(exc)) from exc
    images = decode_files(args.images, settings)
    target = decode_files([args.target], settings)[0] if args.target else None
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(args.device or settings.device)
    model = args.model or vae_for(DEFAULT_PRESET, settings.vae)
    try:
        with BarReporter("protect") as reporter:
            run = run_protection(images, protection, vae=model, perceptual=args.perceptual or settings.perceptual_for(model),
                                 device=device, target=target, batch_size=args.batch_size,
                                 pipelines=PipelineSet.from_settings(settings, device), reporter=reporter)
    except ModelUnavailable as exc:
        raise CommandFailed(str(exc), 3) from exc
    except ImageRejected as exc:
        raise CommandFailed(exc.message) from exc
    summary = {**run.metrics(args.target).model_dump(mode="json"), "model": run.model.model_dump(),
               "perceptual": run.perceptual.model_dump(),
               "device": run.device,
               "seconds": run.seconds, "images": []}
    distance = run.perceptual.name
    for path, im in zip(args.images, run.images):
        saved = out / (Path(path).stem + ".png")
        saved.write_bytes(encode_png(im.rgb, im.alpha))
        summary["images"].append({"input": str(path), "output": str(saved), "budget": im.budget.model_dump()})
        b = im.budget
        print(f"{path} -> {saved} (L∞ {b.linf_255:.1f}/255, L2 {b.l2_255:.0f}/255, PSNR {b.psnr_db:.2f} dB, "
              f"SSIM {b.ssim:.4f}, {distance} {b.perceptual:.4f})")
    (out / "protect.json").write_text(json.dumps(summary, indent=2) + "\n")
    stated = ", ".join(f"{distance if k == 'perceptual' else k} {v:.4g}" for k, v in run.stated if v is not None)
    print(f"{protection.name} states {stated}; model {run.model.name} ({run.model.revision}), {run.seconds:.1f}s "
          f"on {run.device}; details in {out / 'protect.json'}")
    return 0
