"""`impress`: purify images in-process, or run the API, a worker, or both on one machine."""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from .contract import PERCEPTUALS, PRESETS, SCHEDULES, DetectParams, EvaluateParams, PurifyOverrides
from .settings import Settings


def cmd_purify(args: argparse.Namespace) -> int:
    from pydantic import ValidationError
    from tqdm import tqdm

    from worker.engine.models import ModelUnavailable
    from worker.engine.pipeline import EngineOptions, run_purification

    from .images import ImageRejected, decode_image, encode_png, set_pillow_pixel_guard

    settings = Settings()
    set_pillow_pixel_guard(settings.max_pixels)
    try:
        overrides = PurifyOverrides(preset=args.preset, schedule=args.schedule, iters=args.iters, lr=args.lr,
                                    beta1=args.beta1, beta2=args.beta2, alpha=args.alpha,
                                    delta=args.delta, noise=args.noise, seed=args.seed,
                                    early_stop=not args.no_early_stop)
    except ValidationError as exc:
        for e in exc.errors():
            print(f"error: --{'.'.join(map(str, e['loc']))}: {e['msg']}", file=sys.stderr)
        return 2
    perceptual = args.perceptual or settings.perceptual
    params = overrides.resolve(perceptual, settings.schedule)
    images = []
    for path in args.images:
        try:
            images.append(decode_image(Path(path).read_bytes(), max_bytes=settings.max_upload_bytes,
                                       max_pixels=settings.max_pixels))
        except (OSError, ImageRejected) as exc:
            print(f"error: {path}: {getattr(exc, 'message', exc)}", file=sys.stderr)
            return 2
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    bar = tqdm(total=params.iters * len(images), unit="step", desc="purify")

    def progress(step, total, losses):
        bar.total = total
        bar.update(step - bar.n)
        bar.set_postfix(loss=f"{sum(losses) / len(losses):.5f}")
        return False

    try:
        options = EngineOptions.from_settings(settings, device=args.device, batch_size=args.batch_size,
                                              compile=args.compile or None, precision=args.precision)
        run = run_purification(images, params, vae=args.model or settings.vae, perceptual=perceptual,
                               options=options, progress=progress, report_every=args.report_every)
    except ModelUnavailable as exc:
        bar.close()
        print(f"error: {exc}", file=sys.stderr)
        return 3
    bar.close()
    summary = {"model": run.model, "perceptual": run.perceptual, "params": params.model_dump(),
               "device": run.device, "engine": run.engine, "seconds": round(run.seconds, 2), "images": []}
    for path, decoded, im in zip(args.images, images, run.images):
        target = out / (Path(path).stem + ".png")
        target.write_bytes(encode_png(im.rgb, decoded.alpha))
        summary["images"].append({"input": str(path), "output": str(target), "iterations": im.iterations,
                                  "stop_reason": im.stop_reason.value, "final": im.trace[-1] if im.trace else {}})
        print(f"{path} -> {target} ({im.iterations} steps, {im.stop_reason.value})")
    (out / "purify.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"model {run.model['name']} ({run.model['revision']}), perceptual {run.perceptual['name']}, "
          f"{run.seconds:.1f}s on {run.device}; details in {out / 'purify.json'}")
    return 0


def _decode_files(paths: list, settings: Settings) -> list | None:
    """The decoded images, or None after printing which file failed."""
    from .images import ImageRejected, decode_image, set_pillow_pixel_guard

    set_pillow_pixel_guard(settings.max_pixels)
    images = []
    for path in paths:
        try:
            images.append(decode_image(Path(path).read_bytes(), max_bytes=settings.max_upload_bytes,
                                       max_pixels=settings.max_pixels))
        except (OSError, ImageRejected) as exc:
            print(f"error: {path}: {getattr(exc, 'message', exc)}", file=sys.stderr)
            return None
    return images


def _scores(args: argparse.Namespace, model: str, settings: Settings):
    """(consistency scores of args.images, the VAE's identity), or None after printing why not."""
    from worker.engine.detect import consistency_scores
    from worker.engine.models import ModelUnavailable, load_vae
    from worker.engine.pipeline import resolve_device
    from worker.engine.tensors import to_tensor

    images = _decode_files(args.images, settings)
    if images is None:
        return None
    try:
        vae, identity = load_vae(model, resolve_device(args.device or settings.device))
    except ModelUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None
    return consistency_scores(vae, [to_tensor(im.rgb) for im in images], args.batch_size), identity.as_dict()


def cmd_detect(args: argparse.Namespace) -> int:
    """Score images by consistency error; with a threshold (given or calibrated), a verdict each."""
    from pydantic import ValidationError

    from worker.engine.detect import verdicts

    try:
        asked = DetectParams(threshold=args.threshold, low_threshold=args.low_threshold)
    except ValidationError as exc:
        print(f"error: {exc.errors()[0]['msg']} (--low-threshold goes with --threshold)", file=sys.stderr)
        return 2
    settings = Settings()
    calibration = json.loads(Path(args.calibration).read_text()) if args.calibration else None
    model = args.model or (calibration and calibration["model"]["name"]) or settings.vae or PRESETS["photoguard"].vae
    scored = _scores(args, model, settings)
    if scored is None:
        return 2
    scores, identity = scored
    same_model = lambda m: [m["name"], m["revision"]] == [identity["name"], identity["revision"]]  # noqa: E731
    if calibration and not same_model(calibration["model"]):
        print(f"error: {args.calibration} was calibrated on {calibration['model']['name']} "
              f"({calibration['model']['revision']}), not {identity['name']} ({identity['revision']}): "
              "a threshold holds only for its model; recalibrate with `impress calibrate`", file=sys.stderr)
        return 2
    threshold, low = asked.thresholds((calibration["threshold"], calibration.get("low_threshold"))
                                      if calibration else (None, None))
    for path, score, verdict in zip(args.images, scores, verdicts(scores, threshold, low)):
        print(json.dumps({"image": str(path), "score": score, "threshold": threshold, "low_threshold": low,
                          "verdict": verdict}))
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    """A detection threshold from clean images, for a target false positive rate."""
    from worker.engine.detect import calibrate

    settings = Settings()
    scored = _scores(args, args.model or settings.vae or PRESETS["photoguard"].vae, settings)
    if scored is None:
        return 2
    scores, identity = scored
    try:
        cal = calibrate(scores, args.fpr, args.low_fpr)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    record = {**cal.as_dict(), "score": "consistency error mean((x - D(E(x)))^2), pixels in [-1, 1]",
              "model": identity}
    Path(args.output).write_text(json.dumps(record, indent=2) + "\n")
    print(f"threshold {cal.threshold:.6g}: {cal.fpr:.1%} of {cal.n} clean images flagged protected "
          f"(target {args.fpr:.1%})")
    if cal.low_threshold is not None:
        print(f"low threshold {cal.low_threshold:.6g}: {cal.low_fpr:.1%} flagged purified (target {args.low_fpr:.1%})")
    print(f"written to {args.output}")
    return 0


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif")


def cmd_bench(args: argparse.Namespace) -> int:
    """The protections x purifiers matrix over a folder of images (worker/engine/matrix.py), resumable."""
    from pydantic import ValidationError

    from worker.engine.matrix import run_matrix, square_images
    from worker.engine.matrix_cache import ResumeFolder
    from worker.engine.models import ModelUnavailable, load_vae
    from worker.engine.perceptual import load_perceptual
    from worker.engine.pipeline import resolve_device

    settings = Settings()
    paths = sorted(p for p in Path(args.images).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[:args.limit]
    if not paths:
        print(f"error: no images ({', '.join(IMAGE_SUFFIXES)}) in {args.images}", file=sys.stderr)
        return 2
    try:
        chosen = EvaluateParams(protections=args.protections.split(","), purifiers=args.purifiers.split(","),
                                size=args.size, attack_steps=args.attack_steps, impress_iters=args.impress_iters)
    except ValidationError as exc:
        for e in exc.errors():
            print(f"error: {e['msg'].removeprefix('Value error, ')}", file=sys.stderr)
        return 2
    images = _decode_files(paths, settings)
    if images is None:
        return 2
    device = resolve_device(args.device or settings.device)
    try:
        vae, identity = load_vae(args.model or settings.vae or PRESETS["photoguard"].vae, device)
        distance = load_perceptual(args.perceptual or settings.perceptual, device)
    except ModelUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    names = [p.name for p in paths]
    folder = ResumeFolder(Path(args.output), images=names, size=args.size, model=identity.as_dict(),
                          perceptual=distance.name)
    result = run_matrix(vae, identity.as_dict(), distance, square_images(images, args.size).to(device), names,
                        chosen.protection_choices(), chosen.purifier_choices(), batch=args.batch_size, cache=folder,
                        progress=True)
    folder.write_reports(result)
    print(f"{folder.computed} cells computed, {folder.skipped} resumed; "
          f"{args.output}/results.json, results.md, report.html")
    return 0


def cmd_api(args: argparse.Namespace) -> int:
    import uvicorn

    settings = Settings()
    uvicorn.run("app.asgi:app", host=args.host or settings.api_host, port=args.port or settings.api_port,
                log_level="info")
    return 0


def worker_argv(args: argparse.Namespace) -> list[str]:
    # prefork with one process per GPU: time limits work (solo has none) and each child has its
    # own CUDA context and model cache, created after the fork.
    return ["-A", "worker.tasks", "worker", "--loglevel", "INFO", "-Q", args.queues or Settings().queue,
            "--concurrency", str(args.concurrency), "--pool", args.pool]


def cmd_worker(args: argparse.Namespace) -> int:
    from worker.tasks import celery_app

    celery_app.worker_main(worker_argv(args))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """API + one worker on this machine, with a Redis started here when none is configured."""
    env = dict(os.environ)
    redis_proc = None
    if "IMPRESS_REDIS_URL" not in env:
        server = shutil.which("redis-server")
        if server is None:
            print("error: no IMPRESS_REDIS_URL set and no redis-server binary found. Install Redis "
                  "(apt-get install redis-server, or docker run -p 6379:6379 redis:7) or set "
                  "IMPRESS_REDIS_URL=redis://HOST:6379/0", file=sys.stderr)
            return 2
        port = args.redis_port
        redis_proc = subprocess.Popen([server, "--port", str(port), "--save", "", "--appendonly", "no"],
                                      stdout=subprocess.DEVNULL)
        env["IMPRESS_REDIS_URL"] = f"redis://127.0.0.1:{port}/0"
        print(f"started redis-server on port {port}")
    procs = [subprocess.Popen([sys.executable, "-m", "impress.cli", "worker", "--concurrency", "1"], env=env),
             subprocess.Popen([sys.executable, "-m", "impress.cli", "api", "--host", args.host,
                               "--port", str(args.port)], env=env)]
    print(f"API on http://{args.host}:{args.port}/docs  (Ctrl-C stops everything)")
    try:
        while all(p.poll() is None for p in procs):
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        for p in procs + ([redis_proc] if redis_proc else []):
            p.terminate()
        for p in procs + ([redis_proc] if redis_proc else []):
            p.wait(timeout=30)
    return 0


def cmd_openapi(args: argparse.Namespace) -> int:
    from app.main import create_app

    text = json.dumps(create_app(Settings()).openapi(), indent=2, sort_keys=True) + "\n"
    if args.check:
        current = Path(args.path).read_text() if Path(args.path).exists() else ""
        if current != text:
            print(f"{args.path} differs from the app's OpenAPI: run `impress openapi`", file=sys.stderr)
            return 1
        return 0
    Path(args.path).write_text(text)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="impress", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    pur = sub.add_parser("purify", help="purify images with IMPRESS, in this process")
    pur.add_argument("images", nargs="+", help="image files")
    pur.add_argument("-o", "--output", required=True, help="folder for one PNG per input (same stem)")
    pur.add_argument("--preset", choices=sorted(PRESETS), default="photoguard")
    pur.add_argument("--schedule", choices=sorted(SCHEDULES),
                     help="published: the authors' loop; fast: about its quality in a fifth of the iterations "
                          "(default: IMPRESS_SCHEDULE, published unless set)")
    pur.add_argument("--iters", type=int, help="optimisation steps (default: the preset's under the schedule)")
    pur.add_argument("--lr", type=float)
    pur.add_argument("--beta1", type=float, help="Adam beta1 (default: the schedule's)")
    pur.add_argument("--beta2", type=float, help="Adam beta2 (default: the schedule's)")
    pur.add_argument("--alpha", type=float)
    pur.add_argument("--delta", type=float)
    pur.add_argument("--noise", type=float)
    pur.add_argument("--seed", type=int, default=0)
    pur.add_argument("--no-early-stop", action="store_true", help="run the fixed number of iterations")
    pur.add_argument("--model", help="VAE: hub id, local folder, or impress-tiny-vae (default: the preset's)")
    pur.add_argument("--perceptual", choices=PERCEPTUALS, help="perceptual distance of the hinge")
    pur.add_argument("--device", choices=("auto", "cpu", "cuda"))
    pur.add_argument("--batch-size", type=int)
    pur.add_argument("--compile", action="store_true", help="torch.compile the step (eager if it fails)")
    pur.add_argument("--precision", choices=("auto", "fp32", "bf16"),
                     help="forward-pass autocast (default IMPRESS_PRECISION, auto: bf16 on CUDA, fp32 on CPU)")
    pur.add_argument("--report-every", type=int, default=10, help=argparse.SUPPRESS)
    pur.set_defaults(func=cmd_purify)

    det = sub.add_parser("detect", help="flag protected images by their VAE consistency error")
    det.add_argument("images", nargs="+", help="image files")
    det.add_argument("--model", help="VAE (default: the calibration's, else the configured or photoguard preset's)")
    thr = det.add_mutually_exclusive_group()
    thr.add_argument("--threshold", type=float, help="flag scores above this 'protected'")
    thr.add_argument("--calibration", help="a file written by `impress calibrate`")
    det.add_argument("--low-threshold", type=float,
                     help="with --threshold: flag scores below this 'purified' (a calibration brings its own)")
    det.add_argument("--device", choices=("auto", "cpu", "cuda"))
    det.add_argument("--batch-size", type=int, default=16)
    det.set_defaults(func=cmd_detect)

    cal = sub.add_parser("calibrate", help="detection threshold from clean images for a target FPR")
    cal.add_argument("images", nargs="+", help="clean image files")
    cal.add_argument("--fpr", type=float, default=0.05, help="target false positive rate")
    cal.add_argument("--low-fpr", type=float,
                     help="also a lower threshold: at most this fraction of clean images flagged 'purified'")
    cal.add_argument("-o", "--output", default="calibration.json")
    cal.add_argument("--model", help="VAE (default: the configured one, else the photoguard preset's)")
    cal.add_argument("--device", choices=("auto", "cpu", "cuda"))
    cal.add_argument("--batch-size", type=int, default=16)
    cal.set_defaults(func=cmd_calibrate)

    ben = sub.add_parser("bench", help="protections x purifiers over a folder: JSON, Markdown, HTML report")
    ben.add_argument("--images", required=True, help="folder of images (centre-cropped and resized to --size)")
    ben.add_argument("--protections", default="photoguard-8,photoguard-16,glaze-like,mist-16",
                     help="comma-separated NAME[:KEY=VALUE...] (impress/methods.py PROTECTIONS)")
    ben.add_argument("--purifiers", default="jpeg-15,jpeg-75,noise-0.05,noise-0.1,blur,resize,impress,noise-impress",
                     help="comma-separated NAME[:KEY=VALUE...] (impress/methods.py PURIFIERS)")
    ben.add_argument("-o", "--output", required=True, help="folder for results and the resumable cell cache")
    ben.add_argument("--model", help="VAE (default: the configured one, else the photoguard preset's)")
    ben.add_argument("--perceptual", choices=PERCEPTUALS)
    ben.add_argument("--size", type=int, default=64, help="square side the images are brought to")
    ben.add_argument("--limit", type=int, help="first N images of the folder")
    ben.add_argument("--impress-iters", type=int, help="iterations of the IMPRESS purifiers")
    ben.add_argument("--attack-steps", type=int, help="optimisation steps of every protection")
    ben.add_argument("--device", choices=("auto", "cpu", "cuda"))
    ben.add_argument("--batch-size", type=int, default=8)
    ben.set_defaults(func=cmd_bench)

    api = sub.add_parser("api", help="run the HTTP API (uvicorn)")
    api.add_argument("--host")
    api.add_argument("--port", type=int)
    api.set_defaults(func=cmd_api)

    wrk = sub.add_parser("worker", help="run a Celery worker")
    wrk.add_argument("--queues", help="comma-separated queues (default: the queue setting)")
    wrk.add_argument("--concurrency", type=int, default=1, help="processes: one per GPU")
    wrk.add_argument("--pool", default="prefork", choices=("prefork", "solo"))
    wrk.set_defaults(func=cmd_worker)

    srv = sub.add_parser("serve", help="API + worker (+ Redis) on this machine, for a first try")
    srv.add_argument("--host", default="127.0.0.1")
    srv.add_argument("--port", type=int, default=8000)
    srv.add_argument("--redis-port", type=int, default=6390)
    srv.set_defaults(func=cmd_serve)

    oa = sub.add_parser("openapi", help="write (or --check) the OpenAPI document")
    oa.add_argument("--path", default="openapi/openapi.json")
    oa.add_argument("--check", action="store_true")
    oa.set_defaults(func=cmd_openapi)
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
