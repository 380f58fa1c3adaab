"""The amortised purifier against IMPRESS on held-out pictures and a held-out protection, one command:

    python -m bench.bench_amortised            # taef2, bundled amortised-taef2 weights, CPU
    python -m bench.bench_amortised --quick    # a smoke run: 2 pictures, a few steps

Held-out pictures: photographs that Python wheels ship (worker/engine/photos.py) and an illustration
source no training picture comes from (sway-backgrounds), centre-cropped to --size. Protections:
those the network trained on (photoguard-8, photoguard-16, glaze-like), one it never saw (mist-16),
and `photoguard-adaptive`, PGD aimed through the network itself. Per protection and purifier: the
consistency error, the latent distance to the clean image's latent, the decoded PSNR against the
clean image's reconstruction (and its gain over the protected image), PSNR/SSIM to the input.
Clean pictures: PSNR out vs in. Speed: ms per image at 128, 256, 512 px, amortised measured, IMPRESS
as ms per iteration measured times its iterations (fast: those its runs here took; published: its
count). The cascade on mixed clean/protected traffic: mean seconds per image and quality.
Everything computed is kept in --work, so a rerun of the same command resumes.
Results: bench/results/amortised.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Callable

import torch

from bench.results_io import RESULTS, run_meta, write_results
from impress.contract import PurifyOverrides
from impress.images import DecodedImage, decode_image
from impress.methods import AMORTISED_WEIGHTS, choose
from worker.engine.amortised.purification import calibrated_threshold, run_cascade
from worker.engine.amortised.serve import load_purifier, resolve_weights
from worker.engine.metrics import consistency_error, latent_distance, psnr, reconstruction, ssim
from worker.engine.models import load_vae
from worker.engine.perceptual import load_perceptual
from worker.engine.pipeline import EngineOptions
from worker.engine.photos import HELD_OUT, held_out_paths
from worker.engine.protect import apply_protection
from worker.engine.purify import purify
from worker.engine.tensors import quantize_8bit, square_images, to_tensor, to_uint8
from worker.engine.training_images import extract_debs, fetch_debs

# Few pictures, small: IMPRESS's baseline runs take tens of minutes on 2 shared CPU cores.
PHOTOS = ("astronaut.png", "coffee.png", "chelsea.png")
ILLUSTRATION_DEB = "sway-backgrounds"
ILLUSTRATIONS = ("usr/share/backgrounds/sway/Sway_Wallpaper_Blue_1920x1080.png",)
TRAINED, HELD_OUT_PROTECTIONS, ADAPTIVE = ("photoguard-8", "photoguard-16", "glaze-like"), ("mist-16",), "photoguard-adaptive"
SIZES = (128, 256, 512)


class Work:
    """Results kept in a folder by name: computed once, loaded on a rerun; with `compute` off, what is
    missing stays missing (None) and the report says so."""

    def __init__(self, folder: Path, compute: bool = True):
        self.folder, self.compute = folder, compute
        folder.mkdir(parents=True, exist_ok=True)

    def get(self, name: str, compute: Callable[[], object]):
        path = self.folder / f"{name}.pt"
        if path.exists():
            return torch.load(path, weights_only=False)
        if not self.compute:
            print(f"missing {name}: not in this report", flush=True)
            return None
        print(f"computing {name}", flush=True)
        value = compute()
        torch.save(value, path)
        return value


def pictures(work: Path, size: int, quick: bool) -> tuple[list[str], torch.Tensor]:
    fetch_debs(work / "debs", [ILLUSTRATION_DEB])
    extract_debs(work / "debs", work / "pictures", [ILLUSTRATION_DEB])
    photos = [path for (_, rel), path in zip(HELD_OUT, held_out_paths()) if rel.split("/")[-1] in PHOTOS]
    paths = photos[:1] + [str(work / "pictures" / ILLUSTRATIONS[0])] if quick else \
        photos + [str(work / "pictures" / rel) for rel in ILLUSTRATIONS]
    decoded = [decode_image(Path(p).read_bytes(), max_bytes=10**9, max_pixels=10**9) for p in paths]
    return [Path(p).name for p in paths], square_images(decoded, size)


def quality(vae, clean: torch.Tensor, protected: torch.Tensor, purified: torch.Tensor) -> dict:
    """Per-image figures of a purified set (8-bit, as saved) against its clean and protected images."""
    reference = reconstruction(vae, clean)
    before = psnr(reconstruction(vae, protected), reference)
    after = psnr(reconstruction(vae, purified), reference)
    return {"consistency": consistency_error(vae, purified).tolist(),
            "latent_distance": latent_distance(vae, purified, clean).tolist(),
            "decoded_psnr_db": after.tolist(), "gain_db": (after - before).tolist(),
            "psnr_to_input_db": psnr(purified, protected).tolist(), "ssim_to_input": ssim(purified, protected).tolist()}


def mean(values: list[float]) -> float:
    return round(statistics.fmean(values), 4)


def impress_fast(vae, distance, x: torch.Tensor, start: torch.Tensor | None = None, iters: int | None = None):
    """IMPRESS's fast schedule (offline distance) on a batch: (8-bit output, iterations, seconds)."""
    params = PurifyOverrides(schedule="fast", iters=iters).resolve(distance.name)
    out = purify(vae, distance, x, params, start=start, log_every=params.iters)
    return quantize_8bit(out.images), out.iterations, out.seconds


def ms_per_iteration(vae, distance, size: int) -> float:
    """One image's ms per IMPRESS iteration (2 timed): the same under either schedule, whose steps differ
    only in Adam's settings."""
    x = torch.rand(1, 3, size, size) * 2 - 1
    params = PurifyOverrides(iters=2, early_stop=False).resolve(distance.name)
    return purify(vae, distance, x, params, log_every=2).seconds / 2 * 1000


def amortised_ms(net, size: int, repeats: int = 3) -> float:
    x = torch.rand(1, 3, size, size) * 2 - 1
    with torch.no_grad():
        net(x)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            net(x)
            times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def cascade(model: str, weights: str, x: torch.Tensor, iters: int | None) -> dict:
    """The served cascade (amortised/purification.py) on a batch, as a job runs it: amortised pass,
    detection score, IMPRESS's fast schedule warm-started on the images still flagged."""
    images = [DecodedImage(rgb=to_uint8(im), alpha=None, format="PNG") for im in x]
    params = PurifyOverrides(schedule="fast", iters=iters, method="cascade").resolve("dssim")
    run = run_cascade(images, params, weights=weights, vae=model, perceptual="dssim", threshold=None,
                      options=EngineOptions(device="cpu"))
    return {"out": torch.cat([to_tensor(im.rgb) for im in run.images]),
            "flagged": [len(im.path) > 1 for im in run.images], "seconds": [im.seconds for im in run.images],
            "seconds_per_image": run.seconds / len(images)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="taef2")
    p.add_argument("--weights", default=AMORTISED_WEIGHTS)
    p.add_argument("--size", type=int, default=64, help="side of the quality pictures")
    p.add_argument("--attack-steps", type=int, default=50, help="steps of every protection")
    p.add_argument("--protections", default=",".join(TRAINED + HELD_OUT_PROTECTIONS), help="protected sets")
    p.add_argument("--impress-on", default="photoguard-16,mist-16", help="protected sets IMPRESS fast runs on")
    p.add_argument("--impress-iters", type=int, help="cap IMPRESS fast's iterations (default: the schedule's 200, "
                                                     "early stopping on), here and in the cascade")
    p.add_argument("--work", type=Path, default=Path("runs/bench-amortised"), help="resumable cache")
    p.add_argument("--only", choices=("baseline", "purifier", "speed", "report"),
                   help="compute only what needs no amortised weights (IMPRESS), or only what needs them (two "
                        "processes may fill the work folder at once), or report what the work folder holds")
    p.add_argument("--both-ways", nargs="*", default=[], metavar="WEIGHTS",
                   help="more networks trained on other protections (impress train-amortised --protections): with "
                        "the shipped one, every protection is reported trained on and held out")
    p.add_argument("--quick", action="store_true")
    args = p.parse_args()
    torch.manual_seed(0)
    steps, iters = (3, 3) if args.quick else (args.attack_steps, args.impress_iters)
    work = Work(args.work / ("quick" if args.quick else f"{args.model}-{args.size}-{steps}"), args.only != "report")
    vae, identity = load_vae(args.model)
    distance = load_perceptual("dssim")
    names, clean = work.get("pictures", lambda: pictures(args.work, args.size, args.quick))
    protect = lambda name, **extra: quantize_8bit(apply_protection(  # noqa: E731
        choose("protection", name, steps=steps, **extra), vae, clean, distance))
    # The cascades need photoguard-16 only: the purifier stage leaves the rest to the baseline's process.
    sizes = SIZES[:1] if args.quick else SIZES
    if args.only != "purifier":
        impress_speed = work.get("impress-ms-per-iteration", lambda: {size: ms_per_iteration(vae, distance, size)
                                                                      for size in sizes})
    if args.only == "speed":
        net, purifier = load_purifier(args.weights)
        Work(work.folder / purifier.revision.removeprefix("sha256:")[:16]).get(
            "amortised-ms", lambda: {size: amortised_ms(net, size) for size in sizes})
        return
    protected = {name: work.get(f"protected-{name}", lambda n=name: protect(n))
                 for name in (("photoguard-16",) if args.only == "purifier" else args.protections.split(",")) if name}
    protected = {name: x for name, x in protected.items() if x is not None}
    if args.only != "purifier":
        impress_runs = {name: work.get(f"impress-{name}-{iters or 'fast'}",
                                       lambda n=name: impress_fast(vae, distance, protected[n], iters=iters))
                        for name in args.impress_on.split(",") if name in protected}
        impress_runs = {name: run for name, run in impress_runs.items() if run is not None}
    if args.only == "baseline":
        return
    net, purifier = load_purifier(args.weights)
    work = Work(work.folder / purifier.revision.removeprefix("sha256:")[:16], work.compute)
    adaptive = work.get("protected-adaptive", lambda: quantize_8bit(apply_protection(
        choose("protection", ADAPTIVE, steps=steps, weights=args.weights), vae, clean, distance)))
    if adaptive is not None:
        protected[ADAPTIVE] = adaptive
    amortised, amortised_seconds = {}, {}
    with torch.no_grad():
        for name, x in protected.items():
            t0 = time.perf_counter()
            amortised[name] = quantize_8bit(net(x))
            amortised_seconds[name] = (time.perf_counter() - t0) / len(x)
        clean_out = quantize_8bit(net(clean))
    threshold = calibrated_threshold(args.weights, identity)
    cascades = {name: work.get(f"cascade-{name}-{iters or 'fast'}",
                               lambda n=name: cascade(args.model, args.weights, protected[n], iters))
                for name in ("photoguard-16", ADAPTIVE) if name in protected}
    cascades = {name: run for name, run in cascades.items() if run is not None}
    mixed = work.get(f"cascade-clean-{iters or 'fast'}", lambda: cascade(args.model, args.weights, clean, iters))
    if args.only == "purifier":
        return
    rows = []
    for name, x in protected.items():
        kind = "adaptive" if name == ADAPTIVE else ("trained" if name in TRAINED else "held out")
        rows.append({"protection": name, "kind": kind, "purifier": "amortised", "seconds_per_image": amortised_seconds[name],
                     **quality(vae, clean, x, amortised[name])})
        if name in impress_runs:
            out, its, secs = impress_runs[name]
            rows.append({"protection": name, "kind": kind, "purifier": "impress-fast", "iterations": its,
                         "seconds_per_image": secs / len(x), **quality(vae, clean, x, out)})
        if name in cascades:
            c = cascades[name]
            rows.append({"protection": name, "kind": kind, "purifier": "cascade", "flagged": c["flagged"],
                         "seconds_per_image": c["seconds_per_image"], **quality(vae, clean, x, c["out"])})
    speed = {"amortised": work.get("amortised-ms", lambda: {size: amortised_ms(net, size) for size in sizes}),
             "impress_ms_per_iteration": impress_speed}
    split = both_ways(vae, clean, {n: x for n, x in protected.items() if n != ADAPTIVE}, [args.weights, *args.both_ways])
    write_report(args, identity, purifier, names, rows, speed, impress_runs, clean, clean_out, mixed, cascades, threshold,
                 split)


def both_ways(vae, clean: torch.Tensor, protected: dict[str, torch.Tensor], weights: list[str]) -> list[dict]:
    """Each network's decoded-PSNR gain per protection, and whether its recipe trained on that protection."""
    rows = []
    for name in weights:
        net, identity = load_purifier(name)
        record = json.loads((resolve_weights(name)[1] / "training.json").read_text())
        recipe = record["recipe"]
        with torch.no_grad():
            for protection, x in protected.items():
                rows.append({"weights": name, "revision": identity.revision, "steps": record["steps"],
                             "trained_on": sorted(set(recipe["protections"])),
                             "protection": protection, "held_out": protection not in recipe["protections"],
                             "gain_db": quality(vae, clean, x, quantize_8bit(net(x)))["gain_db"]})
    return rows


def write_report(args, identity, purifier, names, rows, speed, impress_runs, clean, clean_out, mixed, cascades,
                 threshold, split: list[dict]) -> None:
    from bench.amortised_report import report

    meta = {**run_meta("cpu"), "model": identity.model_dump(), "weights": purifier.model_dump(), "pictures": names,
            "size": args.size, "attack_steps": args.attack_steps, "impress_iters": args.impress_iters,
            "threshold": threshold,
            "load_average": list(__import__("os").getloadavg()), "stages": args.only == "report"}
    markdown, summary = report(meta, rows, speed, impress_runs, clean, clean_out, mixed, cascades, split)
    stem = RESULTS / ("amortised-quick" if args.quick else "amortised")
    write_results(stem, {**meta, "speed": speed, "summary": summary, "both_ways": split}, rows, markdown)


if __name__ == "__main__":
    main()
