"""Shared CLI options: the Prometheus flags, generated from :class:`analysis.prom.PromSettings`.

Every command that reads Prometheus (``tune snapshot``, ``tune recommend``) gets the same flags,
named as Robusta KRR names them, by decorating it::

    @prometheus_options
    def snapshot(prom: PromSettings, output: str = typer.Option(...)) -> int:
        client = PromClient(prom.validate())

The decorator replaces the ``prom`` parameter by one Typer option per settings field (flags, help
and panel from the field metadata) and rebuilds the :class:`PromSettings` before calling the command.
Pass ``require_url=False`` to :meth:`PromSettings.validate` when the command can also work offline.
"""
from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from typing import Any, Callable, Optional

import typer

from audit_tune.analysis.prom import PromSettings

_PARAM = "prom"


def _option_fields() -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(PromSettings) if not f.metadata.get("internal")]


def _annotation(f: dataclasses.Field) -> Any:
    hints = typing.get_type_hints(PromSettings)
    t = hints[f.name]
    if t is bool:
        return bool
    if t is int:
        return int
    if typing.get_origin(t) is list:
        return list[str]
    if t is str:
        return str
    return Optional[str]


# What an option field of PromSettings holds (its internal fields are no options).
OptionDefault = str | bool | int | list[str] | None


def _default(f: dataclasses.Field) -> OptionDefault:
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        value = f.default_factory()  # type: ignore[misc]
    else:
        value = f.default
    if value is not None and not isinstance(value, (str, bool, int, list)):
        raise TypeError(f"PromSettings.{f.name}: a default of type {type(value).__name__} cannot be a CLI option")
    return value


def prometheus_options(fn: Callable[..., int]) -> Callable[..., int]:
    """Decorator: expose :class:`PromSettings` fields as options; pass the settings as ``prom``."""
    sig = inspect.signature(fn)
    if _PARAM not in sig.parameters:
        raise TypeError(f"{fn.__name__} needs a '{_PARAM}: PromSettings' parameter")
    fields = _option_fields()
    extra = []
    for f in fields:
        md = f.metadata
        default = _default(f)
        opt = typer.Option(default, *md["flags"], help=md["help"], rich_help_panel=md["panel"],
                           envvar=md.get("envvar"), metavar=md.get("metavar"), show_default=bool(default) and not isinstance(default, list))
        extra.append(inspect.Parameter(f"prom_{f.name}", inspect.Parameter.KEYWORD_ONLY, default=opt,
                                       annotation=_annotation(f)))
    params = [p for p in sig.parameters.values() if p.name != _PARAM]
    # keep VAR/ctx params first; all of ours are keyword-only
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    kwonly = [p for p in params if p.kind == p.KEYWORD_ONLY]
    new_params = [p.replace(kind=p.POSITIONAL_OR_KEYWORD) for p in positional] + \
                 [p.replace(kind=p.KEYWORD_ONLY) for p in kwonly] + extra

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> int:
        values = {f.name: kwargs.pop(f"prom_{f.name}") for f in fields if f"prom_{f.name}" in kwargs}
        if "headers" in values and values["headers"] is None:
            values["headers"] = []
        kwargs[_PARAM] = PromSettings(**values)
        return fn(*args, **kwargs)

    wrapper.__signature__ = sig.replace(parameters=new_params)  # type: ignore[attr-defined]
    ann = dict(getattr(fn, "__annotations__", {}))
    ann.pop(_PARAM, None)
    for p in extra:
        ann[p.name] = p.annotation
    wrapper.__annotations__ = ann
    return wrapper
