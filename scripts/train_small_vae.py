"""Train the small autoencoder the project ships (`impress-tiny-vae`): offline, on 2 CPU cores.

Why: no Stable Diffusion weights can be downloaded on our machines, and a randomly initialised VAE
reconstructs nothing, so purification results on it mean nothing. This trains an SD-style
diffusers AutoencoderKL (scaled down, x4 downsampling, 4 latent channels) on photos that Debian
packages ship, and evaluates on different photos that Python wheels ship (see PROVENANCE.md).

    apt-get download mate-backgrounds ukui-wallpapers lomiri-wallpapers-20.04   # training photos
    python scripts/train_small_vae.py --debs DIR_WITH_DEBS --minutes 45

Seeded; resumable (`--work DIR` keeps a checkpoint every few hundred steps, rerun the same command);
saves with save_pretrained (safetensors) into worker/models/impress-tiny-vae.
"""
from __future__ import annotations

import argparse
import glob
import json
import math
import os
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from worker.engine.models import TINY_VAE_CONFIG, TINY_VAE_DIR
from worker.engine.photos import held_out_photos

# The committed model was trained on this selection: mate's nature photographs, lomiri's and
# ukui's wallpapers minus a painting and a logo. Most ukui images are illustrations (model card).
TRAIN_GLOBS = [
    "usr/share/backgrounds/mate/nature/*.jpg",
    "usr/share/backgrounds/*.jpg",           # lomiri 20.04 and ukui photos
    "usr/share/backgrounds/calla.png", "usr/share/backgrounds/goldfish.png",
    "usr/share/backgrounds/desert.png", "usr/share/backgrounds/city.png",
]
TRAIN_EXCLUDE = {"Painting-Colors_by__herobrine7gamer.jpg", "2004default.jpg"}
CROP = 64
PRELOAD_SHORT_SIDE = 512


def extract_debs(debs_dir: Path, into: Path) -> list[Path]:
    for deb in sorted(debs_dir.glob("*.deb")):
        subprocess.run(["dpkg-deb", "-x", str(deb), str(into)], check=True)
    files = sorted({Path(p) for g in TRAIN_GLOBS for p in glob.glob(str(into / g))})
    return [p for p in files if p.name not in TRAIN_EXCLUDE]


def load_rgb(path: Path, short_side: int) -> torch.Tensor:
    img = Image.open(path).convert("RGB")
    scale = short_side / min(img.size)
    if scale < 1:
        img = img.resize((round(img.width * scale), round(img.height * scale)), Image.LANCZOS)
    return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float() / 127.5 - 1


def random_crops(images: list[torch.Tensor], n: int, gen: torch.Generator) -> torch.Tensor:
    """Crops at random scales: a 64-px window shows anything from fine texture to a whole scene."""
    out = []
    for _ in range(n):
        img = images[int(torch.randint(len(images), (1,), generator=gen))]
        short = min(img.shape[1:])
        target = int(torch.randint(CROP, short + 1, (1,), generator=gen))
        if target != short:
            img = F.interpolate(img[None], scale_factor=target / short, mode="bilinear",
                                antialias=True, align_corners=False)[0]
        top = int(torch.randint(img.shape[1] - CROP + 1, (1,), generator=gen))
        left = int(torch.randint(img.shape[2] - CROP + 1, (1,), generator=gen))
        crop = img[:, top:top + CROP, left:left + CROP]
        if torch.rand(1, generator=gen) < 0.5:
            crop = crop.flip(-1)
        out.append(crop)
    return torch.stack(out).clamp(-1, 1)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = ((a - b) ** 2).mean(dim=(1, 2, 3))  # [-1,1] units: peak-to-peak 2
    return float((10 * torch.log10(4 / mse)).mean())


def main() -> None:
    from diffusers import AutoencoderKL

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--debs", type=Path, required=True, help="folder with the wallpaper .deb files")
    p.add_argument("--work", type=Path, default=Path("runs/tiny-vae"), help="checkpoints (resume)")
    p.add_argument("--out", type=Path, default=TINY_VAE_DIR)
    p.add_argument("--minutes", type=float, default=45.0, help="training time budget")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    args.work.mkdir(parents=True, exist_ok=True)

    with tempfile.TemporaryDirectory() as tmp:
        files = extract_debs(args.debs, Path(tmp))
        print(f"training photos: {len(files)}")
        images = [load_rgb(f, PRELOAD_SHORT_SIDE) for f in tqdm(files, desc="decode")]
        train_names = [f.name for f in files]

    vae = AutoencoderKL(**TINY_VAE_CONFIG)
    opt = torch.optim.AdamW(vae.parameters(), lr=args.lr, weight_decay=1e-4)
    state_path = args.work / "state.pt"
    state = {"step": 0, "seconds": 0.0}
    if state_path.exists():
        ckpt = torch.load(state_path, weights_only=False)
        vae.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["opt"])
        state = ckpt["state"]
        print(f"resumed at step {state['step']} ({state['seconds'] / 60:.1f} min done)")
    gen = torch.Generator().manual_seed(args.seed * 1000 + state["step"])
    budget = args.minutes * 60
    bar = tqdm(total=round(budget), initial=round(state["seconds"]), unit="s", desc="train")
    t_last = time.perf_counter()
    while state["seconds"] < budget:
        lr = 1e-5 + 0.5 * (args.lr - 1e-5) * (1 + math.cos(math.pi * state["seconds"] / budget))
        for g in opt.param_groups:
            g["lr"] = lr
        x = random_crops(images, args.batch, gen)
        posterior = vae.encode(x).latent_dist
        recon = vae.decode(posterior.sample(generator=gen)).sample
        rec = F.mse_loss(recon, x) + 0.5 * F.l1_loss(recon, x)
        kl = posterior.kl().mean() / x[0].numel()
        loss = rec + 1e-4 * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        state["step"] += 1
        now = time.perf_counter()
        state["seconds"] += now - t_last
        bar.update(round(state["seconds"]) - bar.n)
        t_last = now
        if state["step"] % 20 == 0:
            bar.set_postfix(step=state["step"], loss=f"{float(rec):.4f}", lr=f"{lr:.1e}")
        if state["step"] % 300 == 0:
            torch.save({"model": vae.state_dict(), "opt": opt.state_dict(), "state": state}, state_path)
    bar.close()
    torch.save({"model": vae.state_dict(), "opt": opt.state_dict(), "state": state}, state_path)

    vae.eval()
    with torch.no_grad():
        train_eval = random_crops(images, 256, torch.Generator().manual_seed(123))
        held = held_out_photos(crop=CROP)
        # SD scales latents to unit variance for its UNet; we do the same so the config is complete.
        latents = vae.encode(train_eval).latent_dist.mode()
        vae.register_to_config(scaling_factor=round(float(1 / latents.std()), 5))
        metrics = {
            "train_crops_psnr_db": round(psnr(vae(train_eval).sample.clamp(-1, 1), train_eval), 2),
            "held_out_crops_psnr_db": round(psnr(vae(held).sample.clamp(-1, 1), held), 2),
            "held_out_crops": int(held.shape[0]),
            "steps": state["step"], "batch": args.batch, "minutes": round(state["seconds"] / 60, 1),
            "parameters": sum(p.numel() for p in vae.parameters()),
            "seed": args.seed, "train_photos": train_names,
        }
    args.out.mkdir(parents=True, exist_ok=True)
    vae.save_pretrained(args.out, safe_serialization=True)
    (args.out / "training.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(json.dumps({k: v for k, v in metrics.items() if k != "train_photos"}))


if __name__ == "__main__":
    main()
