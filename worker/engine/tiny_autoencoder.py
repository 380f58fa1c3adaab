"""Tiny distilled autoencoders in TAESD's layout (madebyollin/taesd), built so that their published
state dicts load as they are; TAEF2, FLUX.2's tiny autoencoder, is the one the project ships.

The networks are plain Sequentials of 3x3 convolutions and residual `Block`s (keys `0` ... `14` for
the encoder, `0` ... `19` for the decoder). What varies between the published variants is read from
the state dicts themselves: the latent channels (the last encoder convolution's outputs) and whether
the middle blocks carry TAEF2's pooled GroupNorm branch (`pool.*` keys).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint_sequential

from .autoencoder import Autoencoder

WIDTH = 64          # channels of every hidden layer
POOL_WIDENING = 4   # the pooled branch's 1x1 convolutions widen 64 -> 256 -> 64
POOL_GROUPS = 4
LATENT_CLAMP = 3.0  # the decoder first maps z to tanh(z / 3) * 3
DOWNSCALE = 8       # three stride-2 convolutions
ENCODER_OUTPUT = "14.weight"  # the encoder's last convolution: its outputs are the latent channels


def conv3x3(n_in: int, n_out: int, **kwargs) -> nn.Conv2d:
    return nn.Conv2d(n_in, n_out, 3, padding=1, **kwargs)


class Block(nn.Module):
    """ReLU(conv(x) + skip(x)); with `pooled`, x first becomes x + pool(x) (TAEF2's middle blocks)."""

    def __init__(self, n_in: int, n_out: int, pooled: bool = False):
        super().__init__()
        wide = n_in * POOL_WIDENING
        self.pool = nn.Sequential(nn.Conv2d(n_in, wide, 1, bias=False), nn.GroupNorm(POOL_GROUPS, wide), nn.ReLU(),
                                  nn.Conv2d(wide, n_in, 1, bias=False)) if pooled else None
        self.conv = nn.Sequential(conv3x3(n_in, n_out), nn.ReLU(), conv3x3(n_out, n_out), nn.ReLU(),
                                  conv3x3(n_out, n_out))
        self.skip = nn.Conv2d(n_in, n_out, 1, bias=False) if n_in != n_out else nn.Identity()
        self.fuse = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool is not None:
            x = x + self.pool(x)
        return self.fuse(self.conv(x) + self.skip(x))


class LatentClamp(nn.Module):
    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.tanh(z / LATENT_CLAMP) * LATENT_CLAMP


def blocks(n: int, pooled: bool = False) -> list[nn.Module]:
    return [Block(WIDTH, WIDTH, pooled) for _ in range(n)]


def tiny_encoder(latent_channels: int, pooled: bool) -> nn.Sequential:
    """[0, 1] image -> latent at 1/8 of the side."""
    down = lambda: conv3x3(WIDTH, WIDTH, stride=2, bias=False)  # noqa: E731
    return nn.Sequential(conv3x3(3, WIDTH), *blocks(1), down(), *blocks(3), down(), *blocks(3), down(),
                         *blocks(3, pooled), conv3x3(WIDTH, latent_channels))


def tiny_decoder(latent_channels: int, pooled: bool) -> nn.Sequential:
    """Latent -> [0, 1] image (about: the last convolution is not clamped) at 8x the side."""
    up = lambda: [nn.Upsample(scale_factor=2), conv3x3(WIDTH, WIDTH, bias=False)]  # noqa: E731
    return nn.Sequential(LatentClamp(), conv3x3(latent_channels, WIDTH), nn.ReLU(), *blocks(3, pooled),
                         *up(), *blocks(3), *up(), *blocks(3), *up(), *blocks(1), conv3x3(WIDTH, 3))


def load_state(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)


class TinyAutoencoder(Autoencoder):
    """A tiny autoencoder behind the one interface: [-1, 1] pixels are mapped to its [0, 1] and back;
    the encoder is deterministic, so `sample` is `encode`.

    `checkpointing` recomputes activations in the backward pass instead of keeping them (four segments
    per network). There is no attention, so memory grows only linearly with the pixels and tiling
    would buy nothing: the networks always run on the whole image.
    """

    downscale = DOWNSCALE

    def __init__(self, encoder_state: dict[str, torch.Tensor], decoder_state: dict[str, torch.Tensor], *,
                 checkpointing: bool = False):
        super().__init__()
        self.latent_channels = int(encoder_state[ENCODER_OUTPUT].shape[0])
        pooled = any(".pool." in key for key in decoder_state)
        self.encoder = tiny_encoder(self.latent_channels, pooled)
        self.decoder = tiny_decoder(self.latent_channels, pooled)
        self.encoder.load_state_dict(encoder_state, strict=True)
        self.decoder.load_state_dict(decoder_state, strict=True)
        self.checkpointing = checkpointing

    @classmethod
    def from_files(cls, encoder: Path, decoder: Path, **kwargs) -> "TinyAutoencoder":
        return cls(load_state(encoder), load_state(decoder), **kwargs)

    def _run(self, network: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
        if self.checkpointing and torch.is_grad_enabled():
            return checkpoint_sequential(network, 4, x, use_reentrant=False)
        return network(x)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(self.encoder, (x + 1) / 2)

    def sample(self, x: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        return self.encode(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self._run(self.decoder, z) * 2 - 1
