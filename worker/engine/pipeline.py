"""Purify decoded images end to end: pick the models, group by size, batch, run, encode PNGs.

The one entry point that the CLI, the Celery task and the tests share.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional

import torch

from impress.contract import PurifyParams, vae_for
from impress.images import DecodedImage, encode_png

from .models import load_vae, resolve_device
from .perceptual import load_perceptual
from .purify import Precision, ProgressFn, autocast_dtype, precision_name, purify
from .tensors import to_tensor, to_uint8

log = logging.getLogger("impress.engine")


@dataclass
class PurifiedImage:
    png: bytes
    width: int
    height: int
    iterations: int
    stop_reason: str
    trace: list[dict]


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

    @classmethod
    def from_settings(cls, settings, **overrides) -> "EngineOptions":
        fields = {f: getattr(settings, f) for f in ("device", "batch_size", "compile", "precision", "vae_tiling",
                                                    "vae_checkpointing", "memory_headroom", "cpu_batch_pixels")}
        return cls(**{**fields, **{k: v for k, v in overrides.items() if v is not None}})


@dataclass
class PurificationRun:
    images: list[PurifiedImage]
    model: dict
    perceptual: dict
    seconds: float
    device: str
    engine: dict                     # batch sizes, compiled or not, precision, memory options, OOM retries


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


def run_purification(images: list[DecodedImage], params: PurifyParams, *, vae: Optional[str], perceptual: str,
                     options: EngineOptions = EngineOptions(), progress: Optional[ProgressFn] = None,
                     report_every: int = 10) -> PurificationRun:
    """Purify `images` (any sizes; same-size images share batches).

    `progress(done, total, losses)` counts image-iterations over the whole run; returning True
    cancels the rest. On CUDA the batch size of each image size comes from a one-step memory probe
    and the free memory; a batch that still runs out of memory is split in two and retried. On CPU
    a batch holds at most `options.cpu_batch_pixels` pixels (at least one image).
    """
    device = resolve_device(options.device)
    vae_model, identity = load_vae(vae_for(params.preset, vae), device, tiling=options.vae_tiling,
                                   checkpointing=options.vae_checkpointing)
    distance = load_perceptual(perceptual, device)
    cuda = device.startswith("cuda")

    groups: dict[tuple[int, int], list[int]] = {}
    for i, im in enumerate(images):
        groups.setdefault((im.height, im.width), []).append(i)
    total = params.iters * len(images)
    results: list[Optional[PurifiedImage]] = [None] * len(images)
    seconds, done, canceled, compiled = 0.0, 0, False, False
    batch_sizes: dict[str, int] = {}
    oom_splits = 0
    for (height, width), indices in groups.items():
        size = options.batch_size
        if cuda and len(indices) > 1:
            probe = to_tensor(images[indices[0]].rgb)
            free, _ = torch.cuda.mem_get_info(device)
            step_bytes = measure_step_bytes(vae_model, distance, probe, params, device, options.precision)
            size = fitting_batch_size(step_bytes, free, options.batch_size, options.memory_headroom)
        elif not cuda:
            size = max(1, min(size, options.cpu_batch_pixels // (height * width)))
        batch_sizes[f"{width}x{height}"] = size
        pending = [indices[k:k + size] for k in range(0, len(indices), size)]
        while pending and not canceled:
            batch = pending.pop(0)
            x = torch.cat([to_tensor(images[i].rgb) for i in batch])

            def batch_progress(step, _total, losses, offset=done, n=len(batch)):
                return progress is not None and progress(offset + step * n, total, losses)

            try:
                outcome = purify(vae_model, distance, x, params, device=device, progress=batch_progress,
                                 report_every=report_every, compile=options.compile,
                                 precision=options.precision)
            except torch.OutOfMemoryError:
                if len(batch) == 1:
                    raise
                half = len(batch) // 2
                log.warning("out of memory on a batch of %d %dx%d images; retrying as %d + %d",
                            len(batch), width, height, half, len(batch) - half)
                oom_splits += 1
                del x
                if cuda:
                    torch.cuda.empty_cache()
                pending[:0] = [batch[:half], batch[half:]]
                continue
            seconds += outcome.seconds
            compiled = compiled or outcome.compiled
            done += params.iters * len(batch)
            canceled = outcome.stop_reason == "canceled"
            for j, i in enumerate(batch):
                rgb = to_uint8(outcome.images[j])
                results[i] = PurifiedImage(png=encode_png(rgb, images[i].alpha), width=images[i].width,
                                           height=images[i].height, iterations=outcome.iterations,
                                           stop_reason=outcome.stop_reason, trace=outcome.traces[j])
    engine = {"batch_sizes": batch_sizes, "compiled": compiled,
              "precision": precision_name(autocast_dtype(device, options.precision)),
              "vae_tiling": options.vae_tiling, "vae_checkpointing": options.vae_checkpointing,
              "oom_splits": oom_splits}
    return PurificationRun(images=[r for r in results if r is not None], model=identity.as_dict(),
                           perceptual={"name": distance.name}, seconds=seconds, device=device, engine=engine)
