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
import json
import math
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from worker.engine.models import TINY_VAE_CONFIG, TINY_VAE_DIR
from worker.engine.photos import held_out_photos
from worker.engine.training_images import load_rgb, photo_files, random_crops

CROP = 64
PRELOAD_SHORT_SIDE = 512
EVAL_EVERY = 500


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
        files = photo_files(args.debs, Path(tmp))
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
        x = random_crops(images, args.batch, gen, CROP)
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
        train_eval = random_crops(images, 256, torch.Generator().manual_seed(123), CROP)
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
