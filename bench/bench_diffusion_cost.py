"""What each diffusion scenario costs at 512 x 512 on Stable Diffusion 1.5's architecture, in FLOPs.

No GPU was lent to this work and no SD weights reach these machines, so this counts instead of timing:
each component (SD 1.5's UNet, its 9-channel inpainting UNet, its VAE, the x4 upscaler's UNet and VAE)
is built with random weights on the meta device (no memory, no compute) and run once under torch's
FlopCounterMode, forward and, where a scenario differentiates through it, backward to the input
(weights frozen). Each scenario's total follows from its loop (the `SCENARIOS` formulas, one per
method's published schedule). The CLIP text encoder (run once per call) and the schedulers are left
out: under 0.1% of any total here.

Seconds are then an estimate, not a measurement: the total divided by the throughput that the IMPRESS
paper's own figure implies for the same kind of work (1000 IMPRESS iterations at 512 px, about
11 PFLOP by the speed bench's count, in about 141 s per image on an A100: ~78 TFLOP/s). Whoever has a
GPU should time the scenarios instead (README: "Diffusion scenarios").

    python -m bench.bench_diffusion_cost        # writes bench/results/diffusion-cost.{json,md}
"""
from __future__ import annotations

import argparse

import torch
from torch.utils.flop_counter import FlopCounterMode

from bench.reference_impress import sd_vae_architecture
from worker.engine.autoencoder import KLAutoencoder
from bench.results_io import RESULTS, run_meta, write_results

IMPRESS_PFLOP_PER_1000 = 10.9            # README / DESIGN: one IMPRESS iteration at 512 px ~10.9 TFLOP
IMPRESS_A100_SECONDS = 141.0             # IMPRESS paper: ~141 s per image on an A100
ANCHOR_TFLOPS = IMPRESS_PFLOP_PER_1000 * 1000 / IMPRESS_A100_SECONDS

SD15_UNET = dict(layers_per_block=2, block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=768,
                 attention_head_dim=8, down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                 up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)
# stabilityai/stable-diffusion-x4-upscaler: its UNet (7 input channels: latents + low-res image, noise
# level as class label) and its x4 VAE.
UPSCALER_UNET = dict(in_channels=7, layers_per_block=2, block_out_channels=(256, 512, 512, 1024),
                     cross_attention_dim=1024, attention_head_dim=8, num_class_embeds=1000,
                     only_cross_attention=(True, True, True, False), use_linear_projection=True,
                     down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * 3,
                     up_block_types=("CrossAttnUpBlock2D",) * 3 + ("UpBlock2D",))
UPSCALER_VAE = dict(block_out_channels=(128, 256, 512), layers_per_block=2, latent_channels=4,
                    down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3)


def count(fn, *inputs, backward: bool) -> float:
    """TFLOP of fn(*inputs) (and of its backward to the inputs)."""
    inputs = [x.requires_grad_(backward) for x in inputs]
    with FlopCounterMode(display=False) as counter:
        out = fn(*inputs)
        if backward:
            out.float().sum().backward()
    return counter.get_total_flops() / 1e12


def components(size: int) -> dict[str, float]:
    """TFLOP of each component call a scenario makes, at `size` px (batch as each scenario calls it)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    lat = size // 8
    with torch.device("meta"):
        unet = UNet2DConditionModel(in_channels=4, **SD15_UNET).requires_grad_(False)
        unet9 = UNet2DConditionModel(in_channels=9, **SD15_UNET).requires_grad_(False)
        vae = KLAutoencoder(sd_vae_architecture()).requires_grad_(False)
        up_unet = UNet2DConditionModel(**UPSCALER_UNET).requires_grad_(False)
        up_vae = AutoencoderKL(**UPSCALER_VAE).requires_grad_(False)
        text, up_text = torch.zeros(2, 77, 768), torch.zeros(2, 77, 1024)
        t, level = torch.tensor(500), torch.tensor([320, 320])

        def unet_call(model, channels, batch, side):
            return lambda z: model(z, t, encoder_hidden_states=text[:batch]).sample, torch.zeros(batch, channels, side, side)

        out = {}
        for name, (fn, x) in {"unet(b2)": unet_call(unet, 4, 2, lat), "unet(b1)": unet_call(unet, 4, 1, lat),
                              "unet9(b2)": unet_call(unet9, 9, 2, lat),
                              "unet(b1,half)": unet_call(unet, 4, 1, lat // 2)}.items():
            out[name] = count(fn, x, backward=False)
            out[name + "+bwd"] = count(fn, x, backward=True)
        image, half = torch.zeros(1, 3, size, size), torch.zeros(1, 3, size // 2, size // 2)
        encode, decode = vae.encode, vae.decode
        out["vae.encode"], out["vae.encode+bwd"] = (count(encode, image, backward=b) for b in (False, True))
        out["vae.decode"], out["vae.decode+bwd"] = (count(decode, torch.zeros(1, 4, lat, lat), backward=b)
                                                    for b in (False, True))
        out["vae.encode(half)"] = count(encode, half, backward=False)
        out["vae.decode(half)"] = count(decode, torch.zeros(1, 4, lat // 2, lat // 2), backward=False)
        # The upscaler runs at the input's size (latents = input pixels) and decodes 4x larger.
        out["upscaler.unet(b2)"] = count(lambda z: up_unet(z, t, encoder_hidden_states=up_text, class_labels=level).sample,
                                         torch.zeros(2, 7, size, size), backward=False)
        out["upscaler.vae.decode"] = count(lambda z: up_vae.decode(z).sample, torch.zeros(1, 4, size, size),
                                           backward=False)
    return out


# Per image, each method's published schedule (module docstrings of worker/engine/diffusion/*).
SCENARIOS = {
    "edit img2img (strength 0.5, 50 steps, CFG)": lambda c: c["vae.encode"] + 25 * c["unet(b2)"] + c["vae.decode"],
    "edit inpaint (strength 1, 50 steps, CFG)": lambda c: 2 * c["vae.encode"] + 50 * c["unet9(b2)"] + c["vae.decode"],
    "advdm (100 PGD steps)": lambda c: 100 * (c["vae.encode+bwd"] + c["unet(b1)+bwd"]),
    "sds-minus (100 PGD steps, no UNet backward)": lambda c: 100 * (c["vae.encode+bwd"] + c["unet(b1)"]),
    "photoguard-diffusion (200 steps x 10 draws x 4-step inpaint)": lambda c: 200 * 10 * (
        c["vae.encode+bwd"] + 4 * c["unet9(b2)+bwd"] + c["vae.decode+bwd"]),
    "diffpure (strength 0.1 of 1000 steps: 100 steps)": lambda c: c["vae.encode"] + 100 * c["unet(b1)"] + c["vae.decode"],
    "gridpure (20 x 10 crops of 256, 10 steps each)": lambda c: 20 * 10 * (
        c["vae.encode(half)"] + 10 * c["unet(b1,half)"] + c["vae.decode(half)"]),
    "noisy-upscale (75 steps, CFG, x4 decode)": lambda c: 75 * c["upscaler.unet(b2)"] + c["upscaler.vae.decode"],
    "mimicry LoRA (200 training steps, batch 1)": lambda c: 200 * (c["vae.encode"] + c["unet(b1)+bwd"]),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    args = parser.parse_args()
    parts = components(args.size)
    rows = [{"scenario": name, "tflop": round(formula(parts), 1),
             "estimated_a100_s": round(formula(parts) / ANCHOR_TFLOPS, 1)} for name, formula in SCENARIOS.items()]
    md = [f"# Diffusion scenarios: cost per {args.size}x{args.size} image (counted, not timed)", "",
          f"Seconds are estimates: TFLOP / {ANCHOR_TFLOPS:.0f} TFLOP/s, the rate the IMPRESS paper's 141 s per "
          "image on an A100 implies for the IMPRESS loop. FLOPs counted with torch's FlopCounterMode on SD 1.5's "
          "architecture (random weights on the meta device).", "",
          "| scenario | TFLOP per image | est. A100 s |", "|---|---:|---:|"]
    md += [f"| {r['scenario']} | {r['tflop']:,} | {r['estimated_a100_s']:,} |" for r in rows]
    md += ["", "Component calls (TFLOP): " + ", ".join(f"{k} {v:.3f}" for k, v in parts.items())]
    write_results(RESULTS / "diffusion-cost", {**run_meta("meta"), "size": args.size, "components_tflop": parts,
                                                "anchor_tflops": ANCHOR_TFLOPS}, rows, md)
    print("\n".join(md))


if __name__ == "__main__":
    main()
