"""Durations and sizes with units, parsed and printed the way Kubernetes users write them.

Durations accept Go's ``time.ParseDuration`` syntax (``30s``, ``1m30s``, ``200ms``, ``1.5h``)
plus ``d`` and ``w`` for history windows (``7d``). They are printed back with Go's
``time.Duration.String`` format, so a flag we print (``--audit-webhook-batch-max-wait=30s``)
is byte-for-byte what kube-apiserver would show.

Sizes accept plain bytes (``1200``), SI (``1.5KB`` = 1500) and binary (``1.5KiB`` = 1536)
suffixes, case-insensitive on the ``b``.
"""
from __future__ import annotations

import math
import re

from audit_tune.basics.errors import InputError

_DUR_UNITS = {
    "ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3,
    "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0,
}
_DUR_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h|d|w)")


def parse_duration(text: str | float | int, what: str = "duration", allow_negative: bool = False) -> float:
    """Parse ``text`` to seconds. A bare number is seconds. Raises :class:`InputError` naming ``what``."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = float(text)
    else:
        s = str(text).strip()
        if not s:
            raise InputError(f"{what}: empty duration; use e.g. 30s, 200ms, 1m30s, 7d")
        sign = 1.0
        if s[0] in "+-":
            sign = -1.0 if s[0] == "-" else 1.0
            s = s[1:]
        if s == "0":
            value = 0.0
        else:
            try:
                value = sign * float(s)
            except ValueError:
                pos, total = 0, 0.0
                for m in _DUR_RE.finditer(s):
                    if m.start() != pos:
                        break
                    total += float(m.group(1)) * _DUR_UNITS[m.group(2)]
                    pos = m.end()
                if pos != len(s) or pos == 0:
                    raise InputError(
                        f"{what}: {text!r} is not a duration; use e.g. 30s, 200ms, 1m30s, 7d"
                    ) from None
                value = sign * total
    if not math.isfinite(value):
        raise InputError(f"{what}: {text!r} is not a finite duration")
    if value < 0 and not allow_negative:
        raise InputError(f"{what}: {text!r} is negative; it must be >= 0s")
    return value


def format_duration(seconds: float) -> str:
    """Format like Go's ``time.Duration.String``: ``30s``, ``1m30s``, ``200ms``, ``1h0m0s``, ``0s``."""
    ns = int(round(seconds * 1e9))
    if ns == 0:
        return "0s"
    neg = ns < 0
    ns = abs(ns)
    if ns < 1_000_000_000:
        if ns < 1_000:
            out = f"{ns}ns"
        elif ns < 1_000_000:
            out = _trim(ns / 1e3) + "µs"
        else:
            out = _trim(ns / 1e6) + "ms"
    else:
        h, rem = divmod(ns, 3_600_000_000_000)
        m, rem = divmod(rem, 60_000_000_000)
        sec = _trim(rem / 1e9)
        if h:
            out = f"{h}h{m}m{sec}s"
        elif m:
            out = f"{m}m{sec}s"
        else:
            out = f"{sec}s"
    return ("-" if neg else "") + out


def _trim(x: float) -> str:
    s = f"{x:.9f}".rstrip("0").rstrip(".")
    return s or "0"


_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)
_SIZE_MULT = {"": 1, "b": 1}
for _i, _p in enumerate("kmgt", start=1):
    _SIZE_MULT[_p] = _SIZE_MULT[_p + "b"] = 1000 ** _i
    _SIZE_MULT[_p + "i"] = _SIZE_MULT[_p + "ib"] = 1024 ** _i


def parse_size(text: str | int | float, what: str = "size") -> int:
    """Parse a byte size (``1.5KiB`` -> 1536, ``10MB`` -> 10000000, ``400`` -> 400)."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        if text < 0 or not math.isfinite(text):
            raise InputError(f"{what}: {text!r} must be a non-negative size")
        return int(round(text))
    m = _SIZE_RE.match(str(text))
    if not m:
        raise InputError(f"{what}: {text!r} is not a size; use e.g. 1200, 1.5KiB, 10MiB, 12MB")
    unit = (m.group(2) or "").lower()
    return int(round(float(m.group(1)) * _SIZE_MULT[unit]))


def format_size(n: float) -> str:
    """Human size with binary units, e.g. ``1.5 KiB``, ``12 MiB``."""
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.3g} {unit}"
        n /= 1024
    return f"{n} B"  # pragma: no cover


def parse_rate(text: str | float | int, what: str = "rate") -> float:
    """Parse a rate in per-second units (``5000``, ``5k``, ``1.2k``)."""
    s = str(text).strip().lower().removesuffix("/s")
    mult = 1.0
    if s.endswith("k"):
        mult, s = 1e3, s[:-1]
    elif s.endswith("m"):
        mult, s = 1e6, s[:-1]
    try:
        v = float(s) * mult
    except ValueError:
        raise InputError(f"{what}: {text!r} is not a rate; use e.g. 5000 or 5k (per second)") from None
    if v < 0 or not math.isfinite(v):
        raise InputError(f"{what}: {text!r} must be a finite rate >= 0")
    return v
