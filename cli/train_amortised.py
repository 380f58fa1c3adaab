"""`impress train-amortised`: train the amortised purifier against an autoencoder the engine loads."""
from __future__ import annotations

import argparse
import dataclasses
import subprocess
import tempfile
from pathlib import Path

from impress.contract import PERCEPTUALS
from impress.settings import Settings

from .common import BarReporter, CommandFailed, load_vae_or_fail


def add_parser(sub) -> None:
    from worker.engine.amortised.training import Recipe

    default = Recipe()
    tr = sub.add_parser("train-amortised", help="train the amortised purifier (one network pass instead of "
                                                "IMPRESS's iterations); seeded, resumable from --out")
    tr.add_argument("--model", default=default.model, help="autoencoder to train against (any the engine loads)")
    tr.add_argument("--out", required=True, type=Path, help="folder for the weights, training.json and the "
                                                            "checkpoint (rerun the same command to resume)")
    tr.add_argument("--debs", type=Path, help="folder with the training pictures' .deb files "
                                              "(default OUT/debs, filled by apt-get download when empty)")
    tr.add_argument("--minutes", type=float, default=default.minutes, help="time budget of the training")
    tr.add_argument("--max-steps", type=int, help="stop after this many steps, if the budget lasts")
    tr.add_argument("--perceptual", choices=PERCEPTUALS, default=default.perceptual)
    tr.add_argument("--seed", type=int, default=default.seed)
    tr.add_argument("--threads", type=int, default=2, help="CPU threads")
    tr.add_argument("--device", help="torch device (default: the service's)")
    tr.set_defaults(func=run)


def fetch_debs(folder: Path, packages: list[str]) -> None:
    """apt-get download the packages whose .deb is not in `folder` yet."""
    missing = [p for p in packages if not list(folder.glob(f"{p}_*.deb"))]
    if missing:
        folder.mkdir(parents=True, exist_ok=True)
        try:
            subprocess.run(["apt-get", "download", *missing], cwd=folder, check=True)
        except (OSError, subprocess.CalledProcessError) as exc:
            raise CommandFailed(f"could not download {' '.join(missing)} ({exc}); put their .deb files in {folder}")


def run(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from worker.engine.amortised.data import TrainingImages
    from worker.engine.amortised.training import Recipe, train
    from worker.engine.models import ModelUnavailable
    from worker.engine.perceptual import load_perceptual
    from worker.engine.training_images import (ILLUSTRATION_DEBS, PHOTO_DEBS, illustration_files, load_rgb,
                                               photo_files)

    torch.set_num_threads(args.threads)
    recipe = dataclasses.replace(Recipe(), model=args.model, minutes=args.minutes, max_steps=args.max_steps,
                                 perceptual=args.perceptual, seed=args.seed)
    debs = args.debs or args.out / "debs"
    fetch_debs(debs, PHOTO_DEBS + ILLUSTRATION_DEBS)
    with tempfile.TemporaryDirectory() as tmp:
        photos, illustrations = photo_files(debs, Path(tmp)), illustration_files(debs, Path(tmp))
        decode = lambda files: [load_rgb(f, 512) for f in tqdm(files, desc="decode", unit="image")]  # noqa: E731
        images = TrainingImages(decode(photos), decode(illustrations), recipe.illustration_share)
    vae, identity = load_vae_or_fail(args.model, args.device, Settings())
    try:
        distance = load_perceptual(args.perceptual, identity.device)
    except ModelUnavailable as exc:
        raise CommandFailed(str(exc), 3) from exc
    args.out.mkdir(parents=True, exist_ok=True)
    with BarReporter("train-amortised", unit="s") as reporter:
        state = train(recipe, images, vae, distance, args.out, reporter)
    print(f"{state.step} steps in {state.seconds / 60:.1f} min; weights in {args.out} "
          f"(model {identity.name} {identity.revision}); held out: {state.held_out[-1]}")
    return 0
