"""Bounded-memory statistics shared by every engine, so their outputs are computed identically.

* :class:`Quantiles`: exact nearest-rank percentiles while at most ``exact_cap`` samples were
  seen; past that, a log-spaced histogram (64 buckets per doubling from 1 µs) whose reported
  quantile is the geometric middle of its bucket: relative error below 0.55 %.
* :class:`SeriesMax`: the maximum of a step function per fixed interval (occupancy over time).
"""
from __future__ import annotations

import math

import numpy as np

_BUCKETS_PER_DOUBLING = 64
_MIN = 1e-6
_NB = 64 * 48  # 1 µs .. ~3e8 s


class Quantiles:
    def __init__(self, exact_cap: int = 2_000_000) -> None:
        self.exact_cap = exact_cap
        self._parts: list[np.ndarray] = []
        self._n_exact = 0
        self._hist: np.ndarray | None = None
        self.count = 0
        self.total = 0.0
        self.max = 0.0
        self._summary: dict[str, float | None] | None = None

    def add(self, x: np.ndarray | float) -> None:
        x = np.atleast_1d(np.asarray(x, dtype=float))
        if not len(x):
            return
        self._summary = None
        self.count += len(x)
        self.total += float(x.sum())
        self.max = max(self.max, float(x.max()))
        if self._hist is None:
            self._parts.append(x)
            self._n_exact += len(x)
            if self._n_exact > self.exact_cap:
                self._hist = np.zeros(_NB + 1, dtype=np.int64)
                for p in self._parts:
                    self._to_hist(p)
                self._parts = []
        else:
            self._to_hist(x)

    def _to_hist(self, x: np.ndarray) -> None:
        assert self._hist is not None  # only called once the histogram exists
        with np.errstate(divide="ignore"):
            idx = np.floor(np.log2(np.maximum(x, _MIN) / _MIN) * _BUCKETS_PER_DOUBLING).astype(np.int64) + 1
        idx[x < _MIN] = 0
        self._hist += np.bincount(np.clip(idx, 0, _NB), minlength=_NB + 1)

    @property
    def exact(self) -> bool:
        return self._hist is None

    def quantile(self, q: float) -> float:
        if self.count == 0:
            return float("nan")
        if self._hist is None:
            allx = np.concatenate(self._parts)
            return float(np.quantile(allx, q, method="inverted_cdf"))
        rank = max(1, math.ceil(q * self.count))
        c = np.cumsum(self._hist)
        i = int(np.searchsorted(c, rank))
        if i == 0:
            return 0.0
        lo = _MIN * 2 ** ((i - 1) / _BUCKETS_PER_DOUBLING)
        return min(lo * 2 ** (0.5 / _BUCKETS_PER_DOUBLING), self.max)

    def summary(self) -> dict[str, float | None]:
        """p50/p90/p99/max/mean (computed once until the next :meth:`add`)."""
        if self._summary is None:
            self._summary = self._compute_summary()
        return dict(self._summary)

    def _compute_summary(self) -> dict[str, float | None]:
        if self.count == 0:
            return {"p50": None, "p90": None, "p99": None, "max": None, "mean": None}
        if self._hist is None:
            allx = self._parts[0] if len(self._parts) == 1 else np.concatenate(self._parts)
            p50, p90, p99 = (float(x) for x in np.quantile(allx, [0.5, 0.9, 0.99], method="inverted_cdf"))
        else:
            p50, p90, p99 = self.quantile(0.5), self.quantile(0.9), self.quantile(0.99)
        return {"p50": p50, "p90": p90, "p99": p99, "max": self.max, "mean": self.total / self.count}


class SeriesMax:
    """Per-interval maximum of a quantity that changes at discrete instants (observed in time order).

    An interval with no observation carries the level in force (the last observed value)."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.maxes: dict[int, float] = {}
        self.lasts: dict[int, float] = {}

    def observe(self, t: float, v: float) -> None:
        k = int(t // self.interval)
        if v > self.maxes.get(k, -1.0):
            self.maxes[k] = v
        self.lasts[k] = v

    def observe_many(self, t: np.ndarray, v: np.ndarray) -> None:
        """Observations in time order (vectorised :meth:`observe`)."""
        if not len(t):
            return
        k = np.floor_divide(t, self.interval).astype(np.int64)
        edges = np.flatnonzero(np.diff(k)) + 1
        starts = np.concatenate([[0], edges])
        ends = np.concatenate([edges, [len(k)]])
        mx = np.maximum.reduceat(v, starts)
        for kk, m, last in zip(k[starts].tolist(), mx.tolist(), v[ends - 1].tolist()):
            if m > self.maxes.get(kk, -1.0):
                self.maxes[kk] = m
            self.lasts[kk] = last

    def observe_runs(self, keys: np.ndarray, maxes: np.ndarray, lasts: np.ndarray) -> None:
        """Per-interval reductions already made (interval index, max, last value), in time order:
        what :meth:`observe_many` computes, for callers that reduce in compiled code."""
        for kk, m, last in zip(keys.tolist(), maxes.tolist(), lasts.tolist()):
            if m > self.maxes.get(kk, -1.0):
                self.maxes[kk] = m
            self.lasts[kk] = last

    def series(self, end: float) -> list[float]:
        n = int(math.ceil(end / self.interval)) if end > 0 else 0
        out, level = [], 0.0
        for k in range(n):
            if k in self.maxes:
                out.append(max(self.maxes[k], level))
                level = self.lasts[k]
            else:
                out.append(level)
        return out
