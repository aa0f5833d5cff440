"""The output-format registry: formatters registered per result type (KRR's ``formatters`` model).

A result type (a dataclass such as ``RecommendationReport``) gets its formats with::

    @register(RecommendationReport, "flags")
    def flags(report: RecommendationReport) -> str: ...

and ``render(result, "flags")`` finds the formatter of the result's type (or of a base class).
``json`` and ``yaml`` are the edge where a result becomes plain data: every result type that has
``to_dict`` renders in both without registering them. ``json_default`` is the encoder those use.
"""
from __future__ import annotations

import json
import numbers
from collections.abc import Callable
from typing import Protocol, TypeVar

import yaml

from audit_tune.basics.errors import InputError

R = TypeVar("R")
Formatter = Callable[[R], str]

_REGISTRY: dict[type, dict[str, Callable[[object], str]]] = {}


class HasToDict(Protocol):
    def to_dict(self) -> dict[str, object]: ...


def register(result_type: type[R], name: str) -> Callable[[Formatter[R]], Formatter[R]]:
    """Register ``fn`` as the ``name`` format of ``result_type``."""

    def deco(fn: Formatter[R]) -> Formatter[R]:
        _REGISTRY.setdefault(result_type, {})[name] = fn  # type: ignore[assignment]
        return fn

    return deco


def json_default(o: object) -> object:
    """``json.dumps(default=...)`` for numpy scalars and arrays, and objects with ``to_dict``.

    numpy's scalar types register as :mod:`numbers` ABCs and its arrays have ``tolist``, so the
    basics need not import numpy."""
    if isinstance(o, numbers.Integral):
        return int(o)
    if isinstance(o, numbers.Real):
        return float(o)
    tolist = getattr(o, "tolist", None)
    if callable(tolist):
        return tolist()
    to_dict = getattr(o, "to_dict", None)
    if callable(to_dict):
        return to_dict()
    raise TypeError(f"not serialisable: {type(o).__name__}")


def to_json(data: object) -> str:
    """The JSON edge: two-space indent, keys in the result's order, a final newline."""
    return json.dumps(data, indent=2, sort_keys=False, default=json_default) + "\n"


def to_yaml(data: object) -> str:
    """The YAML edge: the JSON document as block YAML, keys in the result's order."""
    return yaml.safe_dump(json.loads(json.dumps(data, default=json_default)), sort_keys=False)


_EDGE: dict[str, Callable[[object], str]] = {"json": to_json, "yaml": to_yaml}


def formats_of(result_type: type) -> dict[str, Callable[[object], str]]:
    """Every format ``result_type`` renders in: ``json``, ``yaml`` and the ones registered for it
    or a base class (the nearest registration wins)."""
    out: dict[str, Callable[[object], str]] = {}
    if hasattr(result_type, "to_dict"):
        out.update(_EDGE)
    for base in reversed(result_type.__mro__):
        out.update(_REGISTRY.get(base, {}))
    return out


def registered_types() -> list[type]:
    """Result types with at least one registered formatter."""
    return list(_REGISTRY)


def render(result: object, fmt: str) -> str:
    """``result`` in format ``fmt``; exit 1 naming the formats when it has no such format."""
    fns = formats_of(type(result))
    if fmt not in fns:
        raise InputError(f"--format {fmt}: unknown format; use one of {', '.join(sorted(fns))}")
    return fns[fmt](result)
