"""The amortised purifier's network: a small residual U-Net that maps an image to its purified image.

    f(x) = clamp(x + g(x), -1, 1)

g is a U-Net (a downsampling per level after the first, residual blocks, skip connections) whose output layer starts at
zero, so an untrained f is exactly the identity: training only ever moves it away from passing the
image through. Any image size works: the input is padded to a multiple of 8 (reflected borders) and
the output cropped back. The weights are a safetensors file beside a config.json; the sha256 of the
weights file names them in every result.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..models import file_sha256
from ..purify import pad_to_multiple

MULTIPLE = 8          # sides are padded to this (three halvings of headroom for two downsamplings)
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


@dataclass(frozen=True)
class NetworkConfig:
    """The U-Net's shape: channels per level (full, 1/2, 1/4 ... resolution) and residual blocks per level."""

    channels: tuple[int, ...] = (32, 64, 128)
    blocks: int = 1

    @classmethod
    def from_json(cls, text: str) -> "NetworkConfig":
        raw = json.loads(text)
        return cls(channels=tuple(raw["channels"]), blocks=raw["blocks"])

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"


class ResidualBlock(nn.Module):
    """x + conv(SiLU(conv(SiLU(GroupNorm(x))))): the block of every level."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = nn.GroupNorm(8, channels)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.silu(self.conv1(F.silu(self.norm(x)))))


def level(channels: int, blocks: int) -> nn.Sequential:
    return nn.Sequential(*(ResidualBlock(channels) for _ in range(blocks)))


class PurifierNet(nn.Module):
    """f(x) = clamp(x + g(x)); x: B x 3 x H x W in [-1, 1], any H and W."""

    def __init__(self, config: NetworkConfig = NetworkConfig()):
        super().__init__()
        self.config = config
        c = config.channels
        self.stem = nn.Conv2d(3, c[0], 3, padding=1)
        self.down_levels = nn.ModuleList(level(ch, config.blocks) for ch in c[:-1])
        self.downsample = nn.ModuleList(nn.Conv2d(a, b, 3, stride=2, padding=1) for a, b in zip(c, c[1:]))
        self.middle = level(c[-1], config.blocks + 1)
        self.upsample = nn.ModuleList(nn.Conv2d(b, a, 3, padding=1) for a, b in zip(c, c[1:]))
        self.merge = nn.ModuleList(nn.Conv2d(2 * ch, ch, 1) for ch in c[:-1])
        self.up_levels = nn.ModuleList(level(ch, config.blocks) for ch in c[:-1])
        self.head = nn.Sequential(nn.GroupNorm(8, c[0]), nn.SiLU(), nn.Conv2d(c[0], 3, 3, padding=1))
        nn.init.zeros_(self.head[-1].weight)   # the identity at initialisation
        nn.init.zeros_(self.head[-1].bias)

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        """g(x) on a padded x (sides a multiple of 8)."""
        h = self.stem(x)
        skips = []
        for block, down in zip(self.down_levels, self.downsample):
            h = block(h)
            skips.append(h)
            h = down(h)
        h = self.middle(h)
        for i in reversed(range(len(skips))):
            h = self.upsample[i](F.interpolate(h, scale_factor=2, mode="nearest"))
            h = self.up_levels[i](self.merge[i](torch.cat([h, skips[i]], dim=1)))
        return self.head(h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        padded = pad_to_multiple(x, MULTIPLE)
        return (padded + self.residual(padded))[..., :h, :w].clamp(-1, 1)


def parameter_count(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def save_network(net: PurifierNet, folder: Path) -> str:
    """Write config.json and model.safetensors into `folder`; the weights' sha256."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    (folder / CONFIG_FILE).write_text(net.config.to_json())
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(folder / WEIGHTS_FILE))
    return file_sha256(folder / WEIGHTS_FILE)


def load_network(folder: Path, device: str = "cpu") -> tuple[PurifierNet, str]:
    """(the network in eval mode with frozen weights, the sha256 of its weights file)."""
    from safetensors.torch import load_file

    net = PurifierNet(NetworkConfig.from_json((folder / CONFIG_FILE).read_text()))
    net.load_state_dict(load_file(str(folder / WEIGHTS_FILE)))
    return net.to(device).eval().requires_grad_(False), file_sha256(folder / WEIGHTS_FILE)
