"""The protections and purifiers a caller may name, each with its parameters: names, types, defaults
and ranges in one place. The API validates choices against these models before queueing, and the
engine's registries (worker/engine/protect.py, purifiers.py) pair each model with its function.

A choice is ``NAME`` or ``NAME:KEY=VALUE[:KEY=VALUE...]``; a name is a model with named defaults
(``jpeg-15`` is the JPEG model at quality 15). Ranges are hard limits of the engine; the service's
own iteration limit (`Settings.max_iterations`) holds `MethodChoice.step_count` through the job kind's
step count (impress/kinds.py).
Light on purpose: pydantic only, no torch.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, Literal, Optional

from pydantic import (BaseModel, ConfigDict, Field, PlainSerializer, PlainValidator, ValidationError, WithJsonSchema,
                      model_validator)

# The most optimisation steps any method accepts, whatever a service allows.
MAX_STEPS = 100_000
PresetName = Literal["glaze", "photoguard"]
ScheduleName = Literal["fast", "published"]
Kind = Literal["protection", "purifier"]


# The amortised purifier's bundled weights (worker/models/<name>): the network trained against taef2.
AMORTISED_WEIGHTS = "amortised-taef2"
WEIGHTS_PATTERN = r"^[a-z0-9][a-z0-9.-]{0,63}$"   # a bundled name, never a path


def seed_field():
    return Field(0, ge=0, le=2**31 - 1, description="seed of the method's random draws")


class MethodParams(BaseModel):
    """A method's parameters; `steps_field` names the one that counts optimisation steps, if any, and
    `pipeline_kind` the diffusion pipeline the method runs on, if any (impress/pipelines.py)."""

    model_config = ConfigDict(extra="forbid")

    steps_field: ClassVar[Optional[str]] = None
    pipeline_kind: ClassVar[Optional[str]] = None

    @property
    def step_count(self) -> Optional[int]:
        """Optimisation steps this method runs (None: it runs none, or its preset decides)."""
        return None if self.steps_field is None else getattr(self, self.steps_field)


# ---------------------------------------------------------------- protections

# PhotoGuard's encoder attack as its authors run it (MadryLab/photoguard, notebooks: `pgd`, 1000 iterations,
# step 0.02 for eps 0.06 in [-1, 1] units in the img2img demo: a third of eps, decaying linearly to 1/100).
PHOTOGUARD_STEPS = 1000
PHOTOGUARD_STEP_OF_EPS = 1 / 3


class PhotoguardParams(MethodParams):
    """PhotoGuard's encoder attack toward a grey image: L-inf PGD with a linearly decaying step."""

    steps_field: ClassVar[Optional[str]] = "steps"
    eps: float = Field(8 / 255, gt=0, le=1, description="L-inf budget in [0, 1] pixel units (8/255 = 0.0314)")
    steps: int = Field(PHOTOGUARD_STEPS, ge=1, le=MAX_STEPS, description="PGD steps (PhotoGuard's: 1000)")
    step: Optional[float] = Field(None, gt=0, le=1, description="first PGD step in [0, 1] pixel units, decaying "
                                  "linearly to 1/100 of it; default eps/3, as PhotoGuard's demo (0.02 for eps 0.06)")
    seed: int = seed_field()


class GlazeLikeParams(MethodParams):
    """The glaze-like cloak: Adam on the latent distance to a target plus a perceptual hinge, in an L-inf box."""

    steps_field: ClassVar[Optional[str]] = "steps"
    p: float = Field(0.05, ge=0, le=1, description="perceptual budget (also the random start's range, [-1, 1] units)")
    eps: float = Field(16 / 255, gt=0, le=1, description="L-inf box in [0, 1] pixel units")
    alpha: float = Field(30, ge=0, le=10_000, description="starting weight of the perceptual hinge")
    steps: int = Field(500, ge=1, le=MAX_STEPS, description="Adam steps")
    lr: float = Field(0.01, gt=0, le=1, description="Adam learning rate")
    seed: int = seed_field()


class PhotoguardAdaptiveParams(PhotoguardParams):
    """PhotoGuard's encoder attack aimed through the amortised purifier f: PGD pulling E(f(x + d))
    toward the grey image's latent (white box: the attacker differentiates through f)."""

    eps: float = Field(16 / 255, gt=0, le=1, description="L-inf budget in [0, 1] pixel units")
    weights: str = Field(AMORTISED_WEIGHTS, pattern=WEIGHTS_PATTERN, description="the purifier attacked through")


class MistParams(MethodParams):
    """Mist's textural loss: L-inf PGD with constant steps toward a generated texture."""

    steps_field: ClassVar[Optional[str]] = "steps"
    eps: float = Field(16 / 255, gt=0, le=1, description="L-inf budget in [0, 1] pixel units")
    steps: int = Field(100, ge=1, le=MAX_STEPS, description="PGD steps")
    step: float = Field(1 / 255, gt=0, le=1, description="PGD step size in [0, 1] pixel units")
    seed: int = seed_field()


# ---------------------------------------------------------------- purifiers

class JpegParams(MethodParams):
    """A JPEG round trip (Pillow, 4:2:0 chroma)."""

    quality: int = Field(75, ge=1, le=100, description="JPEG quality")


class NoiseParams(MethodParams):
    """Additive Gaussian noise, clipped to the pixel range (Hönig et al.'s noise.py: skimage's random_noise)."""

    sigma: float = Field(0.05, ge=0, le=1, description="standard deviation in [0, 1] pixel units, as Hönig et al. "
                                                       "state it (their Gaussian noising: 0.05)")
    seed: int = seed_field()


class BlurParams(MethodParams):
    """Gaussian blur."""

    sigma: float = Field(1.0, gt=0, le=10, description="standard deviation in pixels")


class ResizeParams(MethodParams):
    """Down to a short side and back up."""

    size: int = Field(256, ge=8, le=8192, description="short side of the downscaled image, in pixels")


class AmortisedParams(MethodParams):
    """The amortised purifier: one pass of a network trained to undo protections (docs/amortised.md)."""

    weights: str = Field(AMORTISED_WEIGHTS, pattern=WEIGHTS_PATTERN,
                         description="the network: a purifier bundled in worker/models")


class ImpressParams(MethodParams):
    """IMPRESS, as a purify job runs it: anything left out (None) comes from the preset and schedule
    (impress/contract.py PRESETS, SCHEDULES). contract.PurifyOverrides adds the plateau rule."""

    steps_field: ClassVar[Optional[str]] = "iters"
    preset: PresetName = "photoguard"
    schedule: Optional[ScheduleName] = Field(
        None, description="published: the authors' loop as is; fast: a fifth of the preset's iterations, 4.2x its "
                          "lr, Adam betas (0, 0.9), about the published loop's final loss and PSNR to the clean "
                          "image, measured on impress-tiny-vae, the former offline model (bench/results/time-to-quality.md). Default: the "
                          "service's (IMPRESS_SCHEDULE, published unless set)")
    iters: Optional[int] = Field(None, ge=1, le=MAX_STEPS, description="optimisation steps (default: the schedule's)")
    lr: Optional[float] = Field(None, gt=0, le=1.0, description="Adam learning rate (cosine-decayed to 1e-5)")
    beta1: Optional[float] = Field(None, ge=0, lt=1, description="Adam beta1 (default: the schedule's)")
    beta2: Optional[float] = Field(None, ge=0, lt=1, description="Adam beta2 (default: the schedule's)")
    alpha: Optional[float] = Field(None, ge=0, le=1000, description="weight of the perceptual hinge")
    delta: Optional[float] = Field(None, ge=0, le=1.0, description="perceptual budget of the hinge")
    noise: Optional[float] = Field(None, ge=0, le=1.0, description="sigma of the starting noise, [-1,1] units")
    seed: int = Field(0, ge=0, le=2**31 - 1)
    early_stop: Optional[bool] = Field(None, description="stop when the loss has plateaued (see plateau_*); "
                                      "default: off under published (the full count), on under fast")

    def impress_fields(self) -> dict[str, Any]:
        """IMPRESS's own parameters, without those of a method chained before it (noise-impress's sigma)."""
        return self.model_dump(include=set(ImpressParams.model_fields))


class NoiseImpressParams(ImpressParams):
    """Gaussian noise first, then IMPRESS on the noised image (IMPRESS++'s preprocessing)."""

    sigma: float = Field(0.05, ge=0, le=1, description="standard deviation of the noise in [0, 1] pixel units")


# ---------------------------------------------------------------- diffusion methods (docs/diffusion.md)
# They run on a configured Stable Diffusion pipeline (IMPRESS_PIPELINE / _INPAINT_ / _UPSCALE_).

class UnetAttackParams(MethodParams):
    """L-inf PGD on the UNet's denoising loss (Mist's budget and schedule)."""

    steps_field: ClassVar[Optional[str]] = "steps"
    pipeline_kind: ClassVar[Optional[str]] = "img2img"
    eps: float = Field(16 / 255, gt=0, le=1, description="L-inf budget in [0, 1] pixel units")
    step: float = Field(1 / 255, gt=0, le=1, description="PGD step size in [0, 1] pixel units")
    steps: int = Field(100, ge=1, le=MAX_STEPS, description="PGD steps")
    prompt: str = Field("a painting", max_length=300, description="text condition (Mist's style template)")
    seed: int = seed_field()


class AdvdmParams(UnetAttackParams):
    """AdvDM: ascend the exact gradient of the denoising loss."""


class SdsMinusParams(UnetAttackParams):
    """SDS(-): descend the score-distillation gradient (no backward through the UNet)."""


# PhotoGuard states its diffusion attack's L2 budget on 512 x 512 images; the engine scales eps and step by
# sqrt(H W) / 512, so a smaller image gets the same change per pixel (RMS), not a stronger one.
L2_REFERENCE_SIDE = 512


def l2_budget_scale(height: int, width: int) -> float:
    """The factor an L2 budget stated per 512 x 512 image (and its step) is multiplied by on this size."""
    return (height * width) ** 0.5 / L2_REFERENCE_SIDE


class PhotoguardDiffusionParams(MethodParams):
    """PhotoGuard's diffusion attack on an inpainting pipeline: L2 PGD through a differentiable
    few-step inpainting run toward the zero image; only pixels outside the (centre-keep) mask move."""

    steps_field: ClassVar[Optional[str]] = "steps"
    pipeline_kind: ClassVar[Optional[str]] = "inpaint"
    eps: float = Field(16.0, gt=0, le=1000, description="L2 budget per 512 x 512 image in [-1, 1] pixel units "
                                                        "(PhotoGuard's 16), scaled by sqrt(H W) / 512 for other sizes")
    step: float = Field(1.0, gt=0, le=100, description="L2 step per 512 x 512 image, [-1, 1] units, scaled as eps")
    steps: int = Field(200, ge=1, le=MAX_STEPS, description="PGD steps")
    grad_reps: int = Field(10, ge=1, le=100, description="gradient draws averaged per step")
    inference_steps: int = Field(4, ge=1, le=50, description="steps of the differentiated inpainting run")
    guidance: float = Field(7.5, ge=0, le=30, description="classifier-free guidance of that run")
    eta: float = Field(1.0, ge=0, le=1, description="DDIM eta of that run")
    masked_weight: float = Field(0.0, ge=0, le=1000, description="weight of ||x_masked - edit|| added to "
                                 "||edit - target||: 0 in PhotoGuard's notebook, 10 in the IMPRESS authors' "
                                 "pg_mask_diff_helen.py (the protection photoguard-diffusion-impress)")
    prompt: str = Field("", max_length=300)
    seed: int = seed_field()


class DiffpureParams(MethodParams):
    """DiffPure as SDEdit: noise to `strength` of the schedule, denoise unconditionally."""

    pipeline_kind: ClassVar[Optional[str]] = "img2img"

    strength: float = Field(0.1, gt=0, le=1, description="fraction of the noise schedule (0.1 = 100 of 1000 steps)")
    steps: int = Field(1000, ge=1, le=1000, description="sampler steps of the full schedule")
    seed: int = seed_field()

    @model_validator(mode="after")
    def _denoises_at_least_one_step(self):
        # diffusers runs int(steps * strength) sampler steps; none would return the noised image.
        if int(self.steps * self.strength) < 1:
            raise ValueError(f"steps x strength must reach 1 sampler step (steps={self.steps}, strength={self.strength})")
        return self


class GridpureParams(DiffpureParams):
    """GrIDPure: DiffPure on overlapping crops plus the corners, blended with the input, iterated."""

    strength: float = Field(0.01, gt=0, le=1, description="DiffPure strength per pass (the authors' 10 of 1000)")
    crop: int = Field(256, ge=8, le=4096, description="crop side in pixels")
    stride: int = Field(128, ge=1, le=4096, description="crop stride in pixels")
    iterations: int = Field(20, ge=1, le=1000, description="passes")
    gamma: float = Field(0.1, ge=0, le=1, description="weight of the input in each pass's blend")


class NoisyUpscaleParams(MethodParams):
    """Noisy Upscaling: Gaussian noise (8-bit), then the x4 diffusion upscaler, resized back."""

    pipeline_kind: ClassVar[Optional[str]] = "upscale"

    sigma: float = Field(0.1, ge=0, le=1, description="noise std in [0, 1] pixel units")
    noise_level: int = Field(320, ge=0, le=350, description="the upscaler's noise level")
    prompt: str = Field("", max_length=300)
    steps: int = Field(75, ge=1, le=1000, description="upscaler sampler steps")
    guidance: float = Field(9.0, ge=0, le=30)
    seed: int = seed_field()


# ---------------------------------------------------------------- named methods and choices

@dataclass(frozen=True)
class Method:
    """A name a caller may choose: its parameter model and the values it gives over the model's defaults."""

    model: type[MethodParams]
    defaults: dict[str, Any] = field(default_factory=dict)


PROTECTIONS: dict[str, Method] = {
    # PhotoGuard's own schedule (1000 steps); the -200steps variants are the cheaper ones, named so.
    "photoguard-8": Method(PhotoguardParams),
    "photoguard-16": Method(PhotoguardParams, {"eps": 16 / 255}),
    "photoguard-8-200steps": Method(PhotoguardParams, {"steps": 200}),
    "photoguard-16-200steps": Method(PhotoguardParams, {"eps": 16 / 255, "steps": 200}),
    "glaze-like": Method(GlazeLikeParams),
    "mist-16": Method(MistParams),
    # White box through the amortised purifier: what an attacker who knows the purifier does.
    "photoguard-adaptive": Method(PhotoguardAdaptiveParams),
    # Through the UNet of a configured pipeline (docs/diffusion.md).
    "advdm": Method(AdvdmParams),
    "sds-minus": Method(SdsMinusParams),
    "photoguard-diffusion": Method(PhotoguardDiffusionParams),
    "photoguard-diffusion-impress": Method(PhotoguardDiffusionParams, {"masked_weight": 10.0}),
}
PURIFIERS: dict[str, Method] = {
    "jpeg": Method(JpegParams),
    "jpeg-15": Method(JpegParams, {"quality": 15}),
    "jpeg-75": Method(JpegParams),
    # sigma in [0, 1] pixel units, as Hönig et al. state it (before: [-1, 1] units, half as strong).
    "noise": Method(NoiseParams),
    "noise-0.05": Method(NoiseParams),
    "noise-0.1": Method(NoiseParams, {"sigma": 0.1}),
    "blur": Method(BlurParams),
    "resize": Method(ResizeParams),
    # As a purifier in the matrix, IMPRESS runs its schedule's count (published: the full one) unless asked.
    "impress": Method(ImpressParams),
    "noise-impress": Method(NoiseImpressParams),
    # Hönig et al.'s IMPRESS++ preprocessing as their released data describe it: Gaussian noise, then
    # IMPRESS (docs/diffusion.md: what is not included). Their setting is style mimicry: the glaze preset.
    "impress++": Method(NoiseImpressParams, {"preset": "glaze"}),
    "amortised": Method(AmortisedParams),
    # Through a configured pipeline (docs/diffusion.md).
    "diffpure": Method(DiffpureParams),
    "gridpure": Method(GridpureParams),
    "noisy-upscale": Method(NoisyUpscaleParams),
}
REGISTRIES: dict[str, dict[str, Method]] = {"protection": PROTECTIONS, "purifier": PURIFIERS}
# The protections that need the autoencoder alone (no diffusion pipeline): what training and the budgets bench run.
AUTOENCODER_PROTECTIONS: tuple[str, ...] = tuple(name for name, method in PROTECTIONS.items()
                                                  if method.model.pipeline_kind is None)


@dataclass(frozen=True)
class MethodChoice:
    """A protection or purifier as chosen: its label (the choice's text), name and validated parameters."""

    kind: Kind
    label: str
    name: str
    params: MethodParams
    given: frozenset[str] = frozenset()   # the parameters the choice or its name set (photoguard-8-200steps: steps)

    @property
    def step_count(self) -> Optional[int]:
        return self.params.step_count

    def with_default_steps(self, steps: Optional[int]) -> "MethodChoice":
        """This choice running `steps` optimisation steps, unless it set its own count or runs none."""
        key = self.params.steps_field
        if steps is None or key is None or key in self.given:
            return self
        params = type(self.params).model_validate({**self.params.model_dump(), key: steps})
        return MethodChoice(self.kind, self.label, self.name, params, self.given)


def choose(kind: Kind, name: str, label: Optional[str] = None, **overrides: Any) -> MethodChoice:
    """The named method with its defaults, some replaced; ValueError naming the name or field."""
    registry = REGISTRIES[kind]
    if name not in registry:
        raise ValueError(f"unknown {kind} {name!r}; known: {', '.join(registry)}")
    method = registry[name]
    unknown = sorted(set(overrides) - set(method.model.model_fields))
    if unknown:
        raise ValueError(f"{kind} {name!r} has no parameter {', '.join(map(repr, unknown))}; "
                         f"its parameters: {', '.join(method.model.model_fields)}")
    try:
        params = method.model.model_validate({**method.defaults, **overrides})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ValueError(f"{kind} {name!r}: {problems}") from None
    return MethodChoice(kind, label or name, name, params, frozenset(overrides) | frozenset(method.defaults))


def parse_choice(text: str, kind: Kind) -> MethodChoice:
    """`NAME` or `NAME:KEY=VALUE[:KEY=VALUE...]` as a validated choice (values are read as the field's
    type)."""
    name, *pairs = text.strip().split(":")
    overrides: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"{kind} {text!r}: expected KEY=VALUE after the name, got {pair!r}")
        if key in overrides:
            raise ValueError(f"{kind} {text!r}: {key} is given twice")
        overrides[key] = value
    return choose(kind, name, label=text.strip(), **overrides)


def describe(kind: Kind) -> str:
    """The names of a kind with their parameters' names, for help texts and API docs."""
    return "; ".join(f"{name} ({', '.join(m.model.model_fields)})" for name, m in REGISTRIES[kind].items())


def choice_type(kind: Kind):
    """The type of a field holding a choice: a validated MethodChoice in Python, its text in JSON and forms."""
    def parse(value) -> MethodChoice:
        return value if isinstance(value, MethodChoice) else parse_choice(value, kind)

    return Annotated[MethodChoice, PlainValidator(parse), PlainSerializer(lambda choice: choice.label, return_type=str),
                     WithJsonSchema({"type": "string", "description": f"NAME or NAME:KEY=VALUE[:KEY=VALUE...]; "
                                                                      f"{kind}s (parameters): {describe(kind)}"})]
