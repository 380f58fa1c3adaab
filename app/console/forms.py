"""The Try page's forms, built from the app's own OpenAPI document: one form per job-submitting route
(a POST to /v1/... with a multipart body), its upload fields, and its parameters from the contract
model the route accepts (its JSON schema: types, ranges, choices, defaults, descriptions). A new
parameter, or a new job kind, appears on the page without editing it."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from pydantic import BaseModel

from impress.contract import PROTECTION_NAMES, PURIFIER_NAMES


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
    required: bool
    description: str


@dataclass(frozen=True)
class KindForm:
    kind: str                      # the job kind: the route's last path segment
    action: str                    # the route's path
    summary: str
    files: tuple[FileField, ...]
    params: tuple[ParamField, ...]


# Parameters whose values (or items) are names the engine knows (NAME or NAME:KEY=VALUE).
SUGGESTIONS = {"protection": PROTECTION_NAMES, "protections": PROTECTION_NAMES, "purifiers": PURIFIER_NAMES}
BOUNDS = (("exclusiveMinimum", ">"), ("minimum", "≥"), ("exclusiveMaximum", "<"), ("maximum", "≤"))


def _resolve(defs: dict, spec: dict) -> dict:
    """A schema with its $ref followed (OpenAPI's #/components/schemas/X or pydantic's #/$defs/X)."""
    ref = spec.get("$ref")
    return defs[ref.rsplit("/", 1)[1]] if ref else spec


def _plain(number: float) -> float:
    """1.0 as 1: the OpenAPI document writes every bound as a float."""
    return int(number) if float(number).is_integer() else number


def _text(default: Any) -> str:
    """A default as the form shows it: none is empty, a list comma-separated, a bool in JSON's words."""
    if default is None:
        return ""
    if isinstance(default, list):
        return ", ".join(_text(item) for item in default)
    return str(default).lower() if isinstance(default, bool) else str(default)


def param_field(name: str, prop: dict, defs: dict) -> ParamField:
    options = [_resolve(defs, o) for o in prop.get("anyOf", [prop])]
    typed = [o for o in options if o.get("type") != "null"]
    spec, optional = typed[0], len(typed) < len(options)
    value = _text(prop.get("default"))
    common: dict[str, Any] = dict(name=name, description=prop.get("description", ""), optional=optional, value=value)
    if "enum" in spec:
        return ParamField(widget="select", choices=tuple(str(c) for c in spec["enum"]), **common)
    if spec.get("type") == "boolean":
        return ParamField(widget="select", choices=("true", "false"), **common)
    if spec.get("type") in ("integer", "number"):
        limits = {key: _plain(spec[key]) for key, _ in BOUNDS if key in spec}
        return ParamField(widget="number", minimum=limits.get("minimum", limits.get("exclusiveMinimum")),
                          maximum=limits.get("maximum", limits.get("exclusiveMaximum")),
                          step="1" if spec["type"] == "integer" else "any",
                          bounds=", ".join(f"{sign} {limits[key]}" for key, sign in BOUNDS if key in limits), **common)
    if spec.get("type") == "array":
        items = _resolve(defs, spec.get("items", {}))
        return ParamField(widget="list", suggestions=tuple(items.get("enum", SUGGESTIONS.get(name, ()))), **common)
    # strings, and nested models sent as text (JSON)
    return ParamField(widget="text", suggestions=SUGGESTIONS.get(name, ()), **common)


def param_fields(model: type[BaseModel]) -> tuple[ParamField, ...]:
    schema = model.model_json_schema()
    return tuple(param_field(name, prop, schema.get("$defs", {})) for name, prop in schema["properties"].items())


def _is_file(prop: dict) -> bool:
    return prop.get("type") == "array" and "contentMediaType" in prop.get("items", {})


def kind_forms(openapi: dict) -> list[KindForm]:
    """One form per POST /v1/<kind> route taking multipart uploads, in the document's order."""
    defs = openapi.get("components", {}).get("schemas", {})
    forms = []
    for path, operations in openapi["paths"].items():
        post = operations.get("post", {})
        body = post.get("requestBody", {}).get("content", {}).get("multipart/form-data")
        if not path.startswith("/v1/") or body is None:
            continue
        schema = _resolve(defs, body["schema"])
        required = set(schema.get("required", ()))
        files = sorted((FileField(name, name in required, prop.get("description", ""))
                        for name, prop in schema.get("properties", {}).items() if _is_file(prop)),
                       key=lambda f: not f.required)
        # The parameters: the contract model the route's form extends (allOf), and any plain fields.
        parts = [_resolve(defs, part) for part in schema.get("allOf", [])] + [schema]
        params = tuple(param_field(name, prop, defs) for part in parts
                       for name, prop in part.get("properties", {}).items() if not _is_file(prop))
        forms.append(KindForm(kind=path.rsplit("/", 1)[1], action=path, summary=post.get("summary", ""),
                              files=tuple(files), params=params))
    return forms
