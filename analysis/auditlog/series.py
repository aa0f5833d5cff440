"""The exact arrival series of one apiserver, and the bursts in it.

Arrivals are counted in ``RES`` = 100 ms bins (one int32 per bin, so a week is 24 MB whatever the
event count); from the bins:

* ``event_rate``: events/s per ``step``, on the grid Prometheus would use (point ``t`` = the end
  of ``(t - step, t]``), so a log snapshot and a Prometheus one line up;
* ``event_rate_peak``: the busiest sliding 1 s window inside each step (events/s), the sub-step
  peak Prometheus cannot see below its scrape interval;
* :func:`bursts`: the busiest sliding 100 ms / 1 s / 10 s / 1 min windows of the whole log, each
  against the average of the step it falls in and against the whole window's mean;
* :func:`stretches`: the busiest stretches, whose exact (1 ms) arrival times the snapshot keeps
  so the recommendation replays them instead of fitting them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from audit_tune.basics.jsondata import JsonObject

RES = 0.1  # seconds per bin
PER_SECOND = 10
PEAK_WINDOW = 1.0
BURST_WINDOWS = (0.1, 1.0, 10.0, 60.0)
MAX_POINTS = 11_000
TRACE_SPAN = 900.0  # seconds of exact trace around each of the busiest peaks
TRACE_STRETCHES = 3
TRACE_MAX_EVENTS = 300_000
NICE_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 86400)


@dataclass
class Bins:
    """Event counts per 100 ms bin from bin index ``start`` (``floor(t / RES)``)."""

    start: int = 0
    counts: np.ndarray | None = None

    def add(self, t: np.ndarray) -> None:
        if not len(t):
            return
        idx = np.floor(t * PER_SECOND).astype(np.int64)
        lo, hi = int(idx.min()), int(idx.max())
        self._cover(lo, hi)
        assert self.counts is not None
        c = np.bincount(idx - lo)
        self.counts[lo - self.start: lo - self.start + len(c)] += c.astype(np.int32)

    def _cover(self, lo: int, hi: int) -> None:
        if self.counts is None:
            self.start, self.counts = lo, np.zeros(hi - lo + 1, dtype=np.int32)
            return
        end = self.start + len(self.counts)
        if lo >= self.start and hi < end:
            return
        ns, ne = min(lo, self.start), max(hi + 1, end)
        grown = np.zeros(ne - ns, dtype=np.int32)
        grown[self.start - ns: self.start - ns + len(self.counts)] = self.counts
        self.start, self.counts = ns, grown

    def merge(self, o: Bins) -> None:
        if o.counts is None:
            return
        self._cover(o.start, o.start + len(o.counts) - 1)
        assert self.counts is not None
        self.counts[o.start - self.start: o.start - self.start + len(o.counts)] += o.counts

    @property
    def total(self) -> int:
        return int(self.counts.sum()) if self.counts is not None else 0

    @property
    def t0(self) -> float:
        return self.start * RES

    @property
    def t1(self) -> float:
        return (self.start + (len(self.counts) if self.counts is not None else 0)) * RES


def choose_step(span: float, wanted: float) -> float:
    """``wanted`` (the --step), raised so the series has at most MAX_POINTS points."""
    need = span / MAX_POINTS
    if wanted >= need:
        return float(wanted)
    return float(next((s for s in NICE_STEPS if s >= need), math.ceil(need)))


def window_sums(counts: np.ndarray, k: int) -> np.ndarray:
    """Sums of every ``k`` consecutive bins (sliding)."""
    if len(counts) < k:
        return np.array([counts.sum()], dtype=np.int64)
    c = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)])
    return c[k:] - c[:-k]


@dataclass
class StepSeries:
    t: list[float]
    v: list[float]
    peak_t: list[float]
    peak_v: list[float]
    step: float
    start: float  # unix start of the first step
    end: float


def step_series(b: Bins, step: float, start: float | None = None, end: float | None = None) -> StepSeries:
    """``event_rate`` and ``event_rate_peak`` (1 s) per step over ``[start, end)`` (default: the log's span)."""
    assert b.counts is not None
    per = max(int(round(step / RES)), 1)
    s0 = math.floor(b.t0 / step) * step if start is None else start
    e0 = b.t1 if end is None else end
    n = max(int(math.ceil((e0 - s0) / step - 1e-9)), 1)
    first = int(round(s0 / RES))
    full = np.zeros(n * per, dtype=np.int64)
    lo, hi = max(b.start, first), min(b.start + len(b.counts), first + n * per)
    if hi > lo:
        full[lo - first: hi - first] = b.counts[lo - b.start: hi - b.start]
    per_step = full.reshape(n, per)
    rate = per_step.sum(axis=1) / step
    k = PER_SECOND
    if per >= k:
        sw = window_sums(full, k)  # window ending at bin j + k - 1
        ends = np.arange(len(sw)) + k - 1
        which = ends // per
        peak = np.zeros(n)
        np.maximum.at(peak, which, sw / PEAK_WINDOW)
        peak = np.maximum(peak, rate)
    else:
        peak = rate.copy()
    t = (s0 + step * (np.arange(n) + 1)).tolist()
    return StepSeries(t, rate.tolist(), t, peak.tolist(), step, s0, s0 + n * step)


def bursts(b: Bins, step: float, grid_start: float | None = None) -> list[JsonObject]:
    """The busiest sliding window of each length in BURST_WINDOWS, against the average of the step
    (on the grid from ``grid_start``) it falls in."""
    assert b.counts is not None
    counts = b.counts.astype(np.int64)
    span = max(len(counts) * RES, RES)
    mean = counts.sum() / span
    per = max(int(round(step / RES)), 1)
    grid0 = int(round((b.t0 if grid_start is None else grid_start) / RES))
    out = []
    for w in BURST_WINDOWS:
        k = max(int(round(w / RES)), 1)
        if k > len(counts):
            continue
        sw = window_sums(counts, k)
        j = int(np.argmax(sw))
        peak = float(sw[j]) / w
        mid = b.start + j + k // 2  # bin index of the window's middle
        s_lo = ((mid - grid0) // per) * per + grid0 - b.start  # the step holding the window, in bins
        lo, hi = max(s_lo, 0), min(s_lo + per, len(counts))
        step_avg = float(counts[lo:hi].sum()) / (max(hi - lo, 1) * RES)  # edge steps: the part the log covers
        out.append({"window": w, "peak_rate": round(peak, 3), "at": round((b.start + j) * RES, 3),
                    "step_average": round(step_avg, 3), "peak_over_step": round(peak / step_avg, 3) if step_avg else None,
                    "window_mean": round(float(mean), 3),
                    "peak_over_mean": round(peak / mean, 3) if mean else None})
    return out


def stretches(b: Bins, span: float = TRACE_SPAN, k: int = TRACE_STRETCHES,
              max_events: float = TRACE_MAX_EVENTS) -> list[tuple[float, float]]:
    """Unix ``[start, end)`` ranges to keep exactly: the whole log when it holds at most
    ``max_events``; else up to ``k`` non-overlapping ``span``-long stretches centred on the busiest
    1 s windows, as many as fit in ``max_events``."""
    assert b.counts is not None
    if b.total <= max_events:
        return [(b.t0, b.t1)]
    m = min(int(span / RES), len(b.counts))
    sw = window_sums(b.counts.astype(np.int64), PER_SECOND)
    taken = np.zeros(len(b.counts), dtype=bool)
    out: list[tuple[float, float]] = []
    used = 0
    csum = np.concatenate([[0], np.cumsum(b.counts, dtype=np.int64)])
    for j in np.argsort(-sw, kind="stable")[: 50_000]:
        if len(out) >= k:
            break
        lo = int(min(max(j + PER_SECOND // 2 - m // 2, 0), len(b.counts) - m))
        hi = lo + m
        if taken[lo:hi].any():
            continue
        ev = int(csum[hi] - csum[lo])
        if used + ev > max_events:
            if out:
                break
            # one stretch alone is too big: narrow it around its peak
            while ev > max_events and hi - lo > 10 * PER_SECOND:
                cut = (hi - lo) // 4
                lo, hi = lo + cut // 2, hi - cut // 2
                ev = int(csum[hi] - csum[lo])
        taken[lo:hi] = True
        used += ev
        out.append(((b.start + lo) * RES, (b.start + hi) * RES))
    return sorted(out)
