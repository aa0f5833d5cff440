"""The load test's per-request trace (bounded numpy arrays) and its run record (JSON).

:class:`Trace` keeps, per request, in preallocated arrays (about 24 bytes a request; at most
``capacity`` requests, further requests are counted in ``overflow`` only):

=============  =======  ==========================================================
``sched``      float64  scheduled offset (s from the start of the measured window)
``send``       float64  when the request was actually handed to the HTTP client
``latency``    float64  send -> response fully read (watch: -> stream closed); CLOCK_MONOTONIC, so µs exact
``status``     int16    HTTP status; 0 transport error, -2 timeout, -3 cancelled, -1 never sent
``verb``       int8     index in :data:`loadgen.mix.VERBS`
``resource``   int8     index in :data:`loadgen.mix.RESOURCES`
=============  =======  ==========================================================

:func:`summarize` turns it into the record's numbers: requested vs achieved rate, send lag
(``send - sched``, the generator's own delay), latency percentiles overall and by verb, status
codes, and a *kept up* verdict. :func:`write_record` writes the record atomically; the trace
goes inline when it is small (``trace_inline_max`` rows) and to a CSV sidecar
(``RECORD.trace.csv``: ``offset,send_offset,verb,resource,status,latency``) otherwise.

Record format (``"format": "audit-tune-loadtest/v1"``)::

    {"format", "tool_version", "run_id", "config": {...}, "target": {...},
     "window": {"start_unix", "end_unix", "duration_s"},
     "load": {"requested_rate", "peak_rate", "scheduled", "sent", "completed", "achieved_rate",
              "achieved_ratio", "kept_up", "behind_reason"},
     "lag_s": {p50, p90, p99, max}, "latency_s": {count, mean, p50, p90, p99, max},
     "latency_by_verb_s": {verb: {...}}, "latency_us": {...}, "lag_us": {...},
     "latency_histogram_us": [[lower_us, count], ...], "workers": [{per-worker figures}], "status_codes": {"200": n, ...}, "status_by_verb": {...},
     "client_cpu_s", "audit": {... apiserver /metrics deltas ...}, "sink": {...} | null,
     "flags": {...} | null, "cleanup": {...}, "trace": [...] | {"sidecar": "FILE", "rows": n}}
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from audit_tune.basics.output import json_default, write_atomic
from audit_tune.loadgen.mix import RESOURCES, VERBS

FORMAT = "audit-tune-loadtest/v1"
ST_UNSENT, ST_ERROR, ST_TIMEOUT, ST_CANCELLED = -1, 0, -2, -3
STATUS_NAMES = {ST_UNSENT: "unsent", ST_ERROR: "error", ST_TIMEOUT: "timeout", ST_CANCELLED: "cancelled"}


class Trace:
    """Per-request arrays; ``n`` rows used. Indices are handed out in schedule order."""

    def __init__(self, capacity: int) -> None:
        cap = max(1, int(capacity))
        self.sched = np.zeros(cap, dtype=np.float64)
        self.send = np.full(cap, np.nan, dtype=np.float64)
        self.latency = np.full(cap, np.nan, dtype=np.float64)
        self.status = np.full(cap, ST_UNSENT, dtype=np.int16)
        self.verb = np.zeros(cap, dtype=np.int8)
        self.resource = np.zeros(cap, dtype=np.int8)
        self.n = 0
        self.overflow = 0

    @property
    def capacity(self) -> int:
        return len(self.sched)

    def add(self, sched: float, verb: int, resource: int) -> int:
        """Reserve a row; returns -1 (and counts overflow) when full."""
        if self.n >= len(self.sched):
            self.overflow += 1
            return -1
        i = self.n
        self.sched[i] = sched
        self.verb[i] = verb
        self.resource[i] = resource
        self.n += 1
        return i

    def view(self) -> dict[str, np.ndarray]:
        n = self.n
        return {"sched": self.sched[:n], "send": self.send[:n], "latency": self.latency[:n],
                "status": self.status[:n], "verb": self.verb[:n], "resource": self.resource[:n]}


def percentiles(x: np.ndarray) -> dict[str, float | int | None]:
    x = np.asarray(x, dtype=np.float64)
    x = x[np.isfinite(x)]
    if len(x) == 0:
        return {"count": 0, "mean": None, "p50": None, "p90": None, "p99": None, "max": None}
    p = np.percentile(x, [50, 90, 99])
    return {"count": int(len(x)), "mean": float(x.mean()), "p50": float(p[0]), "p90": float(p[1]),
            "p99": float(p[2]), "max": float(x.max())}


HIST_SUB_BITS = 7


def _bucket_lower(us: np.ndarray) -> np.ndarray:
    """Lower edge (µs) of each value's bucket: 1 µs wide below 256 µs, then 128 buckets per
    power of two (each under 0.8% of its value wide), like HdrHistogram with 2 significant digits."""
    us = np.maximum(np.asarray(us, dtype=np.int64), 0)
    shift = np.maximum(np.floor(np.log2(np.maximum(us, 1))).astype(np.int64) - HIST_SUB_BITS, 0)
    return (us >> shift) << shift


def latency_histogram(seconds: np.ndarray) -> list[list[int]]:
    """Sparse ``[[lower_us, count], ...]`` (ascending) of the finite latencies; adds exactly across workers."""
    x = np.asarray(seconds, dtype=np.float64)
    x = x[np.isfinite(x)]
    if len(x) == 0:
        return []
    lower, count = np.unique(_bucket_lower(np.rint(x * 1e6)), return_counts=True)
    return [[int(a), int(b)] for a, b in zip(lower, count)]


def merge_histograms(hists: list[list[list[int]]]) -> list[list[int]]:
    """Bucket-wise sum of :func:`latency_histogram` outputs."""
    acc: dict[int, int] = {}
    for h in hists:
        for lower, count in h:
            acc[lower] = acc.get(lower, 0) + count
    return [[k, acc[k]] for k in sorted(acc)]


def percentiles_us(seconds: np.ndarray) -> dict[str, int | None]:
    """count, p50, p90, p99, p99.9 and max in whole microseconds (exact, from the raw values)."""
    x = np.asarray(seconds, dtype=np.float64)
    x = x[np.isfinite(x)]
    if len(x) == 0:
        return {"count": 0, "p50": None, "p90": None, "p99": None, "p999": None, "max": None}
    p = np.percentile(x, [50, 90, 99, 99.9]) * 1e6
    return {"count": int(len(x)), "p50": int(round(p[0])), "p90": int(round(p[1])), "p99": int(round(p[2])),
            "p999": int(round(p[3])), "max": int(round(float(x.max()) * 1e6))}


def status_name(code: int) -> str:
    return STATUS_NAMES.get(int(code), str(int(code)))


def summarize(trace: Trace, duration: float, requested_rate: float, peak_rate: float,
              max_lag: float, tolerance: float = 0.03) -> dict[str, Any]:
    """Load, lag, latency and status numbers for the record, plus the kept-up verdict.

    *achieved rate* = requests sent whose send time fell inside ``[0, duration)``, divided by
    ``duration``: a generator that falls behind and sends late does not get credit for it.
    *kept up* = achieved within ``tolerance`` of the scheduled count and send lag p99 <= ``max_lag``.
    """
    v = trace.view()
    sent_mask = np.isfinite(v["send"])
    scheduled = trace.n + trace.overflow
    in_window = int(np.count_nonzero(sent_mask & (v["send"] < duration)))
    sent = int(np.count_nonzero(sent_mask)) + trace.overflow
    done = sent_mask & (v["status"] != ST_CANCELLED)
    lag = (v["send"] - v["sched"])[sent_mask]
    achieved = in_window / duration if duration > 0 else 0.0
    sched_rate = trace.n / duration if duration > 0 else 0.0
    ratio = (in_window / trace.n) if trace.n else 1.0
    lag_p = percentiles(lag)
    reasons = []
    if trace.n and ratio < 1 - tolerance:
        reasons.append(f"sent {in_window} of {trace.n} scheduled requests inside the window "
                       f"({100 * ratio:.1f}%, achieved {achieved:.0f} of {sched_rate:.0f} req/s)")
    if lag_p["p99"] is not None and lag_p["p99"] > max_lag:
        reasons.append(f"send lag p99 {1000 * lag_p['p99']:.0f} ms > {1000 * max_lag:.0f} ms")
    codes: dict[str, int] = {}
    by_verb_status: dict[str, dict[str, int]] = {}
    for vi, verb in enumerate(VERBS):
        m = v["verb"] == vi
        if not m.any():
            continue
        st, cnt = np.unique(v["status"][m], return_counts=True)
        by_verb_status[verb] = {status_name(s): int(c) for s, c in zip(st, cnt)}
        for s, c in zip(st, cnt):
            codes[status_name(s)] = codes.get(status_name(s), 0) + int(c)
    ok = done & (v["status"] >= 200) & (v["status"] < 300)
    return {
        "load": {
            "requested_rate": requested_rate, "peak_rate": peak_rate, "scheduled": scheduled,
            "scheduled_rate": sched_rate, "sent": sent, "sent_in_window": in_window,
            "completed": int(np.count_nonzero(done & (v["status"] > 0))),
            "achieved_rate": achieved, "achieved_ratio": ratio, "kept_up": not reasons,
            "behind_reason": "; ".join(reasons) or None, "trace_overflow": trace.overflow,
        },
        "lag_s": lag_p,
        "latency_s": percentiles(v["latency"][done]),
        "latency_us": percentiles_us(v["latency"][done]),
        "lag_us": percentiles_us(lag),
        "latency_histogram_us": latency_histogram(v["latency"][done]),
        "latency_ok_s": percentiles(v["latency"][ok]),
        "latency_by_verb_s": {verb: percentiles(v["latency"][done & (v["verb"] == vi)])
                              for vi, verb in enumerate(VERBS) if np.any(v["verb"] == vi)},
        "status_codes": dict(sorted(codes.items())),
        "status_by_verb": by_verb_status,
    }


def trace_rows(trace: Trace) -> list[list[float | str | None]]:
    """The trace as rows of :data:`TRACE_COLUMNS` (times rounded to the µs; None where not sent)."""
    v = trace.view()

    def col(x: np.ndarray) -> list[float | None]:
        r = np.round(x.astype(np.float64), 6)
        return [None if f != f else f for f in r.tolist()]  # NaN -> None

    names = {k: status_name(k) for k in np.unique(v["status"]).tolist()}
    return [list(row) for row in zip(col(v["sched"]), col(v["send"]), [VERBS[i] for i in v["verb"].tolist()],
                                     [RESOURCES[i] for i in v["resource"].tolist()],
                                     [names[k] for k in v["status"].tolist()], col(v["latency"]))]


TRACE_COLUMNS = ["offset", "send_offset", "verb", "resource", "status", "latency"]


def write_record(record: dict[str, Any], trace: Trace, path: str | Path | None, trace_inline_max: int = 2000) -> str:
    """Attach the trace (inline or sidecar) and write the record; returns the JSON text.

    With ``path`` None the trace is inline only if small, else summarised (no sidecar to write).
    """
    if trace.n <= trace_inline_max:
        record["trace"] = {"columns": TRACE_COLUMNS, "rows": trace_rows(trace)}
    elif path is not None:
        side = Path(str(path) + ".trace.csv")
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(TRACE_COLUMNS)
        w.writerows(trace_rows(trace))
        write_atomic(side, buf.getvalue())
        record["trace"] = {"sidecar": side.name, "rows": trace.n, "columns": TRACE_COLUMNS}
    else:
        record["trace"] = {"omitted": f"{trace.n} rows; pass -o FILE to get a FILE.trace.csv sidecar", "rows": trace.n}
    text = json.dumps(record, indent=2, default=json_default) + "\n"
    if path is not None:
        write_atomic(Path(path), text)
    return text

