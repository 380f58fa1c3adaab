"""`impress train-amortised`: train the amortised purifier against an autoencoder the engine loads."""
from __future__ import annotations

import argparse
import dataclasses
import tempfile
from pathlib import Path

from impress.contract import PERCEPTUALS
from impress.settings import get_settings

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
    tr.add_argument("--protections", default=",".join(default.protections),
                    help="comma-separated protections the training pictures get, in turn (repeat one to weight it)")
    tr.add_argument("--impress-from-step", type=int, default=default.impress_from_step,
                    help="step from which the IMPRESS and decoded pair terms join the pixel pair term "
                         "(default: never; the model card shows why)")
    tr.add_argument("--threads", type=int, default=2, help="CPU threads")
    tr.add_argument("--device", help="torch device (default: the service's)")
    tr.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from worker.engine.amortised.data import TrainingImages
    from worker.engine.amortised.network import load_network
    from worker.engine.amortised.training import Recipe, calibrate_cascade, plot_curves, train
    from worker.engine.models import ModelUnavailable
    from worker.engine.perceptual import load_perceptual
    from worker.engine.training_images import (ILLUSTRATION_DEBS, PHOTO_DEBS, fetch_debs, illustration_files,
                                               load_rgb, photo_files)

    from impress.methods import AUTOENCODER_PROTECTIONS

    protections = tuple(name for name in args.protections.split(",") if name)
    unknown = [name for name in protections if name not in AUTOENCODER_PROTECTIONS]
    if unknown or not protections:
        raise CommandFailed(f"--protections: not usable for training: {', '.join(unknown) or '(none given)'}; "
                            f"usable: {', '.join(AUTOENCODER_PROTECTIONS)}")
    torch.set_num_threads(args.threads)
    recipe = dataclasses.replace(Recipe(), model=args.model, minutes=args.minutes, max_steps=args.max_steps,
                                 perceptual=args.perceptual, seed=args.seed,
                                 impress_from_step=args.impress_from_step,
                                 protections=protections)
    debs = args.debs or args.out / "debs"
    try:
        fetch_debs(debs, PHOTO_DEBS + ILLUSTRATION_DEBS)
    except RuntimeError as exc:
        raise CommandFailed(str(exc)) from exc
    with tempfile.TemporaryDirectory() as tmp:
        photos, illustrations = photo_files(debs, Path(tmp)), illustration_files(debs, Path(tmp))
        decode = lambda files: [load_rgb(f, 512) for f in tqdm(files, desc="decode", unit="image")]  # noqa: E731
        images = TrainingImages(decode(photos), decode(illustrations), recipe.illustration_share)
    vae, identity = load_vae_or_fail(args.model, args.device, get_settings())
    try:
        distance = load_perceptual(args.perceptual, identity.device)
    except ModelUnavailable as exc:
        raise CommandFailed(str(exc), 3) from exc
    args.out.mkdir(parents=True, exist_ok=True)
    with BarReporter("train-amortised", unit="s") as reporter:
        state = train(recipe, images, vae, distance, args.out, reporter)
    net, _ = load_network(args.out)
    calibration = calibrate_cascade(net, vae, images, args.out, args.model)
    plot_curves(args.out)
    print(f"{state.step} steps in {state.seconds / 60:.1f} min; weights in {args.out} "
          f"(model {identity.name}); held out: {state.held_out[-1]}; cascade threshold {calibration['threshold']:.6f}")
    return 0
