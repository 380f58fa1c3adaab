"""Parameters of the diffusion scenarios (worker/engine/diffusion, docs/diffusion.md): the editing
scenario of evaluations and benchmarks, and the style-mimicry job. Light: pydantic only."""
from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

# The IMPRESS authors' prompt for inpainting the Helen faces (pg_generate.py).
DEFAULT_EDIT_PROMPT = "a person in an airplane"
# img2img: PhotoGuard's img2img demo (0.5). Inpainting: the IMPRESS evaluation passes none, so
# diffusers' default 1.0 applies (the masked region is regenerated from noise).
DEFAULT_EDIT_STRENGTH = {"img2img": 0.5, "inpaint": 1.0}
EditMode = Literal["img2img", "inpaint"]


class EditParams(BaseModel):
    """One edit, the same for every copy (clean, protected, purified) of an image, as PhotoGuard's
    evaluation: fixed prompt, seed, strength, guidance 7.5 and 50 steps. Inpainting regenerates where
    the caller's mask is white, or (no mask) everything but the centred half of each side."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: EditMode = Field("inpaint", description="img2img (IMPRESS_PIPELINE) or inpaint (IMPRESS_INPAINT_PIPELINE)")
    prompt: str = Field(DEFAULT_EDIT_PROMPT, max_length=300)
    seed: int = Field(0, ge=0, le=2**31 - 1)
    strength: Optional[float] = Field(None, gt=0, le=1, description="default: 0.5 for img2img, 1.0 for inpaint")
    guidance: float = Field(7.5, ge=0, le=30)
    steps: int = Field(50, ge=1, le=500)
    eta: float = Field(1.0, ge=0, le=1, description="DDIM's eta where the scheduler has one (the authors pass 1)")

    @property
    def pipeline_kind(self) -> str:
        return self.mode

    def resolved_strength(self) -> float:
        return DEFAULT_EDIT_STRENGTH[self.mode] if self.strength is None else self.strength


class MimicryParams(BaseModel):
    """Style mimicry: LoRA fine-tuning on each uploaded set (clean, protected, purified; the i-th image of
    each is the same work) and a score of what each taught about held-out clean works. Defaults:
    GrIDPure's LoRA setting (rank 4, lr 1e-4, 200 steps, batch 1). A heavy job: docs/diffusion.md gives
    its cost."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rank: int = Field(4, ge=1, le=128)
    learning_rate: float = Field(1e-4, gt=0, le=1)
    steps: int = Field(200, ge=1, le=20_000)
    batch: int = Field(1, ge=1, le=64)
    prompt: str = Field("a painting in the style of sks", max_length=300,
                        description="instance prompt: a rare token (sks) names the style")
    seed: int = Field(0, ge=0, le=2**31 - 1)
    eval_samples: int = Field(8, ge=1, le=256, description="(timestep, noise) draws per clean image in the score")
    held_out: float = Field(0.25, gt=0, lt=1, description="fraction of the works (at least one, seeded) no set "
                                                          "trains on; the score is measured on their clean images")
    generate: int = Field(2, ge=0, le=16, description="samples generated from the prompt after each training")
    generate_steps: int = Field(50, ge=1, le=500)
    size: int = Field(512, ge=16, le=1024, description="images are centre-cropped and resized to size x size")
