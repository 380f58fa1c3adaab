"""The detect job (triage): each image's detection score and its verdict at the thresholds."""
from __future__ import annotations

import time

from impress.contract import DEFAULT_PRESET, DetectParams, vae_for
from impress.records import DetectedImage, InputRole, JobResult

from ..engine.models import ModelUnavailable, load_vae, resolve_device
from ..runner import JobContext, log


def detect(ctx: JobContext[DetectParams]) -> JobResult:
    from ..engine.detect import detection_scores, service_thresholds, verdicts
    from ..engine.tensors import to_tensor

    items = ctx.role(InputRole.image)
    device = resolve_device(ctx.settings.device)
    vae, identity = load_vae(ctx.record.vae, device)
    t0 = time.perf_counter()
    params = ctx.params
    scores = detection_scores(vae, [to_tensor(item.image.rgb).to(device) for item in items], params.score,
                              ctx.settings.batch_size * 4, reporter=ctx.reporter)
    pair = params.thresholds(*service_thresholds(ctx.settings, identity.name, identity.revision, params.score))
    detections = [DetectedImage(name=item.meta.name, score=score, score_name=params.score, verdict=verdict,
                                threshold=pair.threshold, low_threshold=pair.low_threshold,
                                thresholds_from=pair.source, model=identity.name, model_revision=identity.revision)
                  for item, score, verdict in zip(items, scores, verdicts(scores, pair.threshold, pair.low_threshold))]
    return JobResult(detections=detections, model=identity, seconds=round(time.perf_counter() - t0, 3),
                     device=device)


def warm_up(settings) -> None:
    """Load the detection model now (imports included: seconds on a busy CPU), so a triage worker's
    first sync detect is answered within its timeout. A model that cannot load is only logged here:
    the job that needs it records model_unavailable."""
    from ..engine import detect as _engine  # noqa: F401 - the import is part of the warm-up

    try:
        load_vae(vae_for(DEFAULT_PRESET, settings.vae), resolve_device(settings.device))
        log.info("detection model loaded")
    except ModelUnavailable as exc:
        log.warning("detection model not loaded: %s", exc)
