"""Workload inputs read from files: an arrival trace (``--trace``) and a replayed rate series
(``--rate-series``), both CSV. Each bad line is one ``InputError`` naming the file and line."""
from __future__ import annotations

import csv
import math

from audit_tune.basics import files
from audit_tune.basics.errors import InputError
from audit_tune.sim.workload import RateProfile


def read_rows(path: str, what: str, want: str = "CSV") -> list[tuple[int, list[str]]]:
    """The CSV rows of ``path`` with their line numbers, cells stripped; blank lines and ``#``
    comments left out. The file is read bounded (:func:`audit_tune.basics.files.read_text`)."""
    text = files.read_text(path, what, want)
    rows = []
    for lineno, row in enumerate(csv.reader(text.splitlines()), 1):
        cells = [c.strip() for c in row]
        if not "".join(cells) or cells[0].startswith("#"):
            continue
        rows.append((lineno, cells))
    return rows


def read_trace(path: str) -> tuple[tuple[float, ...], tuple[int, ...]]:
    """Arrival trace: one request per line, ``time`` (seconds from start, or unix time) and an
    optional ``instance`` column; a header line is allowed. Times are shifted to start at 0."""
    rows = read_rows(path, "--trace")
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
    rows = read_rows(path, "--rate-series")
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
