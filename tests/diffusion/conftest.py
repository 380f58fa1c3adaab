"""Tiny random Stable Diffusion pipelines built here, saved with save_pretrained and loaded back
through the real from_pretrained path: img2img (4-channel UNet), inpainting (9-channel UNet) and the
x4 upscaler (7-channel UNet, low-res noise scheduler). A small CLIP text model and a tokenizer over a
vocabulary written here (printable ASCII, no merges) stand in for SD's; the VAE is a small random
AutoencoderKL with x4 downsampling, as the upscaler needs. Nothing comes from a hub."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.support import small_vae_config

MAX_TOKENS = 16
LATENT = 8          # the tests' images are 32 px: 8 latent px through the x4 VAE


def write_vocab(folder: Path) -> dict:
    """A CLIP BPE vocabulary of single printable characters (each also as a word end), no merges."""
    chars = [chr(c) for c in range(33, 127)]
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    vocab.update({"<|startoftext|>": len(vocab), "<|endoftext|>": len(vocab) + 1})
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return vocab


def text_parts(folder: Path):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    vocab = write_vocab(folder / "vocab")
    tokenizer = CLIPTokenizer(vocab_file=str(folder / "vocab" / "vocab.json"),
                              merges_file=str(folder / "vocab" / "merges.txt"), model_max_length=MAX_TOKENS)
    end = vocab["<|endoftext|>"]
    config = CLIPTextConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                            num_attention_heads=4, max_position_embeddings=MAX_TOKENS, projection_dim=32,
                            bos_token_id=vocab["<|startoftext|>"], eos_token_id=end, pad_token_id=end)
    return CLIPTextModel(config), tokenizer


def tiny_unet(in_channels: int, **extra):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=LATENT, in_channels=in_channels, out_channels=4, layers_per_block=1,
        block_out_channels=(16, 32), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32, norm_num_groups=8,
        attention_head_dim=4, **extra)


def sd_scheduler():
    from diffusers import DDIMScheduler

    # SD 1.x's noise schedule; DDIM so that eta (PhotoGuard's eta=1) applies.
    return DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                         set_alpha_to_one=False, steps_offset=1)


@pytest.fixture(scope="session")
def tiny_pipelines(tmp_path_factory) -> dict[str, Path]:
    """Folders of a tiny img2img, inpaint and upscale pipeline, by kind."""
    from diffusers import (AutoencoderKL, DDPMScheduler, StableDiffusionImg2ImgPipeline,
                           StableDiffusionInpaintPipeline, StableDiffusionUpscalePipeline)

    root = tmp_path_factory.mktemp("pipelines")
    torch.manual_seed(0)
    vae = AutoencoderKL(**small_vae_config(downsamplings=2))
    text_encoder, tokenizer = text_parts(root)
    sd = dict(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=sd_scheduler(),
              safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    folders = {kind: root / f"tiny-{kind}" for kind in ("img2img", "inpaint", "upscale")}
    StableDiffusionImg2ImgPipeline(unet=tiny_unet(4), **sd).save_pretrained(folders["img2img"])
    StableDiffusionInpaintPipeline(unet=tiny_unet(9), **sd).save_pretrained(folders["inpaint"])
    StableDiffusionUpscalePipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=sd_scheduler(),
        unet=tiny_unet(7, num_class_embeds=1000), low_res_scheduler=DDPMScheduler(), max_noise_level=350,
    ).save_pretrained(folders["upscale"])
    return folders


@pytest.fixture(scope="module", autouse=True)
def one_thread_here(one_torch_thread):
    """Every diffusion test on one torch thread (tests/conftest.py says why)."""


@pytest.fixture(scope="session")
def images() -> torch.Tensor:
    """The repository's two example photos at 32 px, in [-1, 1]."""
    import numpy as np
    from PIL import Image

    from worker.engine.tensors import to_tensor

    examples = Path(__file__).resolve().parents[2] / "examples"
    return torch.cat([to_tensor(np.array(Image.open(examples / name).convert("RGB").resize((32, 32), Image.LANCZOS)))
                      for name in ("astronaut.png", "coffee.png")])
