"""What every diffusion scenario shares: pixel ranges at the pipeline boundary, seeded noise, text
conditioning, latents, and the denoising objective Stable Diffusion was trained with."""
from __future__ import annotations

import torch


def to_pipeline(x: torch.Tensor) -> torch.Tensor:
    """Engine pixels ([-1, 1]) to what diffusers' image processors take as a tensor ([0, 1])."""
    return ((x + 1) / 2).clamp(0, 1)


def from_pipeline(images: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A pipeline's output_type='pt' images ([0, 1]) back to engine pixels, on `like`'s device and dtype."""
    return (images * 2 - 1).clamp(-1, 1).to(like)


def generators(seed: int, n: int) -> list[torch.Generator]:
    """One CPU generator per image, all seeded alike: image i of a batch draws the same noise as it
    would alone, and the clean, protected and purified copies of an image get the same noise."""
    return [torch.Generator(device="cpu").manual_seed(seed) for _ in range(n)]


def randn(shape, seed: int, like: torch.Tensor) -> torch.Tensor:
    """Seeded standard normal noise drawn on the CPU (the same on any device)."""
    return torch.randn(shape, generator=torch.Generator(device="cpu").manual_seed(seed)).to(like)


def text_embeddings(pipe, prompt: str, batch: int) -> torch.Tensor:
    """The text encoder's embeddings of `prompt`, repeated for a batch (no classifier-free guidance)."""
    embeds, _ = pipe.encode_prompt(prompt, pipe.unet.device, batch, do_classifier_free_guidance=False)
    return embeds.detach()


def latents(pipe, x: torch.Tensor, seed: int) -> torch.Tensor:
    """z = s * a posterior sample of E(x): what the UNet is trained on (Mist and AdvDM sample too)."""
    dist = pipe.vae.encode(x.to(pipe.vae.dtype)).latent_dist
    sample = dist.mean + dist.std * randn(dist.mean.shape, seed, dist.mean)
    return pipe.vae.config.scaling_factor * sample


def training_scheduler(pipe):
    """The DDPM noise schedule the pipeline's UNet was trained with (same betas as its sampler)."""
    from diffusers import DDPMScheduler

    return DDPMScheduler.from_config(pipe.scheduler.config)


def denoising_error(unet, scheduler, z: torch.Tensor, cond: torch.Tensor, timesteps: torch.Tensor,
                    noise: torch.Tensor) -> torch.Tensor:
    """UNet prediction minus its training target at z noised to `timesteps` (epsilon or v objective)."""
    noisy = scheduler.add_noise(z, noise, timesteps)
    prediction = unet(noisy, timesteps, encoder_hidden_states=cond).sample
    if scheduler.config.prediction_type == "v_prediction":
        return prediction.float() - scheduler.get_velocity(z, noise, timesteps).float()
    return prediction.float() - noise.float()


def random_timesteps(scheduler, n: int, seed: int, device) -> torch.Tensor:
    """n training timesteps drawn uniformly (seeded), as in the DDPM objective."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    return torch.randint(0, scheduler.config.num_train_timesteps, (n,), generator=gen).to(device)
