"""The service's built-in job kinds: one `JobSpec` each (impress/jobspec.py says what that holds),
listed in `JOB_KINDS` as any module of kinds lists its own."""
from __future__ import annotations

from typing import Union

from .contract import (DetectParams, EvaluateParams, JobKind, ProtectParams, PurifyOverrides, PurifyParams,
                       method_steps)
from .images import SUPPORTED_FORMATS
from .jobspec import InputSlot, JobSpec, StepCount
from .pipelines import check_size, configured_pipelines
from .records import InputRole
from .scenarios import MimicryParams
from .settings import Settings

FORMATS = ", ".join(SUPPORTED_FORMATS)


def resolve_purify(overrides: PurifyOverrides, settings: Settings) -> PurifyParams:
    """The caller's overrides on the preset, under the service's perceptual distance and schedule."""
    return overrides.resolve(settings.perceptual, settings.schedule)


def evaluate_steps(params: EvaluateParams) -> list[StepCount]:
    counts = [StepCount(name, name, count) for name, count in
              (("attack_steps", params.attack_steps), ("impress_iters", params.impress_iters)) if count is not None]
    for name, choices in (("protections", params.protection_choices()), ("purifiers", params.purifier_choices())):
        for choice in choices:
            steps = method_steps(choice)
            if steps is not None:
                counts.append(StepCount(name, f"{choice.kind} {choice.label!r}: {choice.params.steps_field}", steps))
    return counts


def evaluate_check(params: EvaluateParams, counts: dict[InputRole, int], settings: Settings) -> None:
    for field, methods in (("protections", params.protections), ("purifiers", params.purifiers)):
        if len(methods) > settings.max_evaluate_methods:   # the matrix runs their product
            raise ValueError(f"{len(methods)} {field} named; at most {settings.max_evaluate_methods} "
                             "(IMPRESS_MAX_EVALUATE_METHODS)")
    if not counts.get(InputRole.protected) and not params.protections and not params.purifiers:
        raise ValueError("send protected images, or name protections and/or purifiers to run on the clean images")
    if not counts.get(InputRole.protected):  # the generated matrix runs every method at `size`
        check_size(params.size, params.size, params.pipeline_users(), configured_pipelines(settings))
    if counts.get(InputRole.mask) and (params.edit is None or params.edit.mode != "inpaint"):
        raise ValueError("masks are for the inpainting edit: set edit=inpaint")


def mimicry_check(_params: MimicryParams, counts: dict[InputRole, int], _settings: Settings) -> None:
    if counts.get(InputRole.clean, 0) < 2:
        raise ValueError(f"{counts.get(InputRole.clean, 0)} clean image sent: mimicry needs at least 2, one to train "
                         "on and one held out to score on")


def protect_steps(params: ProtectParams) -> list[StepCount]:
    choice = params.protection
    steps = choice.step_count
    return [] if steps is None else [StepCount("protection", f"protection {choice.label!r}: "
                                                             f"{choice.params.steps_field}", steps)]


PURIFY = JobSpec(
    kind=JobKind.purify.value, params=PurifyParams, form=PurifyOverrides, resolve=resolve_purify,
    handler="worker.handlers.purify:purify",
    inputs=(InputSlot(InputRole.image, f"images to purify ({FORMATS}); and/or image_url fields", urls=True,
                      field="images"),),
    summary="Queue IMPRESS purification of one or more images",
    steps=lambda params: [StepCount("iters", "iters", params.iters)], preset=lambda params: params.preset)

DETECT = JobSpec(
    kind=JobKind.detect.value, params=DetectParams, handler="worker.handlers.detect:detect", queue="triage",
    inputs=(InputSlot(InputRole.image, f"images to score ({FORMATS}); and/or image_url fields", urls=True,
                      field="images"),),
    summary="Triage: consistency error of each image and a verdict against the threshold",
    description="Up to `IMPRESS_DETECT_SYNC_MAX_IMAGES` images are answered inline (200, the finished job) when a\n"
                "worker answers within `IMPRESS_DETECT_SYNC_TIMEOUT_S`; larger batches, or a busy service, get 202.",
    answer_inline=True)

EVALUATE = JobSpec(
    kind=JobKind.evaluate.value, params=EvaluateParams, handler="worker.handlers.evaluate:evaluate",
    inputs=(InputSlot(InputRole.clean, "clean originals", required=True),
            InputSlot(InputRole.protected, "protected images, in the order of `clean`", per=InputRole.clean),
            InputSlot(InputRole.purified, "purified images, in the order of `clean`", per=InputRole.clean,
                      needs=InputRole.protected),
            InputSlot(InputRole.mask, "with edit=inpaint: one mask per clean image, white = regenerate (default: all "
                                      "but the centre)", per=InputRole.clean)),
    summary="Queue an evaluation: clean (+ protected, + purified) images, or clean images and the protections x "
            "purifiers matrix to run",
    steps=evaluate_steps, check=evaluate_check)

MIMICRY = JobSpec(
    kind=JobKind.mimicry.value, params=MimicryParams, handler="worker.handlers.mimicry:mimicry",
    inputs=(InputSlot(InputRole.clean, "the artist's clean images (the style to learn)", required=True),
            InputSlot(InputRole.protected, "the same works, protected", per=InputRole.clean),
            InputSlot(InputRole.purified, "the protected works, purified", per=InputRole.clean)),
    summary="Queue style mimicry: LoRA fine-tuning on the clean, protected and purified sets (a heavy job: minutes "
            "per set on a GPU), scored on what each taught of the clean images",
    steps=lambda params: [StepCount("steps", "steps", params.steps)], check=mimicry_check)

PROTECT = JobSpec(
    kind=JobKind.protect.value, params=ProtectParams, handler="worker.handlers.protect:protect",
    inputs=(InputSlot(InputRole.image, f"images to protect ({FORMATS})", required=True, field="images"),
            InputSlot(InputRole.target, "at most one: the image the protection pulls toward, fitted to each input's "
                                        "size; for glaze-like the style-transferred copy (default: each protection's "
                                        "own)", most=1)),
    summary="Queue a protection (PhotoGuard's encoder attack, glaze-like, Mist's textural loss) of one or more images: "
            "protected PNGs, each with its budget measured on the 8-bit result",
    steps=protect_steps)

JOB_KINDS = [PURIFY, PROTECT, DETECT, EVALUATE, MIMICRY]   # in this order on the API document and the console

# The parameter models of the built-in kinds (a registered kind brings its own).
JobParams = Union[PurifyParams, DetectParams, EvaluateParams, MimicryParams, ProtectParams]
