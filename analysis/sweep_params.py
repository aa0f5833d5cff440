"""Sweep parameters: the names a sweep spec may vary (kube-apiserver audit flags and the workload /
receiver options of ``tune simulate``), the kind of each, and checking and formatting a value the
way its option will parse it.
"""
from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import TypeAlias

from audit_tune.basics.errors import InputError
from audit_tune.basics.jsondata import JsonValue
from audit_tune.sim.config import FLAGS_BY_NAME, parse_bool, parse_dur, parse_float32, parse_int
from audit_tune.sim.units import parse_duration, parse_rate, parse_size

#: A parameter value as the spec file (YAML or JSON) or the command line gives it: a scalar, or a
#: list for list options (``omit-stages``, ``webhook-outage``, ``backends``, ``weights``).
ParamValue: TypeAlias = JsonValue

# name -> (kind, target); target is (object, field) for WorkloadOptions ("w") / ReceiverOptions ("r"),
# or a special marker handled in build_point.
OPTIONS: dict[str, tuple[str, tuple[str, str]]] = {
    "rate": ("rate", ("w", "rate")),
    "request-rate": ("rate", ("w", "request_rate")),
    "duration": ("duration", ("w", "duration")),
    "arrivals": ("str", ("w", "arrivals")),
    "profile": ("str", ("w", "profile")),
    "ramp": ("bool", ("w", "ramp")),
    "burst": ("str", ("w", "burst")),
    "burst-on": ("rate", ("burst", "on")),
    "burst-off": ("rate", ("burst", "off")),
    "burst-mean-on": ("duration", ("burst", "mean-on")),
    "burst-mean-off": ("duration", ("burst", "mean-off")),
    "trace": ("path", ("w", "trace")),
    "rate-series": ("path", ("w", "rate_series")),
    "instances": ("int", ("w", "instances")),
    "weights": ("str", ("w", "weights")),
    "event-size": ("size", ("w", "event_size")),
    "level": ("str", ("w", "level")),
    "omit-stages": ("list", ("w", "omit_stages")),
    "long-running-fraction": ("float", ("w", "long_running_fraction")),
    "watch-duration": ("duration", ("w", "watch_duration")),
    "request-duration": ("duration", ("w", "request_duration")),
    "webhook-latency": ("str", ("r", "latency")),
    "webhook-latency-per-kib": ("duration", ("r", "per_kib")),
    "webhook-latency-per-inflight": ("duration", ("r", "per_inflight")),
    "webhook-failure-rate": ("float", ("r", "failure_rate")),
    "webhook-error-status": ("int", ("r", "error_status")),
    "webhook-outage": ("list", ("r", "outages")),
    "webhook-max-body": ("size", ("r", "max_body")),
    "log-write-latency": ("str", ("r", "log_write_latency")),
    "log-failure-rate": ("float", ("r", "log_failure_rate")),
    "backends": ("list", ("s", "backends")),
    "drain": ("bool", ("s", "drain")),
}
NUMERIC = ("rate", "duration", "int", "float", "size")
BURST_KEYS = ("on", "off", "mean-on", "mean-off")


def _flag_kind(name: str) -> str:
    p = FLAGS_BY_NAME[name].parse
    kinds: dict[Callable[[str, str], object], str] = {parse_int: "int", parse_float32: "float",
                                                       parse_dur: "duration", parse_bool: "bool"}
    return kinds.get(p, "str")


def canonical(key: JsonValue) -> str:
    """``--audit-x`` / ``audit_x`` / ``webhook_latency`` -> the canonical name, or InputError."""
    if not isinstance(key, str) or not key.strip("-"):
        raise InputError(f"{key!r}: a parameter name must be a string")
    name = key.strip().lstrip("-").replace("_", "-")
    if name.startswith("audit-"):
        if name not in FLAGS_BY_NAME:
            close = difflib.get_close_matches(name, FLAGS_BY_NAME, n=1)
            hint = f"; did you mean --{close[0]}?" if close else ""
            raise InputError(f"--{name}: unknown audit flag{hint}")
        return name
    if name not in OPTIONS:
        close = difflib.get_close_matches(name, OPTIONS, n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        raise InputError(f"{key}: unknown parameter; {hint}use an --audit-* flag or one of {', '.join(OPTIONS)}")
    return name


def kind_of(name: str) -> str:
    return _flag_kind(name) if name.startswith("audit-") else OPTIONS[name][0]


def is_flag(name: str) -> bool:
    return name.startswith("audit-")


def numeric_value(name: str, value: ParamValue) -> float | None:
    """The value as a number for ordering (durations in seconds, sizes in bytes), or None."""
    kind = kind_of(name)
    if not isinstance(value, (str, int, float)):
        return None
    try:
        if kind == "rate":
            return parse_rate(value, name)
        if kind == "duration":
            return parse_duration(value, name)
        if kind == "size":
            return float(parse_size(value, name))
        if kind in ("int", "float"):
            if isinstance(value, bool):
                return None
            return float(value)
    except (InputError, TypeError, ValueError):
        return None
    return None


def check_value(name: str, value: ParamValue) -> None:
    """Parse one value the way its option will be parsed (InputError names the value)."""
    kind = kind_of(name)
    if is_flag(name):
        FLAGS_BY_NAME[name].parse(name, fmt_value(value))
        return
    if kind in ("rate", "duration", "size", "int", "float") and numeric_value(name, value) is None:
        raise InputError(f"{name}: {value!r} is not a valid {kind}")
    if kind == "int" and isinstance(value, (str, int, float)) and float(value) != int(float(value)):
        raise InputError(f"{name}: {value!r} is not an integer")
    if kind == "bool" and not isinstance(value, bool) and str(value).lower() not in ("true", "false"):
        raise InputError(f"{name}: {value!r} is not a boolean; use true or false")
    if kind == "list" and not isinstance(value, (str, list)):
        raise InputError(f"{name}: {value!r}: expected a string or a list of strings")


def fmt_value(v: ParamValue) -> str:
    """A value as the flag parser and the simulate options read it (``true``, ``100``, ``0.5``)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return str(int(v)) if v.is_integer() and abs(v) < 1e15 else repr(v)
    return str(v)
