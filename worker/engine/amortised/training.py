"""Training the amortised purifier: the IMPRESS objective and the platform's clean pairs (docs/amortised.md).

Per image x (protected or clean) with its clean original c, the network's output y = f(x) pays

    pair_weight * mean((y - c)^2)                                   every step
    + consistency(y) + alpha * max(P(y, x) - delta, 0)              from recipe.impress_from_step on
    + decoded_pair_weight * mean((D(E(y)) - D(E(c)))^2)             (None: never)

The pixel pair term uses what only the platform has: the clean original of every protection it
applies; clean crops (their own originals) teach the network to pass clean pictures through. The
IMPRESS terms are IMPRESS's loss (purify.impress_terms: the engine's consistency, perceptual distance
and its defaults); the decoded pair term compares what the autoencoder sees (it reuses the
consistency term's D(E(y)), so it costs one gradient-free reconstruction of c).
Measured on taef2 (model card), which is why the shipped recipe trains on the pairs alone: the
IMPRESS objective alone left the network the identity; joined after 300 pair steps it held the
held-out decoded-PSNR gain near +2.1 dB at twice a step's cost, where the pair term alone went on to
+3.2 dB in the same 12 minutes. Its hinge keeps y within delta of the protected x, and the clean
original is farther than that from x: IMPRESS's own constraint is what holds the network back.
The terms stay one setting away (`--impress-from-step`) for a run with a GPU's budget.

Seeded, resumable (`checkpoint.pt` in the output folder, rewritten every `checkpoint_every` steps),
bounded by a time budget (or a step count), with a held-out curve recorded but never steering it.
"""
from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch

from impress.contract import PurifyOverrides
from impress.progress import SILENT, Canceled, Reporter

from ..metrics import psnr, reconstruction
from ..photos import held_out_photos
from ..purify import impress_terms
from .data import ProtectedPool, TrainingImages, protect_batch, refill
from .network import NetworkConfig, PurifierNet, parameter_count, save_network

log = logging.getLogger("impress.engine")

CHECKPOINT = "checkpoint.pt"
HELD_OUT_PROTECTIONS = ("photoguard-16", "mist-16")   # mist-16 is never trained on


@dataclass(frozen=True)
class Recipe:
    """Everything that decides the trained weights (recorded in training.json)."""

    model: str = "taef2"
    perceptual: str = "dssim"
    minutes: float = 45.0                  # time budget of the training steps (protecting included)
    max_steps: Optional[int] = None        # or a step count, whichever comes first
    batch: int = 8
    clean_per_batch: int = 2               # fresh clean crops in every batch (their target: themselves)
    impress_per_batch: int = 8             # images of each batch whose IMPRESS terms are computed (a random
    #                                        subset: an unbiased estimate of the batch's mean at a fraction of
    #                                        the autoencoder's cost, which dominates a step on a CPU)
    crop: int = 64
    lr: float = 1e-3
    pair_weight: float = 10.0
    decoded_pair_weight: float = 10.0
    impress_from_step: Optional[int] = None  # the step from which the IMPRESS and decoded pair terms join the
    #                                          pixel pair term (None: never). Measured on a 12-minute CPU budget
    #                                          (model card): joined at step 300 they held the held-out gain at
    #                                          +2.1 dB and doubled a step's cost; never joined, it reached +3.2 dB
    protections: tuple[str, ...] = ("photoguard-16", "photoguard-8", "photoguard-16", "glaze-like")  # 16/255 half the time
    protection_steps: int = 30             # optimisation steps of each training protection
    pool_size: int = 256
    initial_batches: int = 4               # protected batches made before the first step
    refresh_every: int = 16                # training steps per new protected batch
    illustration_share: float = 0.3
    channels: tuple[int, ...] = (48, 96)
    blocks: int = 1
    seed: int = 0
    held_out_crops: int = 8                # held-out crops per protection, for the curve only
    held_out_steps: int = 40               # steps of the held-out crops' protections
    checkpoint_every: int = 20
    eval_every: int = 50


@dataclass
class TrainingState:
    step: int = 0
    seconds: float = 0.0
    curve: list[dict] = field(default_factory=list)        # training losses, every 10 steps
    held_out: list[dict] = field(default_factory=list)     # held-out gain, every eval_every steps


@dataclass
class Objective:
    """The loss of a batch: the IMPRESS objective of f(x) (per the engine) plus the clean-pair term."""

    vae: object
    distance: object
    alpha: float
    delta: float
    pair_weight: float
    decoded_pair_weight: float

    def __call__(self, net: PurifierNet, x: torch.Tensor, clean: torch.Tensor,
                 subset: Optional[torch.Tensor] = None, pair_only: bool = False) -> tuple[torch.Tensor, dict]:
        """The batch's loss; the IMPRESS terms on the images `subset` indexes (all when None), or none."""
        y = net(x)
        pair = ((y - clean) ** 2).mean(dim=(1, 2, 3))
        if pair_only:
            loss = self.pair_weight * pair.mean()
            return loss, {"loss": loss.item(), "pair": pair.mean().item()}
        picked = slice(None) if subset is None else subset
        recon = self.vae.reconstruct(y[picked])
        impress, consistency, perceptual = impress_terms(recon, self.distance.bind(x[picked]), y[picked],
                                                         self.alpha, self.delta, tuple(x.shape[-2:]))
        decoded_pair = ((recon - reconstruction(self.vae, clean[picked])) ** 2).mean(dim=(1, 2, 3))
        loss = impress.mean() + self.pair_weight * pair.mean() + self.decoded_pair_weight * decoded_pair.mean()
        parts = {"loss": loss.item(), "consistency": consistency.mean().item(),
                 "perceptual": perceptual.mean().item(), "pair": pair.mean().item(),
                 "decoded_pair": decoded_pair.mean().item()}
        return loss, parts


@dataclass
class HeldOut:
    """Held-out crops (the wheels' photos) protected once by a trained and a never-trained protection."""

    clean: torch.Tensor
    protected: dict[str, torch.Tensor]

    @classmethod
    def make(cls, vae, distance, n: int = 8, steps: int = 40) -> "HeldOut":
        tiles = held_out_photos(crop=64, short_sides=(128,))
        clean = tiles[torch.linspace(0, len(tiles) - 1, n).round().long()]
        return cls(clean, {name: protect_batch(vae, distance, clean, name, steps, 0) for name in HELD_OUT_PROTECTIONS})

    def gains(self, vae, net: PurifierNet) -> dict:
        """Decoded-PSNR gain per protection (dB, against D(E(clean))) and the clean crops' PSNR out vs in."""
        reference = reconstruction(vae, self.clean)
        out = {}
        with torch.no_grad():
            for name, x in self.protected.items():
                before = psnr(reconstruction(vae, x), reference).mean()
                after = psnr(reconstruction(vae, net(x)), reference).mean()
                out[f"gain_db_{name}"] = round(float(after - before), 3)
            out["clean_psnr_db"] = round(float(psnr(net(self.clean), self.clean).mean()), 2)
        return out


def learning_rate(recipe: Recipe, state: TrainingState) -> float:
    """Cosine decay to 1% over the budget (time or steps, whichever runs out first)."""
    done = state.seconds / (recipe.minutes * 60)
    if recipe.max_steps:
        done = max(done, state.step / recipe.max_steps)
    return recipe.lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(done, 1.0))))


def finished(recipe: Recipe, state: TrainingState) -> bool:
    return state.seconds >= recipe.minutes * 60 or (recipe.max_steps is not None and state.step >= recipe.max_steps)


def train(recipe: Recipe, images: TrainingImages, vae, distance, out: Path,
          reporter: Reporter = SILENT) -> TrainingState:
    """Train (or resume from out/checkpoint.pt) until the budget is spent; the checkpoint holds
    the network, the optimiser, the pool, the held-out crops and the curves. `reporter` counts the
    budget's seconds; a cancel there stops the run after a checkpoint (rerun to resume)."""
    torch.manual_seed(recipe.seed)
    net = PurifierNet(NetworkConfig(recipe.channels, recipe.blocks))
    opt = torch.optim.Adam(net.parameters(), lr=recipe.lr)
    defaults = PurifyOverrides().resolve(recipe.perceptual)
    objective = Objective(vae, distance, defaults.alpha, defaults.delta, recipe.pair_weight,
                          recipe.decoded_pair_weight)
    state, pool = TrainingState(), ProtectedPool()
    checkpoint = out / CHECKPOINT
    if checkpoint.exists():
        saved = torch.load(checkpoint, weights_only=False)
        net.load_state_dict(saved["net"])
        opt.load_state_dict(saved["opt"])
        state, pool, held = TrainingState(**saved["state"]), ProtectedPool.from_state(saved["pool"]), saved["held_out"]
        log.info("resumed at step %d (%.1f min done)", state.step, state.seconds / 60)
    else:
        held = HeldOut.make(vae, distance, recipe.held_out_crops, recipe.held_out_steps)
        state.held_out.append({"step": 0, **held.gains(vae, net)})

    def save() -> None:   # written aside, then renamed: a run killed mid-save still resumes from the last one
        partial = checkpoint.with_suffix(".partial")
        torch.save({"net": net.state_dict(), "opt": opt.state_dict(), "state": asdict(state), "pool": pool.state(),
                    "held_out": held, "recipe": asdict(recipe)}, partial)
        partial.replace(checkpoint)

    def timed(fn: Callable[[], object]):
        t0 = time.perf_counter()
        result = fn()
        state.seconds += time.perf_counter() - t0
        return result

    fill = lambda: refill(pool, images, vae, distance, recipe.protections, recipe.protection_steps,  # noqa: E731
                          recipe.batch, recipe.crop, recipe.pool_size, recipe.seed)
    while pool.made < recipe.initial_batches:
        log.info("protected a first batch with %s", timed(fill))
        save()
    net.train()
    budget = round(recipe.minutes * 60)
    while not finished(recipe, state):
        gen = torch.Generator().manual_seed(recipe.seed * 1_000_003 + state.step)

        def step() -> dict:
            if state.step % recipe.refresh_every == 0 and state.step > 0:
                fill()
            for group in opt.param_groups:
                group["lr"] = learning_rate(recipe, state)
            clean_x = images.crops(recipe.clean_per_batch, gen, recipe.crop)
            protected, originals = pool.draw(recipe.batch - recipe.clean_per_batch, gen)
            subset = torch.randperm(recipe.batch, generator=gen)[:recipe.impress_per_batch]
            loss, parts = objective(net, torch.cat([clean_x, protected]), torch.cat([clean_x, originals]), subset,
                                    pair_only=recipe.impress_from_step is None or state.step < recipe.impress_from_step)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            return parts

        parts = timed(step)
        state.step += 1
        if state.step % 10 == 0:
            state.curve.append({"step": state.step, "minutes": round(state.seconds / 60, 2),
                                **{k: round(v, 6) for k, v in parts.items()}})
        if state.step % recipe.eval_every == 0:   # reported only: the held-out crops never steer training
            net.eval()
            state.held_out.append({"step": state.step, "minutes": round(state.seconds / 60, 2), **held.gains(vae, net)})
            net.train()
            log.info("held out at step %d: %s", state.step, json.dumps(state.held_out[-1]))
        if state.step % recipe.checkpoint_every == 0:
            save()
        try:
            reporter.advance(min(round(state.seconds), budget), budget, parts["loss"])
        except Canceled:
            save()
            raise
    net.eval()
    if finished(recipe, state) and state.held_out[-1]["step"] != state.step:
        state.held_out.append({"step": state.step, "minutes": round(state.seconds / 60, 2), **held.gains(vae, net)})
    save()
    sha = save_network(net, out)
    (out / "training.json").write_text(json.dumps(
        {"recipe": asdict(recipe), "parameters": parameter_count(net), "weights_sha256": sha, "steps": state.step,
         "minutes": round(state.seconds / 60, 2), "finished": finished(recipe, state), "curve": state.curve,
         "held_out": state.held_out}, indent=1) + "\n")
    return state


def calibrate_cascade(net: PurifierNet, vae, images: TrainingImages, out: Path, model: str, crops: int = 32,
                      sides: tuple[int, ...] = (64, 128), target_fpr: float = 0.05, seed: int = 0) -> dict:
    """The cascade's fallback detection threshold, written beside the weights (calibration.json): the
    default detection score of the network's outputs on clean training crops, at `target_fpr` of them
    flagged (detect.calibrate). A configured or shipped threshold comes first (purification.py)."""
    from impress.contract import DEFAULT_DETECT_SCORE

    from ..detect import calibrate, detection_scores
    from .purification import CALIBRATION_FILE

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        outputs = [net(images.crops(crops, gen, side)) for side in sides]
    scores = [s for batch in outputs for s in detection_scores(vae, list(batch.split(1)), DEFAULT_DETECT_SCORE)]
    calibration = calibrate(scores, target_fpr)
    record = {"model": model, "score": DEFAULT_DETECT_SCORE, "threshold": calibration.threshold,
              "target_fpr": target_fpr, "fpr": calibration.fpr, "n": calibration.n,
              "expected_fpr": calibration.expected_fpr.expected, "sides": list(sides)}
    (out / CALIBRATION_FILE).write_text(json.dumps(record, indent=1) + "\n")
    return record


def plot_curves(out: Path) -> Path:
    """training-curves.png beside training.json: the loss terms per step and the held-out gain."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    record = json.loads((out / "training.json").read_text())
    fig, (losses, held) = plt.subplots(1, 2, figsize=(11, 4))
    steps = [point["step"] for point in record["curve"]]
    for term in ("loss", "consistency", "pair", "decoded_pair"):
        if any(term in point for point in record["curve"]):   # the IMPRESS terms only where they joined
            losses.plot(steps, [point.get(term, math.nan) for point in record["curve"]], label=term)
    losses.set(xlabel="step", yscale="log", title="training batch")
    losses.legend()
    points = record["held_out"]
    for key in [k for k in points[0] if k.startswith("gain_db_")]:
        held.plot([p["step"] for p in points], [p[key] for p in points], marker="o", label=key.removeprefix("gain_db_"))
    held.axhline(0, color="grey", lw=0.5)
    held.set(xlabel="step", ylabel="decoded-PSNR gain, dB", title="held-out crops (never steer training)")
    held.legend()
    path = out / "training-curves.png"
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path
