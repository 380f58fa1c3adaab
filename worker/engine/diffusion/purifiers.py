"""Diffusion purifiers: DiffPure/SDEdit, GrIDPure and Noisy Upscaling, in the engine's purifier shape
``(pipe, x, **params) -> x'`` on B x 3 x H x W in [-1, 1], same shape out.

- ``diffpure`` (Nie et al. 2022, as SDEdit through an SD img2img pipeline): noise the image to
  `strength` of the schedule and denoise it unconditionally (empty prompt, no guidance). The DiffPure
  runs that GrIDPure compares with noise to t = 100 of 1000 and take 100 reverse steps: strength 0.1 of
  a 1000-step schedule here (diffusers runs int(steps x strength) steps from there, with the pipeline's
  own sampler where the authors use DDPM's).
- ``gridpure`` (Zhao et al. 2024, gridpure.py): DiffPure on 256-px crops at stride 128 (the last row
  and column aligned to the border) plus one image made of the four 128-px corners, overlaps averaged,
  then blended with the input, x <- (1 - gamma) * purified + gamma * x, repeated `iterations` times.
  The authors' run: t = 10 of 1000 and 10 reverse steps (strength 0.01 of 1000 steps), 20 iterations,
  gamma 0.1. Their denoiser is the
  unconditional 256-px ImageNet guided-diffusion model; here it is the configured SD pipeline.
- ``noisy_upscale`` (Hönig et al., ICLR 2025; noise.py and upscale.py): Gaussian noise of std
  `sigma` in [0, 1] units (clipped and saved as 8 bits, as skimage's random_noise then imsave do),
  then Stable Diffusion's x4 upscaler at noise_level 320. The authors keep the 4x image (their
  fine-tuning resizes it); the purifier interface keeps sizes, so the result is resized back with
  antialiasing. Their upscaler fork also passes `noise_level_sub`, a change not in diffusers whose
  effect the released code does not document: it is not reproduced.
"""
from __future__ import annotations


import torch
import torch.nn.functional as F

from impress.progress import SILENT, Reporter, spans

from ..tensors import gaussian_noise, quantize_8bit
from .common import from_pipeline, generators, to_pipeline


@torch.no_grad()
def diffpure(pipe, x: torch.Tensor, *, strength: float = 0.1, steps: int = 1000, seed: int = 0,
             reporter: Reporter = SILENT) -> torch.Tensor:
    """SDEdit at `strength` (the fraction of the noise schedule), unconditional: empty prompt, guidance 1."""
    out = pipe(prompt=[""] * len(x), image=to_pipeline(x), strength=strength, guidance_scale=1.0,
               num_inference_steps=steps, generator=generators(seed, len(x)), output_type="pt",
               callback_on_step_end=step_reporter(reporter))
    return from_pipeline(out.images, x)


def step_reporter(reporter: Reporter):
    """A diffusers pipeline's step-end callback telling `reporter` of each denoising step (a cancel raises
    out of the pipeline's loop)."""
    def on_step_end(pipe, step: int, _timestep, tensors: dict) -> dict:
        reporter.advance(step + 1, pipe.num_timesteps)
        return tensors

    return on_step_end


def crop_origins(size: int, crop: int, stride: int) -> list[int]:
    """Top-left offsets along one side: every `stride` while a crop fits, plus one flush with the end."""
    if size < crop:
        raise ValueError(f"GrIDPure needs images of at least {crop} px a side (crop), got {size}")
    origins = list(range(0, size - crop + 1, stride))
    return origins if origins[-1] == size - crop else origins + [size - crop]


def _grid_pass(pipe, x: torch.Tensor, crop: int, stride: int, strength: float, steps: int, seed: int,
               reporter: Reporter):
    """One GrIDPure pass: purify every crop and the corner mosaic in one batch, average the overlaps."""
    h, w = x.shape[-2:]
    half = crop // 2
    boxes = [(top, left) for top in crop_origins(h, crop, stride) for left in crop_origins(w, crop, stride)]
    corners = [(0, 0), (0, w - half), (h - half, 0), (h - half, w - half)]
    mosaic = torch.cat([torch.cat([x[..., t:t + half, l:l + half] for t, l in corners[:2]], dim=-1),
                        torch.cat([x[..., t:t + half, l:l + half] for t, l in corners[2:]], dim=-1)], dim=-2)
    tiles = torch.stack([x[..., t:t + crop, l:l + crop] for t, l in boxes] + [mosaic], dim=1)  # B x N x 3 x c x c
    purified = diffpure(pipe, tiles.flatten(0, 1), strength=strength, steps=steps, seed=seed, reporter=reporter)
    purified = purified.view(tiles.shape)
    total, count = torch.zeros_like(x), torch.zeros_like(x[:, :1])
    for k, (t, l) in enumerate(boxes):
        total[..., t:t + crop, l:l + crop] += purified[:, k]
        count[..., t:t + crop, l:l + crop] += 1
    quadrants = [(0, 0), (0, half), (half, 0), (half, half)]
    for (t, l), (qt, ql) in zip(corners, quadrants):
        total[..., t:t + half, l:l + half] += purified[:, -1, :, qt:qt + half, ql:ql + half]
        count[..., t:t + half, l:l + half] += 1
    return total / count


def gridpure(pipe, x: torch.Tensor, *, crop: int = 256, stride: int = 128, strength: float = 0.01,
             steps: int = 1000, iterations: int = 20, gamma: float = 0.1, seed: int = 0,
             reporter: Reporter = SILENT) -> torch.Tensor:
    """GrIDPure (module docstring): grid DiffPure blended with its input, `iterations` times."""
    for i, part in enumerate(spans(reporter, [1] * iterations)):
        purified = _grid_pass(pipe, x, crop, stride, strength, steps, seed + i, part)
        x = ((1 - gamma) * purified + gamma * x).clamp(-1, 1)
    return x


@torch.no_grad()
def noisy_upscale(pipe, x: torch.Tensor, *, sigma: float = 0.1, noise_level: int = 320, prompt: str = "",
                  steps: int = 75, guidance: float = 9.0, seed: int = 0, reporter: Reporter = SILENT) -> torch.Tensor:
    """Noisy Upscaling (module docstring). `steps` and `guidance` are diffusers' upscaler defaults, which
    the authors kept; their per-image BLIP caption is the prompt, here one caller-given prompt."""
    noisy = quantize_8bit(gaussian_noise(x, sigma, seed))  # saved as 8 bits, as the authors' noise.py does
    out = pipe(prompt=[prompt] * len(x), image=to_pipeline(noisy), noise_level=noise_level,
               num_inference_steps=steps, guidance_scale=guidance, generator=generators(seed, len(x)),
               output_type="pt", callback_on_step_end=step_reporter(reporter))
    big = from_pipeline(out.images, x)
    return F.interpolate(big, size=x.shape[-2:], mode="bilinear", antialias=True, align_corners=False).clamp(-1, 1)
