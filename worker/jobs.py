"""Running one job from its Redis record: the task bodies' only logic. Usable without Celery.

`run_job` owns what every kind shares (start, inputs, failure codes, cancel); one handler per kind
turns decoded inputs into a JobResult.
"""
from __future__ import annotations

import logging
import time
from typing import Callable

import torch

from impress.contract import (DetectParams, ErrorCode, EvaluateParams, JobKind, JobResult, JobState, PurifyParams,
                              ResultFile, ResultImage, StopReason)
from impress.images import DecodedImage, ImageRejected, decode_image, encode_png
from impress.settings import Settings
from impress.store import JobStore

from .engine.models import ModelUnavailable, load_vae
from .engine.pipeline import EngineOptions, resolve_device, run_purification

log = logging.getLogger("impress.worker")


class Canceled(Exception):
    pass


class JobContext:
    """What a handler gets: the record, its decoded inputs by role, and progress/cancel reporting."""

    def __init__(self, store: JobStore, settings: Settings, rec: dict, inputs: dict[str, list[tuple[dict, DecodedImage]]]):
        self.store, self.settings, self.rec, self.inputs = store, settings, rec, inputs
        self.params = rec["params"]

    def progress(self, step: int, total: int, *_):
        """Record progress; True when the job must stop."""
        return self.store.progress(self.rec["id"], step, total)

    def put_file(self, name: str, data: bytes, media_type: str) -> ResultFile:
        return ResultFile(name=name, blob=self.store.put_blob(data), media_type=media_type)


def purify_handler(ctx: JobContext) -> JobResult:
    params = PurifyParams(**ctx.params["purify"])
    items = ctx.inputs["image"]
    run = run_purification([im for _, im in items], params, vae=ctx.params["vae"], perceptual=ctx.params["perceptual"],
                           options=EngineOptions.from_settings(ctx.settings), progress=ctx.progress,
                           report_every=ctx.settings.progress_every)
    if any(im.stop_reason == StopReason.canceled for im in run.images):
        raise Canceled
    images = [ResultImage(name=item["name"].rsplit(".", 1)[0] + ".png",
                          blob=ctx.store.put_blob(encode_png(im.rgb, decoded.alpha)), width=decoded.width,
                          height=decoded.height, iterations=im.iterations, stop_reason=im.stop_reason,
                          final=im.trace[-1] if im.trace else {}, trace=im.trace)
              for (item, decoded), im in zip(items, run.images)]
    return JobResult(images=images, model=run.model, perceptual=run.perceptual, seconds=round(run.seconds, 3),
                     device=run.device, engine=run.engine)


def detect_handler(ctx: JobContext) -> JobResult:
    from .engine.detect import consistency_scores, verdicts
    from .engine.tensors import to_tensor

    params = DetectParams(**ctx.params["detect"])
    device = resolve_device(ctx.settings.device)
    vae, identity = load_vae(ctx.params["vae"], device)
    t0 = time.perf_counter()
    scores = consistency_scores(vae, [to_tensor(im.rgb).to(device) for _, im in ctx.inputs["image"]],
                                ctx.settings.batch_size * 4)
    threshold, low = params.thresholds((ctx.settings.detect_threshold, ctx.settings.detect_low_threshold))
    metrics = {"threshold": threshold, "low_threshold": low, "images": [
        {"name": item["name"], "consistency_error": s, "verdict": v}
        for (item, _), s, v in zip(ctx.inputs["image"], scores, verdicts(scores, threshold, low))]}
    return JobResult(metrics=metrics, model=identity.as_dict(), seconds=round(time.perf_counter() - t0, 3),
                     device=device)


def evaluate_handler(ctx: JobContext) -> JobResult:
    from .engine.matrix import measure_uploaded, run_matrix, square_images
    from .engine.report import html_report, markdown_report
    from .engine.perceptual import load_perceptual

    params = EvaluateParams(**ctx.params["evaluate"])
    device = resolve_device(ctx.settings.device)
    vae, identity = load_vae(ctx.params["vae"], device)
    distance = load_perceptual(ctx.params["perceptual"], device)
    protections, purifiers = params.protection_choices(), params.purifier_choices()
    clean = [im for _, im in ctx.inputs["clean"]]
    t0 = time.perf_counter()
    files = []
    if ctx.inputs.get("protected"):
        from .engine.tensors import to_tensor

        stack = lambda role: torch.cat([to_tensor(im.rgb) for _, im in ctx.inputs[role]]).to(device)  # noqa: E731
        result = measure_uploaded(vae, identity.as_dict(), distance, stack("clean"), stack("protected"),
                                  stack("purified") if ctx.inputs.get("purified") else None, purifiers,
                                  ctx.settings.batch_size)
    else:
        result = run_matrix(vae, identity.as_dict(), distance, square_images(clean, params.size).to(device),
                            [item["name"] for item, _ in ctx.inputs["clean"]], protections, purifiers,
                            batch=ctx.settings.batch_size)
        files = [ctx.put_file("report.html", html_report(result).encode(), "text/html"),
                 ctx.put_file("results.md", markdown_report(result).encode(), "text/markdown")]
    return JobResult(metrics=result.model_dump(mode="json"), files=files, model=identity.as_dict(), perceptual={"name": distance.name},
                     seconds=round(time.perf_counter() - t0, 3), device=device)


HANDLERS: dict[JobKind, Callable[[JobContext], JobResult]] = {
    JobKind.purify: purify_handler, JobKind.detect: detect_handler, JobKind.evaluate: evaluate_handler}


def run_job(store: JobStore, settings: Settings, job_id: str, on_time_limit: type[BaseException]) -> str:
    """Run the job; returns its final state. Every failure ends in the record, never in the worker."""
    started, attempt = store.start(job_id, settings.max_attempts)
    if not started:
        rec = store.get(job_id)
        state = rec["state"] if rec else "missing"
        log.info("job %s not started (state %s, attempt %d)", job_id, state, attempt)
        return state
    rec = store.get(job_id)
    log.info("job %s (%s) started, attempt %d, %d inputs", job_id, rec["kind"], attempt, len(rec["inputs"]))
    try:
        inputs: dict[str, list] = {}
        for item in rec["inputs"]:
            data = store.get_blob(item["blob"])
            if data is None:
                store.fail(job_id, ErrorCode.input_expired, f"input {item['name']} expired before the job ran")
                return JobState.failed.value
            decoded = decode_image(data, max_bytes=settings.max_upload_bytes, max_pixels=settings.max_pixels)
            inputs.setdefault(item.get("role", "image"), []).append((item, decoded))
        result = HANDLERS[JobKind(rec["kind"])](JobContext(store, settings, rec, inputs))
        if store.cancel_requested(job_id):
            raise Canceled
        store.succeed(job_id, result)
        log.info("job %s succeeded in %.2fs on %s with %s", job_id, result.seconds, result.device, result.model["name"])
        return JobState.succeeded.value
    except Canceled:
        store.finish_canceled(job_id)
        log.info("job %s canceled", job_id)
        return JobState.canceled.value
    except ModelUnavailable as exc:
        store.fail(job_id, ErrorCode.model_unavailable, str(exc))
    except ImageRejected as exc:
        store.fail(job_id, exc.code, exc.message)
    except on_time_limit:
        store.fail(job_id, ErrorCode.time_limit_exceeded, f"the job ran past {settings.soft_time_limit_s}s")
    except Exception as exc:  # the record must say what happened; the worker stays up
        log.exception("job %s failed", job_id)
        store.fail(job_id, ErrorCode.internal_error, f"{type(exc).__name__}: {exc}")
    return JobState.failed.value
