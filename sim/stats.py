"""Bounded-memory statistics shared by every engine, so their outputs are computed identically.

* :class:`Quantiles`: exact nearest-rank percentiles while at most ``exact_cap`` samples were
  seen; past that, a log-spaced histogram (64 buckets per doubling from 1 µs) whose reported
  quantile is the geometric middle of its bucket: relative error below 0.55 %.
* :class:`SeriesMax`: the maximum of a step function per fixed interval (occupancy over time).

The histogram's bucket of a sample is defined by the numpy expression of :func:`bucket_index`.
Compiled callers (:meth:`Quantiles.add_spans`) reach the same bucket through a table of the
smallest ratio ``x / 1 µs`` that expression puts in each bucket (:func:`bucket_thresholds`, built
from the expression itself by bisection over the doubles), and the same sum of a call's samples
through numpy's own pairwise summation order (:func:`pairwise_sum`), so either way of adding
samples leaves the same histogram, count, total and maximum.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import numba as nb
import numpy as np
import numpy.typing as npt

from audit_tune.sim import selection

_BUCKETS_PER_DOUBLING = 64
_MIN = 1e-6
_NB = 64 * 48  # 1 µs .. ~3e8 s
_PW_BLOCK = 128  # numpy's pairwise-summation block (PW_BLOCKSIZE)

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


def ratio_bucket(r: F64) -> I64:
    """Histogram bucket of ratios ``r = max(x, 1 µs) / 1 µs``: ``floor(64 log2 r) + 1``, capped."""
    with np.errstate(divide="ignore", invalid="ignore"):
        idx = np.floor(np.log2(r) * _BUCKETS_PER_DOUBLING).astype(np.int64) + 1
    out: I64 = np.clip(idx, 0, _NB)
    return out


def bucket_index(x: F64) -> I64:
    """Histogram bucket of each sample: 0 below 1 µs, else :func:`ratio_bucket` of ``x / 1 µs``."""
    idx = ratio_bucket(np.maximum(x, _MIN) / _MIN)
    idx[x < _MIN] = 0
    return idx


def _bisect(up: Callable[[F64], npt.NDArray[np.bool_]], lo: F64, hi: F64) -> F64:
    """The smallest double in ``(lo, hi]`` where the monotone test ``up`` holds (it does not at
    ``lo``, it does at ``hi``; all positive), by bisection over the doubles' bit patterns, which
    are ordered as their values."""
    lo_b, hi_b = lo.view(np.int64).copy(), hi.view(np.int64).copy()
    while (hi_b - lo_b > 1).any():
        mid = lo_b + (hi_b - lo_b) // 2
        ok = up(mid.view(np.float64))
        hi_b = np.where(ok, mid, hi_b)
        lo_b = np.where(ok, lo_b, mid)
    return hi_b.view(np.float64)


_THRESHOLDS: list[F64] = []


def bucket_thresholds() -> F64:
    """Bucket edges in seconds: ``thr[k]`` (k = 1.._NB) is the smallest double sample that
    :func:`bucket_index` puts in bucket k or above; ``thr[0]`` the smallest whose ratio to 1 µs
    overflows (bucket 0 again, as numpy's cast of an infinite bucket), and again in ``thr[_NB + 1]``.
    Found with numpy's own ``log2`` and division, so that a search in it gives numpy's bucket,
    sample for sample, with neither. Built once, on the first histogram."""
    if not _THRESHOLDS:
        k = np.arange(2, _NB + 1, dtype=np.int64)
        big = np.full(len(k), 2.0 ** 60)  # in the last bucket, as ratio and as sample
        r_edge = _bisect(lambda r: ratio_bucket(r) >= k, np.ones(len(k)), big)
        x_edge = _bisect(lambda x: x / _MIN >= r_edge, np.full(len(k), _MIN), big)
        with np.errstate(over="ignore"):
            x_inf = _bisect(lambda x: x / _MIN == np.inf, np.array([1.0]), np.array([np.finfo(np.float64).max]))
        _THRESHOLDS.append(np.concatenate([x_inf, [_MIN], x_edge, x_inf]))
    return _THRESHOLDS[0]


@nb.njit(cache=True, nogil=True, inline="always")
def _bucket(x: float, thr: F64, k: int) -> int:
    """:func:`bucket_index` of one sample by search in ``thr`` (:func:`bucket_thresholds`); ``k``
    is the previous sample's bucket, tried first (consecutive samples are close)."""
    if k > 0 and thr[k] <= x < thr[k + 1]:
        return k
    if not x >= _MIN or x >= thr[0]:
        return 0  # below 1 µs, NaN, or a ratio that overflows: numpy's bucket 0
    lo, hi = 1, _NB
    while lo < hi:
        mid = (lo + hi + 1) >> 1
        if thr[mid] <= x:
            lo = mid
        else:
            hi = mid - 1
    return lo


@nb.njit(cache=True, nogil=True)
def _hist_add(hist: I64, thr: F64, x: F64) -> None:
    k = 0
    run = 0  # samples of bucket k not yet counted (a register, not a store per sample)
    for v in x:
        b = _bucket(v, thr, k)
        if b != k:
            hist[k] += run
            k, run = b, 0
        run += 1
    hist[k] += run


@nb.njit(cache=True, nogil=True, inline="always")
def _pairwise_block(a: F64, lo: int, n: int) -> float:
    """numpy's pairwise-summation leaf: fewer than 8 summed in order, else 8 running sums."""
    if n < 8:
        res = 0.0
        for i in range(lo, lo + n):
            res += a[i]
        return res
    r0, r1, r2, r3 = a[lo], a[lo + 1], a[lo + 2], a[lo + 3]
    r4, r5, r6, r7 = a[lo + 4], a[lo + 5], a[lo + 6], a[lo + 7]
    i = lo + 8
    stop = lo + n - n % 8
    while i < stop:
        r0 += a[i]
        r1 += a[i + 1]
        r2 += a[i + 2]
        r3 += a[i + 3]
        r4 += a[i + 4]
        r5 += a[i + 5]
        r6 += a[i + 6]
        r7 += a[i + 7]
        i += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < lo + n:
        res += a[i]
        i += 1
    return res  # type: ignore[no-any-return]  # numba-compiled: a float64 element


@nb.njit(cache=True, nogil=True)
def pairwise_sum(a: F64, n: int) -> float:
    """``a[:n]`` summed in numpy's pairwise order (``pairwise_sum`` of its float add loop: blocks
    of at most 128, a longer range split in halves at a multiple of 8, left + right); ``0.0 +``
    this is ``np.sum`` of a contiguous float64 array. The recursion runs on an explicit stack."""
    lo_s = np.empty(64, dtype=np.int64)
    n_s = np.empty(64, dtype=np.int64)
    stage = np.empty(64, dtype=np.int64)
    vals = np.empty(64)
    top = 0
    nv = 0
    lo_s[0], n_s[0], stage[0] = 0, n, 0
    while top >= 0:
        lo, m = lo_s[top], n_s[top]
        if m <= _PW_BLOCK:
            vals[nv] = _pairwise_block(a, lo, m)
            nv += 1
            top -= 1
            continue
        half = m // 2
        half -= half % 8
        if stage[top] == 0:
            stage[top] = 1
            top += 1
            lo_s[top], n_s[top], stage[top] = lo, half, 0
        elif stage[top] == 1:
            stage[top] = 2
            top += 1
            lo_s[top], n_s[top], stage[top] = lo + half, m - half, 0
        else:
            nv -= 1
            vals[nv - 1] = vals[nv - 1] + vals[nv]
            top -= 1
    return vals[0]  # type: ignore[no-any-return]  # numba-compiled: a float64 element


@nb.njit(cache=True, nogil=True)
def span_samples(end: F64, ok: npt.NDArray[np.bool_], n: I64, t: F64) -> F64:
    """``end[j] - t[i]`` for the events i of every batch j with ``ok[j]``, in event order; ``t``
    holds the batches' events back to back (``n[j]`` each)."""
    count = 0
    for j in range(len(n)):
        if ok[j]:
            count += n[j]
    out = np.empty(count)
    c = 0
    off = 0
    for j in range(len(n)):
        if ok[j]:
            for i in range(n[j]):
                out[c] = end[j] - t[off + i]
                c += 1
        off += n[j]
    return out


@nb.njit(cache=True, nogil=True)
def _hist_spans(hist: I64, thr: F64, end: F64, ok: npt.NDArray[np.bool_], n: I64, t: F64,
                scratch: F64) -> tuple[int, float, float]:
    """:func:`span_samples` into the histogram: (count, numpy's sum, max) of the samples, written
    to ``scratch`` on the way for the sum; count alone (and nothing added) when it has no room."""
    count = 0
    for j in range(len(n)):
        if ok[j]:
            count += n[j]
    if count > len(scratch):
        return count, np.nan, np.nan
    c = 0
    off = 0
    k = 0
    run = 0
    mx = -np.inf
    for j in range(len(n)):
        if ok[j]:
            e = end[j]
            for i in range(off, off + n[j]):
                x = e - t[i]
                scratch[c] = x
                c += 1
                b = _bucket(x, thr, k)
                if b != k:
                    hist[k] += run
                    k, run = b, 0
                run += 1
                if x > mx:
                    mx = x
        off += n[j]
    hist[k] += run
    return count, 0.0 + pairwise_sum(scratch, count), mx


class Quantiles:
    def __init__(self, exact_cap: int = 2_000_000, keep: bool = True) -> None:
        """``keep`` False: samples are counted by :meth:`add_spans`'s answer only, never kept
        (``count`` stays 0, every quantile is None): for runs whose caller reads no latency."""
        self.exact_cap = exact_cap
        self.keep = keep
        self._parts: list[F64] = []
        self._n_exact = 0
        self._hist: np.ndarray | None = None
        self.count = 0
        self.total = 0.0
        self.max = 0.0
        self._summary: dict[str, float | None] | None = None
        self._scratch: F64 = np.empty(0)  # the samples of one add_spans call, for their sum

    def add(self, x: np.ndarray | float) -> None:
        if not self.keep:
            return
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

    def add_spans(self, end: F64, ok: npt.NDArray[np.bool_], n: I64, t: F64) -> int:
        """Add :func:`span_samples` (``end[j] - t[i]`` for the events of each batch j with
        ``ok[j]``) as one :meth:`add` would; in histogram mode straight into the histogram, without
        the array. Returns how many samples."""
        if not self.keep:
            return int(n[ok].sum())
        if self._hist is None:
            x = span_samples(end, ok, n, t)
            self.add(x)
            return len(x)
        count, total, mx = _hist_spans(self._hist, bucket_thresholds(), end, ok, n, t, self._scratch)
        if count > len(self._scratch):
            self._scratch = np.empty(max(count, 2 * len(self._scratch)))
            count, total, mx = _hist_spans(self._hist, bucket_thresholds(), end, ok, n, t, self._scratch)
        if count:
            self._summary = None
            self.count += count
            self.total += total
            self.max = max(self.max, mx)
        return count

    def _to_hist(self, x: F64) -> None:
        assert self._hist is not None  # only called once the histogram exists
        _hist_add(self._hist, bucket_thresholds(), x)

    @property
    def exact(self) -> bool:
        return self._hist is None

    def quantile(self, q: float) -> float:
        if self.count == 0:
            return float("nan")
        if self._hist is None:
            return selection.quantiles(self._parts, [q])[0]
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
            p50, p90, p99 = selection.quantiles(self._parts, [0.5, 0.9, 0.99])
        else:
            p50, p90, p99 = self.quantile(0.5), self.quantile(0.9), self.quantile(0.99)
        return {"p50": p50, "p90": p90, "p99": p99, "max": self.max, "mean": self.total / self.count}


class SeriesMax:
    """Per-interval maximum of a quantity that changes at discrete instants (observed in time order).

    An interval with no observation carries the level in force (the last observed value)."""

    def __init__(self, interval: float, keep: bool = True) -> None:
        """``keep`` False: observations are ignored and the series is empty (the caller reads none)."""
        self.interval = interval
        self.keep = keep
        self.maxes: dict[int, float] = {}
        self.lasts: dict[int, float] = {}

    def observe(self, t: float, v: float) -> None:
        if not self.keep:
            return
        k = int(t // self.interval)
        if v > self.maxes.get(k, -1.0):
            self.maxes[k] = v
        self.lasts[k] = v

    def observe_many(self, t: np.ndarray, v: np.ndarray) -> None:
        """Observations in time order (vectorised :meth:`observe`)."""
        if not self.keep or not len(t):
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
        if not self.keep:
            return
        for kk, m, last in zip(keys.tolist(), maxes.tolist(), lasts.tolist()):
            if m > self.maxes.get(kk, -1.0):
                self.maxes[kk] = m
            self.lasts[kk] = last

    def add_runs(self, keys: I64, maxes: F64, lasts: F64) -> None:
        """Per-interval reductions (as :meth:`observe_runs`) of observations that all follow the
        ones seen so far: only the first interval can have been seen before, the rest are new."""
        if not self.keep or not len(keys):
            return
        self.observe_runs(keys[:1], maxes[:1], lasts[:1])
        if len(keys) > 1:
            k = keys[1:].tolist()
            self.maxes.update(zip(k, maxes[1:].tolist()))
            self.lasts.update(zip(k, lasts[1:].tolist()))

    def series(self, end: float) -> list[float]:
        n = int(math.ceil(end / self.interval)) if end > 0 and self.keep else 0
        out, level = [], 0.0
        for k in range(n):
            if k in self.maxes:
                out.append(max(self.maxes[k], level))
                level = self.lasts[k]
            else:
                out.append(level)
        return out
