"""Running one job from its Redis record: the task bodies' only logic. Usable without Celery."""
from __future__ import annotations

import logging

from impress.contract import ErrorCode, JobResult, JobState, PurifyParams, ResultImage
from impress.images import ImageRejected, decode_image
from impress.settings import Settings
from impress.store import JobStore

from .engine.models import ModelUnavailable
from .engine.pipeline import run_purification

log = logging.getLogger("impress.worker")


class JobCanceled(Exception):
    pass


def run_purify_job(store: JobStore, settings: Settings, job_id: str, on_time_limit: type[BaseException]) -> str:
    """Purify the job's images; returns the job's final state. Every failure ends in the record."""
    started, attempt = store.start(job_id, settings.max_attempts)
    if not started:
        rec = store.get(job_id)
        state = rec["state"] if rec else "missing"
        log.info("job %s not started (state %s, attempt %d)", job_id, state, attempt)
        return state
    rec = store.get(job_id)
    log.info("job %s started (attempt %d, %d images)", job_id, attempt, len(rec["inputs"]))
    try:
        params = PurifyParams(**rec["params"]["purify"])
        images = []
        for item in rec["inputs"]:
            data = store.get_blob(item["blob"])
            if data is None:
                store.fail(job_id, ErrorCode.input_expired, f"input {item['name']} expired before the job ran")
                return JobState.failed.value
            images.append(decode_image(data, max_bytes=settings.max_upload_bytes, max_pixels=settings.max_pixels))

        def progress(step: int, total: int, _losses) -> bool:
            return store.progress(job_id, step, total)

        run = run_purification(images, params, vae=rec["params"].get("vae"), perceptual=rec["params"]["perceptual"],
                               device=settings.device, batch_size=settings.batch_size, progress=progress,
                               report_every=settings.progress_every)
        if any(im.stop_reason == "canceled" for im in run.images) or store.cancel_requested(job_id):
            store.finish_canceled(job_id)
            log.info("job %s canceled", job_id)
            return JobState.canceled.value
        results = []
        for item, im in zip(rec["inputs"], run.images):
            results.append(ResultImage(
                name=item["name"].rsplit(".", 1)[0] + ".png", blob=store.put_blob(im.png), width=im.width,
                height=im.height, iterations=im.iterations, stop_reason=im.stop_reason,
                final=im.trace[-1] if im.trace else {}, trace=im.trace))
        result = JobResult(images=results, model=run.model, perceptual=run.perceptual, params=params,
                           seconds=round(run.seconds, 3), device=run.device)
        store.succeed(job_id, result)
        log.info("job %s succeeded in %.2fs on %s with %s", job_id, run.seconds, run.device, run.model["name"])
        return JobState.succeeded.value
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
