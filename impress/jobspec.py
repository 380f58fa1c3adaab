"""What a job kind is, declared once: a `JobSpec` (its parameters, its inputs, its queue, its step
count, its handler, its result) and the registry of every kind the service runs.

Everything else derives from the registry: the submit routes (app/routes/submit.py), the queue of a
job (impress.queue), the record's parameter model (impress.store), the one iteration-limit check
(`over_limit`) and the handler a worker runs (worker/runner.py, by the spec's `handler` path).

A module of kinds lists its specs in `JOB_KINDS`. The built-in kinds are impress/kinds.py's; a
deployment adds its own by naming their modules in IMPRESS_JOB_KINDS, which the API and every worker
load at start (docs/architecture.md, "Adding a job kind").
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Callable, Generic, Iterable, Literal, Optional, TypeVar

from pydantic import BaseModel

from .records import InputRole, JobResult
from .settings import Settings

P = TypeVar("P", bound=BaseModel)

# Which queue serves a kind: the GPU work queue (IMPRESS_QUEUE) or the light triage queue
# (IMPRESS_DETECT_QUEUE, one forward pass, never behind a purification).
QueueClass = Literal["gpu", "triage"]


@dataclass(frozen=True)
class InputSlot:
    """One role of input image a kind takes, and how many: the route's file field of that name."""

    role: InputRole
    description: str
    required: bool = False                # at least one (else the request has none of this role)
    most: Optional[int] = None            # at most this many (besides the service's per-job limit)
    per: Optional[InputRole] = None       # one per image of that role, in the same order
    needs: Optional[InputRole] = None     # only together with images of that role
    urls: bool = False                    # may also come as `image_url` fields (fetched by the API)
    field: str = ""                       # the multipart field, when not the role's name

    @property
    def name(self) -> str:
        return self.field or self.role.value

    def count_error(self, counts: dict[InputRole, int]) -> Optional[str]:
        """Why the request's number of images of this role is refused, or None."""
        n, noun = counts.get(self.role, 0), "images" if self.role == InputRole.image else f"{self.role.value} images"
        if self.most is not None and n > self.most:
            return f"{n} {noun} sent; send at most {self.most}"
        if self.per is not None and n and n != counts.get(self.per, 0):
            return (f"{n} {noun} for {counts.get(self.per, 0)} {self.per.value} ones: send one per "
                    f"{self.per.value} image, in the same order")
        if self.needs is not None and n and not counts.get(self.needs, 0):
            return f"{noun} need their {self.needs.value} images too"
        return None


@dataclass(frozen=True)
class StepCount:
    """Optimisation steps one part of a job runs, named as the caller set them (for the limit's error)."""

    field: str     # the form field that sets it
    label: str     # what runs that many steps, e.g. "iters" or "protection 'mist-16': steps"
    count: int


def no_steps(_params: BaseModel) -> list[StepCount]:
    return []


def no_check(_params: BaseModel, _counts: dict[InputRole, int], _settings: Settings) -> None:
    return None


@dataclass(frozen=True)
class JobSpec(Generic[P]):
    """One job kind. `form` is what a caller sends (default: `params`); `resolve` turns it into
    `params`, exactly what the record keeps and the handler runs."""

    kind: str
    params: type[P]
    handler: str                                   # "module:function" the worker runs (worker/handlers/)
    inputs: tuple[InputSlot, ...]
    summary: str                                   # the submit route's one line in the API's document
    description: str = ""
    queue: QueueClass = "gpu"
    steps: Callable[[P], list[StepCount]] = no_steps      # what IMPRESS_MAX_ITERATIONS holds
    check: Callable[[P, dict[InputRole, int], Settings], None] = no_check   # ValueError: rules across fields, inputs
    #                                                                         and the service's configuration
    form: Optional[type[BaseModel]] = None
    resolve: Optional[Callable[..., P]] = None     # (form, settings) -> params, when `form` is not `params`
    preset: Callable[[P], Optional[str]] = field(default=lambda _params: None)   # the preset picking its VAE
    result: type[JobResult] = JobResult
    answer_inline: bool = False    # small requests wait for the result (IMPRESS_DETECT_SYNC_*): 200 with the job

    @property
    def form_model(self) -> type[BaseModel]:
        return self.form or self.params

    def input(self, role: InputRole) -> Optional[InputSlot]:
        return next((slot for slot in self.inputs if slot.role == role), None)


def over_limit(spec: JobSpec, params: BaseModel, max_iterations: int) -> list[StepCount]:
    """The one iteration-limit check of every kind: the parts of the job that run more steps than
    IMPRESS_MAX_ITERATIONS allows (none: the job may run)."""
    return [count for count in spec.steps(params) if count.count > max_iterations]


class UnknownJobKind(KeyError):
    pass


BUILT_IN_KINDS = "impress.kinds"
JOB_SPECS: dict[str, JobSpec] = {}   # this process's registry: kind -> spec


def register(spec: JobSpec) -> JobSpec:
    """Add a kind to this process's registry. A second spec of the same kind must name the same handler
    (the same module loaded again); two different kinds of one name are a configuration error."""
    known = JOB_SPECS.get(spec.kind)
    if known is not None and known.handler != spec.handler:
        raise ValueError(f"job kind {spec.kind!r} is declared twice: handlers {known.handler} and {spec.handler}")
    JOB_SPECS[spec.kind] = spec
    return spec


def load_job_kinds(modules: Iterable[str] = ()) -> list[JobSpec]:
    """Register the built-in kinds and the `JOB_KINDS` of each named module; returns every kind known."""
    for name in (BUILT_IN_KINDS, *modules):
        for spec in importlib.import_module(name).JOB_KINDS:
            register(spec)
    return list(JOB_SPECS.values())


def job_spec(kind: str) -> JobSpec:
    if kind not in JOB_SPECS:
        load_job_kinds()   # the built-in kinds, on first use
    try:
        return JOB_SPECS[kind]
    except KeyError:
        raise UnknownJobKind(f"no job kind {kind!r} (known: {', '.join(JOB_SPECS)}; others come from the "
                             "modules named in IMPRESS_JOB_KINDS)") from None
