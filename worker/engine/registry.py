"""Named methods with default parameters (protections, purifiers): one way to pick and configure them."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class MethodSpec:
    name: str
    params: dict = field(default_factory=dict)


def make_spec(registry: dict, kind: str, name: str, overrides: dict) -> MethodSpec:
    """`name` from `registry` with its defaults, some replaced. Unknown names and parameters are errors."""
    if name not in registry:
        raise ValueError(f"unknown {kind} {name!r}: {', '.join(registry)}")
    defaults = registry[name].defaults
    unknown = set(overrides) - set(defaults)
    if unknown:
        raise ValueError(f"{kind} {name!r} has no parameter {', '.join(sorted(unknown))}: {', '.join(defaults)}")
    return MethodSpec(name, {**defaults, **overrides})
