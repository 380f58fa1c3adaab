"""What the amortised purifier trains on: clean crops, and crops protected on the fly by the
platform's own protections (worker/engine/protect.py), kept in a rolling pool.

Protecting a crop costs tens of passes through the encoder, far more than a training step, so each
protected batch is used several times: the pool holds the newest `pool_size` protected crops with
their clean originals, a new protected batch replaces the oldest every few steps, and a training
batch draws from it (randomly flipped) beside fresh clean crops that must pass through untouched.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from impress.methods import choose

from ..protect import apply_protection
from ..training_images import random_crops


@dataclass
class TrainingImages:
    """Preloaded training pictures (3 x H x W in [-1, 1]); illustrations drawn `illustration_share` of the time."""

    photos: list[torch.Tensor]
    illustrations: list[torch.Tensor]
    illustration_share: float

    def crops(self, n: int, gen: torch.Generator, crop: int) -> torch.Tensor:
        pick = torch.rand(n, generator=gen) < self.illustration_share
        n_ill = int(pick.sum()) if self.illustrations else 0
        parts = [(self.photos, n - n_ill), (self.illustrations, n_ill)]
        return torch.cat([random_crops(source, count, gen, crop) for source, count in parts if count])


@dataclass
class ProtectedPool:
    """The newest protected crops (fp32, 8-bit values as saved) and their clean originals; `made` counts
    the protected batches ever made (which protection and seed come next)."""

    protected: torch.Tensor = field(default_factory=lambda: torch.empty(0, 3, 0, 0))
    clean: torch.Tensor = field(default_factory=lambda: torch.empty(0, 3, 0, 0))
    made: int = 0

    def __len__(self) -> int:
        return self.protected.shape[0]

    def add(self, protected: torch.Tensor, clean: torch.Tensor, pool_size: int) -> None:
        if len(self) == 0:
            self.protected, self.clean = protected, clean
        else:
            self.protected = torch.cat([self.protected, protected])[-pool_size:]
            self.clean = torch.cat([self.clean, clean])[-pool_size:]
        self.made += 1

    def draw(self, n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """n (protected, clean) pairs drawn with replacement, each pair flipped left-right half the time."""
        idx = torch.randint(len(self), (n,), generator=gen)
        flip = (torch.rand(n, generator=gen) < 0.5).view(-1, 1, 1, 1)
        protected, clean = self.protected[idx], self.clean[idx]
        return torch.where(flip, protected.flip(-1), protected), torch.where(flip, clean.flip(-1), clean)

    def state(self) -> dict:
        return {"protected": self.protected, "clean": self.clean, "made": self.made}

    @classmethod
    def from_state(cls, state: dict) -> "ProtectedPool":
        return cls(state["protected"], state["clean"], state["made"])


def protect_batch(vae, distance, clean: torch.Tensor, protection: str, steps: int, seed: int) -> torch.Tensor:
    """`clean` protected by the named protection (its defaults, `steps` optimisation steps), as saved."""
    choice = choose("protection", protection, steps=steps, seed=seed)
    return apply_protection(choice, vae, clean, distance)


def refill(pool: ProtectedPool, images: TrainingImages, vae, distance, protections: tuple[str, ...], steps: int,
           batch: int, crop: int, pool_size: int, seed: int) -> str:
    """Protect one new batch of crops with the next protection in turn and add it to the pool; its name."""
    gen = torch.Generator().manual_seed(seed * 7919 + pool.made)
    protection = protections[pool.made % len(protections)]
    clean = images.crops(batch, gen, crop)
    pool.add(protect_batch(vae, distance, clean, protection, steps, seed * 100_003 + pool.made), clean, pool_size)
    return protection
