"""Workload inputs read from files: an arrival trace (``--trace``) and a replayed rate series
(``--rate-series``), both CSV. Each bad line is one ``InputError`` naming the file and line."""
from __future__ import annotations

import csv
import math
from pathlib import Path

from audit_tune.basics.errors import InputError
from audit_tune.sim.workload import RateProfile


def _read_rows(path: str, what: str) -> list[tuple[int, list[str]]]:
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise InputError(f"{what} {path}: cannot read ({e.strerror})") from None
    except UnicodeDecodeError as e:
        raise InputError(f"{what} {path}: not UTF-8 text (byte {e.start}); want CSV") from None
    if "\x00" in text:
        raise InputError(f"{what} {path}: contains a NUL byte (binary file?); want CSV")
    rows = []
    for lineno, row in enumerate(csv.reader(text.splitlines()), 1):
        if not row or row[0].strip().startswith("#"):
            continue
        rows.append((lineno, [c.strip() for c in row]))
    return rows


def read_trace(path: str) -> tuple[tuple[float, ...], tuple[int, ...]]:
    """Arrival trace: one request per line, ``time`` (seconds from start, or unix time) and an
    optional ``instance`` column; a header line is allowed. Times are shifted to start at 0."""
    rows = _read_rows(path, "--trace")
    times: list[float] = []
    insts: list[int] = []
    for row in rows:
        lineno, cols = row
        if not times and not insts and cols and _is_header(cols[0]):
            continue
        try:
            t = float(cols[0])
        except (ValueError, IndexError):
            raise InputError(f"--trace {path}:{lineno}: {cols[0] if cols else ''!r} is not a time in seconds") from None
        if not math.isfinite(t) or t < 0:
            raise InputError(f"--trace {path}:{lineno}: time {cols[0]!r} must be finite and >= 0")
        if times and t < times[-1]:
            raise InputError(f"--trace {path}:{lineno}: time {t} goes backwards (previous {times[-1]}); sort the trace")
        times.append(t)
        if len(cols) > 1 and cols[1] != "":
            try:
                insts.append(int(cols[1]))
            except ValueError:
                raise InputError(f"--trace {path}:{lineno}: instance {cols[1]!r} is not an integer") from None
    if not times:
        raise InputError(f"--trace {path}: no arrivals found; expected lines like '0.125' or '0.125,1'")
    if insts and len(insts) != len(times):
        raise InputError(f"--trace {path}: the instance column must be on every line or none")
    t0 = times[0] if times[0] > 1e8 else 0.0  # unix timestamps are shifted to start at 0
    return tuple(t - t0 for t in times), tuple(insts)


def read_rate_series(path: str) -> RateProfile:
    """Rate series: ``timestamp,rate`` per line (seconds from start or unix time; requests/s)."""
    rows = _read_rows(path, "--rate-series")
    ts: list[float] = []
    rs: list[float] = []
    for row in rows:
        lineno, cols = row
        if not ts and cols and _is_header(cols[0]):
            continue
        if len(cols) < 2:
            raise InputError(f"--rate-series {path}:{lineno}: expected 'timestamp,rate'")
        try:
            t, r = float(cols[0]), float(cols[1])
        except ValueError:
            raise InputError(f"--rate-series {path}:{lineno}: {','.join(cols[:2])!r} is not 'timestamp,rate' numbers") from None
        if not (math.isfinite(t) and math.isfinite(r)) or r < 0:
            raise InputError(f"--rate-series {path}:{lineno}: rate must be finite and >= 0")
        if ts and t <= ts[-1]:
            raise InputError(f"--rate-series {path}:{lineno}: timestamps must increase")
        ts.append(t)
        rs.append(r)
    if not ts:
        raise InputError(f"--rate-series {path}: no rows found; expected lines like '0,1200'")
    t0 = ts[0]
    return RateProfile(tuple(t - t0 for t in ts), tuple(rs), "step")


def _is_header(cell: str) -> bool:
    try:
        float(cell)
        return False
    except ValueError:
        return True
