"""The Try page's forms, built from the contract's parameter models (their JSON schema: types,
ranges, choices, defaults, descriptions), so a new parameter appears on the page without editing it."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from pydantic import BaseModel

from impress.contract import (PROTECTION_NAMES, PURIFIER_NAMES, DetectParams, EvaluateParams, InputRole, JobKind,
                              PurifyOverrides)


@dataclass(frozen=True)
class ParamField:
    """One form control. An empty value is not sent, so the service's default applies."""

    name: str
    widget: str                    # select, number, list (comma-separated, sent as repeated fields), text
    description: str = ""
    choices: tuple[str, ...] = ()
    optional: bool = True          # a select offers "default" (nothing sent)
    value: str = ""                # prefilled: the model's default, when it has one
    minimum: Optional[float] = None
    maximum: Optional[float] = None
    step: str = "any"
    bounds: str = ""               # the range as text, e.g. "> 0, ≤ 1"
    suggestions: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return self.name.replace("_", " ")


@dataclass(frozen=True)
class FileField:
    name: str                      # the multipart field
    role: InputRole                # what the API names in an upload error's details
    required: bool
    description: str


@dataclass(frozen=True)
class KindForm:
    kind: JobKind
    route: str                     # name of the submit route (its path comes from the app)
    summary: str
    files: tuple[FileField, ...]
    params: tuple[ParamField, ...]


# List parameters whose items are names the engine knows (NAME or NAME:KEY=VALUE).
SUGGESTIONS = {"protections": PROTECTION_NAMES, "purifiers": PURIFIER_NAMES}


def _resolve(schema: dict, spec: dict) -> dict:
    ref = spec.get("$ref")
    return schema["$defs"][ref.rsplit("/", 1)[1]] if ref else spec


BOUNDS = (("exclusiveMinimum", ">"), ("minimum", "≥"), ("exclusiveMaximum", "<"), ("maximum", "≤"))


def param_field(name: str, prop: dict, schema: dict) -> ParamField:
    options = [_resolve(schema, o) for o in prop.get("anyOf", [prop])]
    typed = [o for o in options if o.get("type") != "null"]
    spec, optional = typed[0], len(typed) < len(options)
    default = prop.get("default")
    value = "" if default is None or default == [] else str(default).lower() if isinstance(default, bool) else str(default)
    common: dict[str, Any] = dict(name=name, description=prop.get("description", ""), optional=optional, value=value)
    if "enum" in spec:
        return ParamField(widget="select", choices=tuple(str(c) for c in spec["enum"]), **common)
    if spec.get("type") == "boolean":
        return ParamField(widget="select", choices=("true", "false"), **common)
    if spec.get("type") in ("integer", "number"):
        return ParamField(widget="number", minimum=spec.get("minimum", spec.get("exclusiveMinimum")),
                          maximum=spec.get("maximum", spec.get("exclusiveMaximum")),
                          step="1" if spec["type"] == "integer" else "any",
                          bounds=", ".join(f"{sign} {spec[key]}" for key, sign in BOUNDS if key in spec), **common)
    if spec.get("type") == "array":
        return ParamField(widget="list", suggestions=SUGGESTIONS.get(name, ()), **common)
    return ParamField(widget="text", **common)


def param_fields(model: type[BaseModel]) -> tuple[ParamField, ...]:
    schema = model.model_json_schema()
    return tuple(param_field(name, prop, schema) for name, prop in schema["properties"].items())


def kind_form(kind: JobKind, model: type[BaseModel], summary: str, files: tuple[FileField, ...]) -> KindForm:
    return KindForm(kind=kind, route=f"submit_{kind.value}", summary=summary, files=files, params=param_fields(model))


IMAGES = FileField("images", InputRole.image, True, "one or more images")
# One entry per job kind the API accepts: its parameter model and its upload fields.
KIND_FORMS: tuple[KindForm, ...] = (
    kind_form(JobKind.purify, PurifyOverrides, "IMPRESS purification: optimise each image back to consistency",
              (IMAGES,)),
    kind_form(JobKind.detect, DetectParams, "Triage: each image's consistency error against the threshold",
              (IMAGES,)),
    kind_form(JobKind.evaluate, EvaluateParams, "Measure clean / protected / purified images; the report inline",
              (FileField("clean", InputRole.clean, True, "clean originals"),
               FileField("protected", InputRole.protected, False, "protected images, in the order of clean"),
               FileField("purified", InputRole.purified, False, "purified images, in the order of clean"))),
)
