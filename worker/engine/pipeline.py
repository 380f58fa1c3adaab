"""Purify decoded images end to end: pick the models, cut large pictures into tiles, group by size,
batch, run, blend the tiles back.

The one entry point that the CLI, the Celery task and the tests share.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Optional

import numpy as np
import torch

from impress.contract import ErrorCode, PurifyParams, StopReason, vae_for
from impress.images import DecodedImage
from impress.progress import SILENT, Reporter, Span
from impress.records import EngineReport, JobError
from impress.results import ModelIdentity, PerceptualIdentity

from .models import load_vae, resolve_device
from .perceptual import PerceptualDistance, load_perceptual
from .purify import NonFiniteLoss, Precision, PurifyOutcome, autocast_dtype, precision_name, purify
from .tensors import to_tensor, to_uint8
from .tiling import Tile, Tiling, blend, cut, tiles_of

log = logging.getLogger("impress.engine")


@dataclass
class PurifiedImage:
    """One input's outcome: `rgb` is None when the image failed on its own (`error`: its loss was not
    finite, or it ran out of memory alone) while the others went on."""

    rgb: Optional[np.ndarray]        # uint8 H x W x 3, the input's size; storage formats are the caller's
    stop_reason: StopReason
    iterations: int
    trace: list[dict]
    error: Optional[JobError] = None


@dataclass(frozen=True)
class EngineOptions:
    """How the engine runs (never what it computes, except `vae_tiling`, which is recorded)."""

    device: str = "auto"
    batch_size: int = 4              # the most images per step; on CUDA, fewer when memory is short
    compile: bool = False            # torch.compile the step, falling back to eager if it fails
    precision: Precision = "auto"    # autocast dtype of the forward pass (purify.Precision)
    vae_tiling: bool = False
    vae_checkpointing: bool = False
    memory_headroom: float = 0.8     # fraction of free device memory a batch may plan to use
    # On CPU batching amortises per-step overhead on small images but spills the caches on large
    # ones (bench/results/speed-cpu.md: batch 8 helps at 64², costs up to 21% at 128²): a pixel budget.
    cpu_batch_pixels: int = 8 * 64 * 64
    # Pictures larger than a side of `tiling.above` are purified as overlapping tiles (engine.tiling).
    tiling: Optional[Tiling] = Tiling()

    @classmethod
    def from_settings(cls, settings, **overrides) -> "EngineOptions":
        """The service's options, with the given overrides (None: the setting's)."""
        options = cls(device=settings.device, batch_size=settings.batch_size, compile=settings.compile,
                      precision=settings.precision, vae_tiling=settings.vae_tiling,
                      vae_checkpointing=settings.vae_checkpointing, memory_headroom=settings.memory_headroom,
                      cpu_batch_pixels=settings.cpu_batch_pixels,
                      tiling=Tiling(settings.tile_size, settings.tile_overlap, settings.tile_above))
        return replace(options, **{k: v for k, v in overrides.items() if v is not None})


@dataclass
class PurificationRun:
    images: list[PurifiedImage]
    model: ModelIdentity
    perceptual: PerceptualIdentity
    seconds: float
    device: str
    engine: EngineReport


def fitting_batch_size(per_image_bytes: int, free_bytes: int, limit: int, headroom: float) -> int:
    """Images per step that fit in `headroom` of the free memory (at least 1, at most `limit`)."""
    return max(1, min(limit, int(free_bytes * headroom) // max(per_image_bytes, 1)))


def measure_step_bytes(vae, distance, x: torch.Tensor, params: PurifyParams, device: str,
                       precision: Precision = "auto") -> int:
    """Peak device memory of one step on one image of this size (a one-iteration probe run)."""
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    purify(vae, distance, x[:1], params.model_copy(update={"iters": 1, "early_stop": False}), device=device,
           precision=precision)
    return torch.cuda.max_memory_allocated(device) - before


@dataclass
class _Run:
    """One run's models, parameters and running totals, shared by its batches."""

    vae: object
    distance: PerceptualDistance
    params: PurifyParams
    options: EngineOptions
    device: str
    reporter: Reporter
    report_every: int
    total: int                        # image-iterations of the whole run
    done: int = 0
    seconds: float = 0.0
    compiled: bool = False
    oom_splits: int = 0
    starts: Optional[list[torch.Tensor]] = None   # per image: where its optimisation starts (a warm start)

    def batch_size(self, images: list[DecodedImage], indices: list[int]) -> int:
        """Images per batch of this size: on CUDA from a one-step memory probe and the free memory,
        on CPU from the pixel budget."""
        height, width = images[indices[0]].height, images[indices[0]].width
        if not self.device.startswith("cuda"):
            return max(1, min(self.options.batch_size, self.options.cpu_batch_pixels // (height * width)))
        if len(indices) == 1:
            return self.options.batch_size
        free, _ = torch.cuda.mem_get_info(self.device)
        step_bytes = measure_step_bytes(self.vae, self.distance, to_tensor(images[indices[0]].rgb), self.params,
                                        self.device, self.options.precision)
        return fitting_batch_size(step_bytes, free, self.options.batch_size, self.options.memory_headroom)

    def purify_batch(self, x: torch.Tensor, start: Optional[torch.Tensor] = None) -> PurifyOutcome:
        batch = Span(self.reporter, self.done, self.params.iters * x.shape[0], self.total)
        outcome = purify(self.vae, self.distance, x, self.params, device=self.device, reporter=batch,
                         report_every=self.report_every, compile=self.options.compile,
                         precision=self.options.precision, start=start)
        self.seconds += outcome.seconds
        self.compiled = self.compiled or outcome.compiled
        self.done += self.params.iters * x.shape[0]
        return outcome

    def run_group(self, images: list[DecodedImage], indices: list[int], size: int,
                  results: list[Optional[PurifiedImage]]) -> None:
        """Purify same-size images in batches of `size`; a batch that runs out of memory, or whose loss is
        not finite, is split in two; one image that fails alone is recorded with its error, and the
        others go on."""
        pending = [indices[k:k + size] for k in range(0, len(indices), size)]
        while pending:
            batch = pending.pop(0)
            failure: Optional[JobError] = None
            try:
                start = None if self.starts is None else torch.cat([self.starts[i] for i in batch])
                outcome = self.purify_batch(torch.cat([to_tensor(images[i].rgb) for i in batch]), start)
            except torch.OutOfMemoryError as exc:
                outcome, failure = None, JobError(code=ErrorCode.out_of_memory, message=f"out of memory alone: {exc}")
            except NonFiniteLoss as exc:
                outcome, failure = None, JobError(code=ErrorCode.numerical_error, message=str(exc))
            if outcome is None and len(batch) == 1:
                log.warning("image %d failed alone (%s); the others go on", batch[0], failure.code.value)
                self.done += self.params.iters
                results[batch[0]] = PurifiedImage(rgb=None, stop_reason=StopReason.completed, iterations=0, trace=[],
                                                  error=failure)
                continue
            if outcome is None:  # out of the except block, so the failed batch's tensors are freed
                half = len(batch) // 2
                log.warning("%s on a batch of %d %dx%d images; retrying as %d + %d", failure.code.value, len(batch),
                            images[batch[0]].width, images[batch[0]].height, half, len(batch) - half)
                self.oom_splits += failure.code == ErrorCode.out_of_memory
                if self.device.startswith("cuda"):
                    torch.cuda.empty_cache()
                pending[:0] = [batch[:half], batch[half:]]
                continue
            for j, i in enumerate(batch):
                results[i] = PurifiedImage(rgb=to_uint8(outcome.images[j]), stop_reason=outcome.stop_reason,
                                           iterations=outcome.iterations, trace=outcome.traces[j])


def assembled(pieces: list[PurifiedImage], tiles: list[Tile], height: int, width: int) -> PurifiedImage:
    """One picture from its purified tiles: pixels blended, the trace the tiles' mean at each logged step."""
    failed = next((piece for piece in pieces if piece.error is not None), None)
    if failed is not None:
        return failed
    reasons = {piece.stop_reason for piece in pieces}
    by_step: dict[int, list[dict]] = {}
    for piece in pieces:
        for point in piece.trace:
            by_step.setdefault(point["step"], []).append(point)
    trace = [{"step": step, **{k: sum(p[k] for p in points) / len(points) for k in ("loss", "consistency", "perceptual")}}
             for step, points in sorted(by_step.items())]
    return PurifiedImage(rgb=blend([piece.rgb for piece in pieces], tiles, height, width),
                         stop_reason=StopReason.plateau if reasons == {StopReason.plateau} else StopReason.completed,
                         iterations=max(piece.iterations for piece in pieces), trace=trace)


def run_purification(images: list[DecodedImage], params: PurifyParams, *, vae: Optional[str], perceptual: str,
                     options: EngineOptions = EngineOptions(), reporter: Reporter = SILENT,
                     report_every: int = 10, starts: Optional[list[torch.Tensor]] = None) -> PurificationRun:
    """Purify `images` (any sizes; same-size images share batches): one result per input, in order.
    Pictures beyond `options.tiling` are purified as overlapping tiles and blended back.

    The `reporter` counts image-iterations over the whole run (a cancel raises out of it). On CUDA the batch size of
    each image size comes from a one-step memory probe and the free memory; a batch that still runs
    out of memory is split in two and retried. On CPU a batch holds at most `options.cpu_batch_pixels`
    pixels (at least one image). `starts` (1 x 3 x H x W per image) warm-starts each image's optimisation.
    """
    device = resolve_device(options.device)
    vae_model, identity = load_vae(vae_for(params.preset, vae), device, tiling=options.vae_tiling,
                                   checkpointing=options.vae_checkpointing)
    tiled = {i: tiles_of(im.height, im.width, options.tiling) for i, im in enumerate(images)
             if options.tiling is not None and options.tiling.applies(im.height, im.width)}
    units = [piece for i, im in enumerate(images) for piece in (cut(im, tiled[i]) if i in tiled else [im])]
    run = _Run(vae=vae_model, distance=load_perceptual(perceptual, device), params=params, options=options,
               device=device, reporter=reporter, report_every=report_every, total=params.iters * len(units),
               starts=None if starts is None else [
                   piece for i, start in enumerate(starts)
                   for piece in ([start[..., t.top:t.top + t.height, t.left:t.left + t.width] for t in tiled[i]]
                                 if i in tiled else [start])])
    groups: dict[tuple[int, int], list[int]] = {}
    for i, im in enumerate(units):
        groups.setdefault((im.height, im.width), []).append(i)
    done: list[Optional[PurifiedImage]] = [None] * len(units)
    batch_sizes: dict[str, int] = {}
    for (height, width), indices in groups.items():
        size = batch_sizes[f"{width}x{height}"] = run.batch_size(units, indices)
        run.run_group(units, indices, size, done)
    results, at = [], 0
    for i, im in enumerate(images):
        count = len(tiled.get(i, [None]))
        results.append(assembled(done[at:at + count], tiled[i], im.height, im.width) if i in tiled else done[at])
        at += count
    engine = EngineReport(batch_sizes=batch_sizes, compiled=run.compiled,
                          precision=precision_name(autocast_dtype(device, options.precision)),
                          vae_tiling=options.vae_tiling, vae_checkpointing=options.vae_checkpointing,
                          oom_splits=run.oom_splits, tiles={str(i): len(tiles) for i, tiles in tiled.items()})
    return PurificationRun(images=[image for image in results if image is not None], model=identity,
                           perceptual=PerceptualIdentity(name=run.distance.name), seconds=run.seconds, device=device,
                           engine=engine)
