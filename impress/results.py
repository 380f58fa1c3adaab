"""What a job measured, and with which weights: the identities of the models behind a result, and the
typed figures of `JobResult.metrics` (the evaluation's matrix or its uploaded protections, a protection's
promise, mimicry's scores). The engine (worker/engine) builds them, the store keeps them, the API, the
console, the reports and the client read them; pydantic only, no torch.

`Metrics` tells the kinds' figures apart by their `kind` field; a record without one (a kind a deployment
registers, IMPRESS_JOB_KINDS) keeps its own fields as `KindMetrics`.
"""
from __future__ import annotations

from typing import Annotated, Any, Generic, Literal, Optional, TypeVar, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, model_validator

from .scenarios import EditParams, MimicryParams

T = TypeVar("T")


class ModelIdentity(BaseModel):
    """Which weights produced a result: recorded in every result (the engine fills every field)."""

    name: str
    source: Optional[str] = None     # bundled | folder | hub
    location: Optional[str] = None   # folder path or hub id
    revision: Optional[str] = None   # sha256 prefix of the weights file, or the hub snapshot commit
    dtype: Optional[str] = None
    device: Optional[str] = None


class PipelineIdentity(ModelIdentity):
    """A diffusion pipeline's identity (worker/engine/diffusion/pipelines.py)."""

    kind: str            # img2img | inpaint | upscale


class PerceptualIdentity(BaseModel):
    name: str            # the perceptual distance: lpips-vgg, dssim


class Budget(BaseModel, Generic[T]):
    """How far images are from their clean originals, measured on the 8-bit images: each figure per
    image (T a list) or its mean over the images."""

    linf_255: T          # largest change of a channel, in grey levels (/255 units)
    l2_255: T            # Euclidean norm of the change, /255 units
    psnr_db: T
    ssim: T
    perceptual: Optional[T] = None   # the result's perceptual distance (named in its `perceptual`)


class MeasuredBudget(Budget[float]):
    """What a protection spent on one image, measured on its 8-bit result against the input."""

    perceptual: float


class BudgetMeans(Budget[Optional[float]]):
    """Means over the images (None where no image had a value)."""


class BudgetPerImage(Budget[list[float]]):
    pass


class CellFigures(Budget[T], Generic[T]):
    """A purifier's output against the clean images (the budget's figures), the consistency error of the
    clean, protected and purified images, and the latent distance to E(clean) before and after."""

    consistency_clean: T
    consistency_protected: T
    consistency_purified: T
    latent_distance_before: T
    latent_distance_after: T
    shift_removed: T     # 1 - after / before (None for an image the protection did not move)


class CellMeans(CellFigures[Optional[float]]):
    pass


class CellPerImage(CellFigures[list[Optional[float]]]):
    pass


class StatedBudget(BaseModel):
    """What a protection promises: L-inf or, for an L2 budget, the L2 norm per 512 x 512 image and on
    the images' own size (when they share one); and its perceptual bound, if it has one."""

    linf_255: Optional[float] = None
    l2_255_per_512x512: Optional[float] = None
    l2_255: Optional[float] = None
    perceptual: Optional[float] = None   # in the job's perceptual distance


class MethodLabel(BaseModel):
    """A protection or purifier as it ran: its name and parameters (impress/methods.py: the method's model)."""

    name: str
    params: dict[str, Any]


class EditComparison(BaseModel):
    """How far the edits of one variant (protected, purified) are from the edits of the clean images,
    per image: higher PSNR/SSIM and lower perceptual distance mean the variant edits like the clean."""

    psnr_db: list[float]
    ssim: list[float]
    perceptual: list[float]
    perceptual_name: str


class WorstCase(BaseModel):
    """One metric's worst case per image for a protection: each image's best purifier and its value."""

    model_config = ConfigDict(frozen=True)

    metric: str
    higher_is_better: bool
    values: list[float]          # per image: the best purifier's value
    purifiers: list[str]         # per image: which purifier that was
    mean: float


class WorstCases(BaseModel):
    """A protection's worst case per image on each editing metric."""

    psnr_db: WorstCase
    ssim: WorstCase
    perceptual: WorstCase


class EditingSummary(BaseModel):
    """The editing scenario of an evaluation: its parameters, the pipeline that edited, and each
    protection's worst case per image over the purifiers (by metric)."""

    settings: EditParams
    pipeline: PipelineIdentity
    worst_case: dict[str, WorstCases]    # by protection label


class ProtectionSummary(MethodLabel):
    budget: BudgetMeans                           # vs clean
    budget_per_image: BudgetPerImage
    consistency_error: list[float]
    detection_auc: Optional[float]                # clean vs protected; None for the 'none' row
    edit: Optional[EditComparison] = None         # editing scenario: edit(protected) vs edit(clean)
    thumbnail: bytes = Field(b"", exclude=True)   # PNG of the first protected image (the reports')


class Cell(BaseModel):
    """One purifier on one protection's images, measured against the clean images."""

    protection: Optional[str] = None              # None when the protected images were uploaded
    purifier: str
    params: dict[str, Any] = {}
    seconds: Optional[float] = None               # None for uploaded purified images
    mean: CellMeans
    per_image: CellPerImage
    detection_auc_clean_vs_purified: float
    edit: Optional[EditComparison] = None         # editing scenario: edit(purified) vs edit(clean)
    thumbnail: bytes = Field(b"", exclude=True)   # PNG of the first purified image


class CleanSummary(BaseModel):
    consistency_error: list[float]


class BuiltInMetrics(BaseModel):
    """What a built-in kind measured; its `kind` says which (required in the schema: every answer has it)."""

    model_config = ConfigDict(json_schema_serialization_defaults_required=True)


class Evaluation(BuiltInMetrics):
    """What every evaluation holds: the model and distance it measured with, the clean images' scores,
    the purifiers' cells, the diffusion pipelines used (by kind) and the editing scenario, if any."""

    model: ModelIdentity
    perceptual: str
    clean: CleanSummary
    cells: list[Cell]
    pipelines: dict[str, PipelineIdentity] = {}
    editing: Optional[EditingSummary] = None


class MatrixResult(Evaluation):
    """The protections x purifiers matrix on the clean images (a 'none' row of clean images included)."""

    kind: Literal["matrix"] = "matrix"
    size: int
    images: list[str]
    purifiers: dict[str, MethodLabel]             # by label
    protections: dict[str, ProtectionSummary]     # by label
    clean_thumbnail: bytes = Field(b"", exclude=True)


class UploadedResult(Evaluation):
    """Protected (and purified) images made elsewhere, measured against their clean originals."""

    kind: Literal["uploaded"] = "uploaded"
    protection: ProtectionSummary


class ProtectionMetrics(BuiltInMetrics):
    """A protect job: what ran, what it promises, toward which target."""

    kind: Literal["protect"] = "protect"
    protection: MethodLabel
    stated: StatedBudget
    target: Optional[str] = None                  # the uploaded target's name
    pipelines: dict[str, PipelineIdentity] = {}


class Split(BaseModel):
    """Which works (indices into the uploaded sets) every LoRA trained on, and which clean ones scored it."""

    model_config = ConfigDict(frozen=True)

    train: list[int]
    held_out: list[int]


class MimicryScore(BaseModel):
    """What fine-tuning on one training set taught about the held-out clean images."""

    training_set: str
    final_losses: list[float]                 # training loss over the last steps
    clean_loss_base: float                    # denoising loss of the untuned UNet on the held-out clean images
    clean_loss_tuned: float                   # ... of the fine-tuned UNet
    gain: float                               # base - tuned: what training taught about the clean images
    relative_gain: Optional[float] = None     # gain / gain of training on the clean images


class MimicryMetrics(BuiltInMetrics):
    kind: Literal["mimicry"] = "mimicry"
    pipeline: PipelineIdentity
    params: MimicryParams
    split: Split
    sets: dict[str, MimicryScore]             # by training set: clean, protected, purified


BUILT_IN_METRICS = ("matrix", "uploaded", "protect", "mimicry")


class KindMetrics(BaseModel):
    """The figures of a kind a deployment registers: its own model's fields (or a dict's), kept as given."""

    # Its schema excludes the built-in kinds', so that an answer matches exactly one of Metrics' schemas.
    model_config = ConfigDict(extra="allow", json_schema_extra={
        "not": {"required": ["kind"], "properties": {"kind": {"enum": list(BUILT_IN_METRICS)}}}})

    @model_validator(mode="before")
    @classmethod
    def _fields(cls, data: Any) -> Any:
        return data.model_dump() if isinstance(data, BaseModel) and not isinstance(data, cls) else data


def _metrics_tag(value: Any) -> str:
    """Which model reads a metrics value: its built-in kind's, else KindMetrics (a registered kind's, or a
    record written before metrics said their kind)."""
    kind = value.get("kind") if isinstance(value, dict) else getattr(value, "kind", None)
    return kind if kind in BUILT_IN_METRICS else "registered"


Metrics = Annotated[Union[Annotated[MatrixResult, Tag("matrix")], Annotated[UploadedResult, Tag("uploaded")],
                          Annotated[ProtectionMetrics, Tag("protect")], Annotated[MimicryMetrics, Tag("mimicry")],
                          Annotated[KindMetrics, Tag("registered")]],
                    Discriminator(_metrics_tag)]
