"""Train the small autoencoder the project ships (`impress-tiny-vae`): offline, on 2 CPU cores.

Why: no Stable Diffusion weights can be downloaded on our machines, and a randomly initialised VAE
reconstructs nothing, so purification results on it mean nothing. This trains an SD-style
diffusers AutoencoderKL (scaled down, x4 downsampling, 4 latent channels) on photos that Debian
packages ship, and evaluates on different photos that Python wheels ship (see the model card, worker/models/impress-tiny-vae/README.md).

    apt-get download mate-backgrounds lomiri-wallpapers-16.04 lomiri-wallpapers-20.04 \
        plasma-workspace-wallpapers                                   # the training photos
    python scripts/train_small_vae.py --debs DIR_WITH_DEBS --minutes 60

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

# Photographs only: these packages also ship illustrations and renders, which teach the model
# flat colour fields instead of the textures of real photos (the first model trained on 9 ukui
# illustrations among 23 images and generalised poorly). Each name below was checked by eye.
TRAIN_PHOTOS = {
    "usr/share/backgrounds/mate/nature": [     # mate-backgrounds (GPL-2+)
        "Aqua", "Blinds", "Dune", "FreshFlower", "Garden", "GreenMeadow", "LadyBird", "RainDrops",
        "Storm", "TwoWings", "Wood", "YellowFlower"],
    "usr/share/backgrounds": [                 # lomiri-wallpapers-16.04 and -20.04 (CC-BY(-SA), CC0)
        "Bridge_by_Sander_Klootwijk", "Dragonfly_by_Bolly", "Picture_0B_by_freespace",
        "Picture_1A_by_freespace", "Wine_by_Jakkub_Mede", "aitzgorri_by_Aitzol_Berasategi",
        "free_by_Peter_Nerlich", "friends_by_Aitzol_Berasategi", "greentock_by_Peter_Nerlich",
        "life_by_Aitzol_Berasategi", "picosdeeuropa_by_Aitzol_Berasategi",
        "seeding_by_Clements_Engelhardt", "sunset_by_Aitzol_Berasategi", "Kleiber_by_Lukas_Baubkus"],
    "usr/share/wallpapers": [                  # plasma-workspace-wallpapers (GPL-2+)
        "BytheWater", "ColdRipple", "ColorfulCups", "DarkestHour", "EveningGlow", "FallenLeaf",
        "Grey", "Kite", "OneStandsOut", "Path", "summer_1am"],
}
DEBS = ["mate-backgrounds", "lomiri-wallpapers-16.04", "lomiri-wallpapers-20.04",
        "plasma-workspace-wallpapers"]
CROP = 64
PRELOAD_SHORT_SIDE = 512
EVAL_EVERY = 500


def photo_file(root: Path, folder: str, name: str) -> Path:
    """A wallpaper by name: a plain .jpg, or a Plasma package whose largest rendition we take."""
    plain = root / folder / f"{name}.jpg"
    if plain.exists():
        return plain
    sizes = glob.glob(str(root / folder / name / "contents" / "images" / "*"))
    if not sizes:
        raise SystemExit(f"training photo {folder}/{name} not found: download the packages {DEBS}")
    return Path(max(sizes, key=os.path.getsize))


def extract_debs(debs_dir: Path, into: Path) -> list[Path]:
    for package in DEBS:
        debs = sorted(debs_dir.glob(f"{package}_*.deb"))
        if not debs:
            raise SystemExit(f"{package}_*.deb not in {debs_dir}: apt-get download {' '.join(DEBS)}")
        subprocess.run(["dpkg-deb", "-x", str(debs[-1]), str(into)], check=True)
    return [photo_file(into, folder, name) for folder, names in TRAIN_PHOTOS.items() for name in names]


def load_rgb(path: Path, short_side: int) -> torch.Tensor:
    img = Image.open(path).convert("RGB")
    scale = short_side / min(img.size)
    if scale < 1:
        img = img.resize((round(img.width * scale), round(img.height * scale)), Image.LANCZOS)
    return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float() / 127.5 - 1


def random_crops(images: list[torch.Tensor], n: int, gen: torch.Generator) -> torch.Tensor:
    """Crops at log-uniform random scales: a 64-px window shows anything from fine texture to a
    whole scene, with each octave of scale equally likely (as the service sees images of any size)."""
    out = []
    for _ in range(n):
        img = images[int(torch.randint(len(images), (1,), generator=gen))]
        short = min(img.shape[1:])
        u = float(torch.rand(1, generator=gen))
        target = min(short, round(CROP * (short / CROP) ** u))
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


@torch.no_grad()
def reconstruction_psnr(vae, x: torch.Tensor) -> float:
    was_training = vae.training
    vae.eval()
    value = psnr(vae(x).sample.clamp(-1, 1), x)
    vae.train(was_training)
    return value


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
        # Paths, not bare names: Plasma's wallpapers are all called 1920x1080.jpg inside their folders.
        train_names = [str(f.relative_to(tmp)) for f in files]

    vae = AutoencoderKL(**TINY_VAE_CONFIG)
    opt = torch.optim.AdamW(vae.parameters(), lr=args.lr, weight_decay=1e-4)
    state_path = args.work / "state.pt"
    state = {"step": 0, "seconds": 0.0, "curve": []}
    held = held_out_photos(crop=CROP)
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
        if state["step"] % EVAL_EVERY == 0:  # reported only: the held-out set never steers training
            state["curve"].append({"step": state["step"], "minutes": round(state["seconds"] / 60, 1),
                                   "held_out_psnr_db": round(reconstruction_psnr(vae, held), 2)})
            bar.write(json.dumps(state["curve"][-1]))
            t_last = time.perf_counter()  # evaluation time is not training time
    bar.close()
    torch.save({"model": vae.state_dict(), "opt": opt.state_dict(), "state": state}, state_path)

    vae.eval()
    with torch.no_grad():
        train_eval = random_crops(images, 256, torch.Generator().manual_seed(123))
        # SD scales latents to unit variance for its UNet; we do the same so the config is complete.
        latents = vae.encode(train_eval).latent_dist.mode()
        vae.register_to_config(scaling_factor=round(float(1 / latents.std()), 5))
        metrics = {
            "train_crops_psnr_db": round(psnr(vae(train_eval).sample.clamp(-1, 1), train_eval), 2),
            "held_out_crops_psnr_db": round(reconstruction_psnr(vae, held), 2),
            "held_out_crops": int(held.shape[0]),
            "steps": state["step"], "batch": args.batch, "minutes": round(state["seconds"] / 60, 1),
            "parameters": sum(p.numel() for p in vae.parameters()),
            "seed": args.seed, "held_out_curve": state["curve"], "train_photos": train_names,
        }
    args.out.mkdir(parents=True, exist_ok=True)
    vae.save_pretrained(args.out, safe_serialization=True)
    (args.out / "training.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(json.dumps({k: v for k, v in metrics.items() if k != "train_photos"}))


if __name__ == "__main__":
    main()
