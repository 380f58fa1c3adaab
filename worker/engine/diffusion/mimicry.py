"""Style mimicry (Glaze's threat) as a heavy job: LoRA fine-tuning on a small image set, and a score.

Fine-tuning follows the setting GrIDPure's authors evaluate with (diffusers' train_text_to_image_lora:
rank 4, learning rate 1e-4, constant, 200 steps, batch 1, one instance prompt); Hönig et al. fine-tune
the whole model instead (2000 steps, lr 5e-6, batch 4), a heavier setting this module does not run.
LoRA adapters go on the UNet's attention projections through diffusers' PEFT integration, on a copy of
the UNet (the cached pipeline is never changed).

The style score needs no extra model: how much a fine-tuned UNet learned of the *clean* artworks,
measured as the drop of its denoising loss on held-out clean images (fixed timesteps and noise) against
the untuned UNet. The clean images are split once (seeded): every training set (clean, protected,
purified: the i-th image of each is the i-th work) is trained on the same works, and all are scored on
the clean works none of them saw, so the clean reference is not scored on its own training images. A protection works when training on its images teaches less than training on the clean
ones (`relative_gain` well below 1); a purifier undoes it when training on purified images brings the
gain back near 1. Generated samples are returned too, for the eye (and for any external scorer).

Cost: per training set, `steps` UNet forward and backward passes at the image size, then
2 x `eval_samples` UNet forward passes per clean image and `generate` x `generate_steps` x 2 (guidance)
to sample. One GPU suffices (SD 1.5 at 512 px with LoRA fits in 16 GB in fp32); seconds per step were
not measured here, since no GPU was lent to this work (README: "Diffusion scenarios").
"""
from __future__ import annotations

import copy
import statistics
from dataclasses import dataclass

import torch

from impress.progress import SILENT, Reporter, spans
from impress.results import MimicryMetrics, MimicryScore, PipelineIdentity, Split
from impress.scenarios import MimicryParams

from .common import denoising_error, from_pipeline, generators, latents, randn, random_timesteps, \
    text_embeddings, training_scheduler

LORA_TARGETS = ["to_k", "to_q", "to_v", "to_out.0"]  # diffusers' LoRA training script's choice


def held_out_split(n: int, fraction: float, seed: int) -> Split:
    """A seeded split of n works: round(n * fraction) of them, at least one and at most n - 1, held out."""
    if n < 2:
        raise ValueError(f"mimicry needs at least 2 clean images (one to train on, one held out to score), got {n}")
    k = min(n - 1, max(1, round(n * fraction)))
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    return Split(train=sorted(order[k:]), held_out=sorted(order[:k]))


@dataclass
class MimicryRun:
    split: Split
    sets: dict[str, MimicryScore]
    samples: dict[str, torch.Tensor | list]   # by set: generated images, B x 3 x H x W in [-1, 1] ([] for none)

    def metrics(self, pipeline: PipelineIdentity, params: MimicryParams) -> MimicryMetrics:
        return MimicryMetrics(pipeline=pipeline, params=params, split=self.split, sets=self.sets)


def train_lora(pipe, images: torch.Tensor, params: MimicryParams, reporter: Reporter = SILENT):
    """A copy of the pipeline's UNet with a LoRA adapter fine-tuned on `images` (N x 3 x H x W, [-1, 1])
    under the instance prompt, and its training losses. The `reporter` is told every step."""
    from peft import LoraConfig

    unet = copy.deepcopy(pipe.unet)
    unet.add_adapter(LoraConfig(r=params.rank, lora_alpha=params.rank, init_lora_weights="gaussian",
                                target_modules=LORA_TARGETS))
    trainable = [p for p in unet.parameters() if p.requires_grad]
    for p in trainable:  # the adapter trains in fp32 even on a half-precision UNet (as diffusers' script)
        p.data = p.data.float()
    optimiser = torch.optim.AdamW(trainable, lr=params.learning_rate)
    scheduler = training_scheduler(pipe)
    cond = text_embeddings(pipe, params.prompt, params.batch)
    order = torch.Generator(device="cpu").manual_seed(params.seed)
    unet.train()
    losses = []
    for step in range(params.steps):
        batch = images[torch.randint(0, len(images), (params.batch,), generator=order)]
        seed = params.seed + step
        with torch.no_grad():
            z = latents(pipe, batch, seed)
        t = random_timesteps(scheduler, len(batch), seed, z.device)
        loss = (denoising_error(unet, scheduler, z, cond.to(z.dtype), t, randn(z.shape, seed, z)) ** 2).mean()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
        reporter.advance(step + 1, params.steps, loss=losses[-1])
    return unet.eval().requires_grad_(False), losses


@torch.no_grad()
def clean_loss(pipe, unet, clean: torch.Tensor, params: MimicryParams) -> float:
    """Mean denoising loss on the clean images at fixed (seeded) timesteps and noise: the same draws for
    every UNet compared, so differences come from the weights alone."""
    scheduler = training_scheduler(pipe)
    cond = text_embeddings(pipe, params.prompt, len(clean))
    values = []
    for k in range(params.eval_samples):
        seed = 10_000 + k
        z = latents(pipe, clean, seed)
        t = random_timesteps(scheduler, len(clean), seed, z.device)
        values.append(float((denoising_error(unet, scheduler, z, cond.to(z.dtype), t, randn(z.shape, seed, z)) ** 2).mean()))
    return statistics.fmean(values)


@torch.no_grad()
def generate(pipe, unet, params: MimicryParams, size: int) -> torch.Tensor:
    """Images generated from the instance prompt by the pipeline with `unet` in place of its own."""
    from diffusers import StableDiffusionPipeline

    text2img = StableDiffusionPipeline.from_pipe(pipe, unet=unet)
    text2img.set_progress_bar_config(disable=True)
    out = text2img(prompt=[params.prompt] * params.generate, height=size, width=size,
                   num_inference_steps=params.generate_steps, generator=generators(params.seed, params.generate),
                   output_type="pt")
    return from_pipeline(out.images, torch.empty(0, device=pipe.unet.device))


def mimicry(pipe, clean: torch.Tensor, training_sets: dict[str, torch.Tensor], params: MimicryParams,
            reporter: Reporter = SILENT) -> MimicryRun:
    """Fine-tune on the training part of each set (name -> images aligned with `clean`; include "clean"
    for the reference gain) and score each on the held-out clean images (`held_out_split`).
    The `reporter` counts training steps over all sets."""
    split = held_out_split(len(clean), params.held_out, params.seed)
    for name, images in training_sets.items():
        if len(images) != len(clean):
            raise ValueError(f"set {name!r} has {len(images)} images for {len(clean)} clean ones: one per work")
    scored = clean[split.held_out]
    training_sets = {name: images[split.train] for name, images in training_sets.items()}
    base = clean_loss(pipe, pipe.unet, scored, params)
    results, samples = {}, {}
    parts = spans(reporter, [params.steps] * len(training_sets))
    for part, (name, images) in zip(parts, training_sets.items()):
        unet, losses = train_lora(pipe, images, params, part)
        tuned = clean_loss(pipe, unet, scored, params)
        samples[name] = generate(pipe, unet, params, clean.shape[-1]) if params.generate else []
        results[name] = MimicryScore(training_set=name, final_losses=losses[-10:], clean_loss_base=base,
                                     clean_loss_tuned=tuned, gain=base - tuned)
    if "clean" in results and results["clean"].gain > 0:
        for result in results.values():
            result.relative_gain = result.gain / results["clean"].gain
    return MimicryRun(split, results, samples)
