"""`impress mimicry`: the style-mimicry scenario in this process (docs/diffusion.md). A heavy command:
LoRA fine-tuning on each folder given, minutes per folder on a GPU at 512 px. Its flags are made from
the contract's MimicryParams, so the CLI offers exactly what POST /v1/mimicry accepts."""
from __future__ import annotations

import argparse
from pathlib import Path

from impress.contract import DEVICES
from impress.images import IMAGE_SUFFIXES, encode_png
from impress.settings import Settings, get_settings
from impress.scenarios import MimicryParams

from .common import BarReporter, CommandFailed, decode_files
from .purify import add_override_flags, overrides_from


def add_parser(sub) -> None:
    mim = sub.add_parser("mimicry", help="LoRA style mimicry on clean / protected / purified folders (heavy)")
    mim.add_argument("--clean", required=True, help="folder of the artist's clean images")
    mim.add_argument("--protected", help="folder of the same works, protected")
    mim.add_argument("--purified", help="folder of the protected works, purified")
    mim.add_argument("-o", "--output", required=True, help="folder for results.json and the generated samples")
    mim.add_argument("--pipeline", help="SD img2img pipeline: hub id in the local cache or folder "
                                        "(default IMPRESS_PIPELINE)")
    mim.add_argument("--device", choices=DEVICES)
    add_override_flags(mim, MimicryParams)
    mim.set_defaults(func=run)


def folder_images(folder: str, settings: Settings):
    paths = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise CommandFailed(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    return decode_files(paths, settings)


def run(args: argparse.Namespace) -> int:
    """Fine-tune on each folder, score against the clean images, write results.json and samples."""
    from worker.engine.tensors import square_images
    from worker.engine.diffusion.mimicry import mimicry
    from worker.engine.diffusion.scenario import PipelineSet
    from worker.engine.models import ModelUnavailable, resolve_device
    from worker.engine.tensors import to_uint8

    settings = get_settings()
    params = overrides_from(args, MimicryParams)
    device = resolve_device(args.device or settings.device)
    if args.pipeline:
        settings = settings.model_copy(update={"pipeline": args.pipeline})
    pipelines = PipelineSet.from_settings(settings, device)
    try:
        pipe = pipelines.get("img2img")
    except ModelUnavailable as exc:
        raise CommandFailed(str(exc), 3) from exc
    sets = {name: square_images(folder_images(folder, settings), params.size).to(device)
            for name, folder in (("clean", args.clean), ("protected", args.protected), ("purified", args.purified))
            if folder}
    try:
        with BarReporter("training", unit="step") as reporter:
            run = mimicry(pipe, sets["clean"], sets, params, reporter=reporter)
    except ValueError as exc:
        raise CommandFailed(str(exc)) from exc
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    for name, samples in run.samples.items():
        for i, sample in enumerate(samples):
            (out / f"{name}-{i}.png").write_bytes(encode_png(to_uint8(sample)))
    (out / "results.json").write_text(run.metrics(pipelines.used()["img2img"], params).model_dump_json(indent=2))
    for name, result in run.sets.items():
        print(f"{name}: clean-image loss {result.clean_loss_base:.5f} -> {result.clean_loss_tuned:.5f}, "
              f"relative gain {result.relative_gain}")
    print(f"{out}/results.json")
    return 0
