"""One autoencoder type for the whole engine, whatever the family behind it.

The IMPRESS loop, the protections, detection and the purifiers call only `Autoencoder`: pixels in
[-1, 1] in and out, `encode` the deterministic latent, `sample` a draw from the encoder's posterior,
`decode` back to pixels. Two families sit behind it:

- `KLAutoencoder`: diffusers' AutoencoderKL (Stable Diffusion's VAE and its kin): [-1, 1] input, a
  Gaussian posterior whose mode is the deterministic latent. Latents are the decoder's own (not
  multiplied by the scaling factor a diffusion model applies).
- `TinyAutoencoder` (tiny_autoencoder.py): a distilled tiny autoencoder (TAESD's layout, e.g. TAEF2):
  [0, 1] images, a deterministic encoder, the latent clamp tanh(z/3)*3 as the decoder's first layer.

Callers never branch on the family: what differs (pixel range, posterior) is resolved here.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Optional

import torch
from torch import nn


class Autoencoder(nn.Module, ABC):
    """An image autoencoder with frozen weights, in eval mode. Images are B x 3 x H x W in [-1, 1] with
    H and W multiples of `downscale`; latents are B x `latent_channels` x H/downscale x W/downscale."""

    latent_channels: int
    downscale: int       # the latent's side is the image's divided by this

    @abstractmethod
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The deterministic latent of x: the posterior's mode, or the encoder's output."""

    @abstractmethod
    def sample(self, x: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """A latent drawn from the encoder's posterior (the deterministic latent where there is none)."""

    @abstractmethod
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Pixels in [-1, 1] (not clamped: a decoder may overshoot slightly) from a latent."""

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """D(E(x)): the reconstruction IMPRESS's consistency term and detection compare x with."""
        return self.decode(self.encode(x))

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype


class KLAutoencoder(Autoencoder):
    """diffusers' AutoencoderKL behind the one interface; `model` is the diffusers module."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.latent_channels = int(model.config.latent_channels)
        self.downscale = 2 ** (len(model.config.block_out_channels) - 1)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.encode(x).latent_dist.mode()

    def sample(self, x: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        return self.model.encode(x).latent_dist.sample(generator=generator)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.model.decode(z).sample
