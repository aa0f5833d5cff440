"""Exact order statistics of large float arrays without partitioning all of them.

``np.quantile(x, q, method="inverted_cdf")`` partitions the whole array around the quantile's
index and, for float input, around its last element too (to find NaNs): two selection passes over
every sample. :func:`quantiles` returns the same elements, but partitions only the samples inside a
band known to hold each order statistic:

1. a sample of 4,096 values at random positions is sorted, and for the rank ``k`` of ``n`` the band is
   the sample's values at ranks ``k/n`` of it, widened by a few standard errors of a binomial count
   on each side;
2. one compiled pass counts the values below the band and copies those inside it; if the band
   holds rank ``k`` (``below <= k < below + inside``), the ``k - below``-th smallest of the band's
   values is the answer (every value below the band is smaller than every value in it);
3. otherwise (a band missed by the sample, which the width makes rare) the whole array is
   partitioned, as numpy does.

So the answer is always the element numpy returns; only the work differs: the band is a few
percent of the samples. The values may come in parts (a run's latencies, call by call): the order
statistics are those of the parts joined, without joining them. The sample's positions are drawn
from a generator seeded with the array's length, so the same array always costs the same work.

The index of a quantile is numpy's (``_inverted_cdf`` in ``numpy/lib/_function_base_impl.py``:
``n q - 1`` rounded up when it has a fraction; :func:`inverted_cdf_index`).

Precondition: no NaN (numpy would answer NaN; here a NaN compares false, so which band it falls in
is an accident and so is the answer). The caller's samples are durations between finite times.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numba as nb
import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]

#: below this many values numpy's own partition is as fast as the band
SMALL = 16_384
#: about this many values sampled to place the band
SAMPLE = 4_096
#: the band's half-width in standard errors of the sample's binomial rank count
WIDTH_SE = 4.0


def inverted_cdf_index(n: int, q: float) -> int:
    """The 0-based index ``np.quantile(x, q, method="inverted_cdf")`` takes of ``n`` sorted values:
    ``n q - 1`` rounded up when it has a fraction (numpy's ``_inverted_cdf``), at least 0."""
    v = n * q - 1
    k = math.floor(v)
    if v - k != 0:
        k += 1
    return min(max(k, 0), n - 1)


def order_statistic(x: F64, k: int) -> float:
    """The ``k``-th smallest (0-based) of the finite values ``x``: ``np.partition(x, k)[k]``."""
    return quantile_elements(x, [k])[0]


def quantiles(x: F64 | Sequence[F64], qs: list[float]) -> list[float]:
    """``np.quantile(x, qs, method="inverted_cdf")`` of finite values (an array, or parts of one), as floats."""
    n = len(x) if isinstance(x, np.ndarray) else sum(len(p) for p in x)
    return quantile_elements(x, [inverted_cdf_index(n, q) for q in qs])


def quantile_elements(x: F64 | Sequence[F64], ks: list[int]) -> list[float]:
    """The ``k``-th smallest values (0-based) of the finite values ``x`` (an array, or the parts of
    one, in any order), for each ``k`` in ``ks``."""
    parts = [x] if isinstance(x, np.ndarray) else [p for p in x if len(p)]
    n = sum(len(p) for p in parts)
    if n < SMALL:
        part = np.partition(_joined(parts), ks)
        return [float(part[k]) for k in ks]
    sample = np.sort(_gather(parts, _sample_index(n)))
    m = len(sample)
    out: list[float] = []
    for k in ks:
        got = _in_band(parts, k, sample, m, n)
        if got is None:
            got = float(np.partition(_joined(parts), k)[k])
        out.append(got)
    return out


def _joined(parts: list[F64]) -> F64:
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _gather(parts: list[F64], idx: npt.NDArray[np.int64]) -> F64:
    """The values at positions ``idx`` of the parts joined."""
    if len(parts) == 1:
        return parts[0][idx]
    starts = np.cumsum([0] + [len(p) for p in parts[:-1]])
    which = np.searchsorted(starts, idx, side="right") - 1
    out = np.empty(len(idx))
    for j, p in enumerate(parts):
        sel = which == j
        out[sel] = p[idx[sel] - starts[j]]
    return out


def _sample_index(n: int) -> npt.NDArray[np.int64]:
    """Where to sample ``n`` values: :data:`SAMPLE` positions drawn from a generator seeded with
    ``n``, so the same array always costs the same work, and no stride can alias with a period of
    the data (a run's latencies repeat a sawtooth of the batch size)."""
    idx: npt.NDArray[np.int64] = np.random.default_rng(n).integers(0, n, SAMPLE)
    return idx


@nb.njit(cache=True, nogil=True)
def _band(x: F64, lo: float, hi: float, out: F64, below: int, c: int) -> tuple[int, int]:
    """One pass over ``x``: adds the values below ``lo`` to ``below``, copies those in ``[lo, hi]``
    to ``out[c:]``; returns both counts."""
    for v in x:
        if v < lo:
            below += 1
        elif v <= hi:
            out[c] = v
            c += 1
    return below, c


def _in_band(parts: list[F64], k: int, sample: F64, m: int, n: int) -> float | None:
    """The ``k``-th smallest of the ``n`` values in ``parts`` from the band the sorted ``sample``
    places around it; None when the band does not hold it."""
    p = (k + 0.5) / n
    half = WIDTH_SE * math.sqrt(max(p * (1 - p), 1.0 / m) * m) + 2
    j_lo, j_hi = int(math.floor(p * m - half)), int(math.ceil(p * m + half))
    if j_lo < 0 and j_hi >= m:
        return None
    lo = float(sample[j_lo]) if j_lo >= 0 else -math.inf  # below -inf: no finite value
    hi = float(sample[j_hi]) if j_hi < m else math.inf
    band = np.empty(n)  # only its first ``inside`` values are written (and so touched)
    below = inside = 0
    for part in parts:
        below, inside = _band(part, lo, hi, band, below, inside)
    if not below <= k < below + inside:
        return None
    return float(np.partition(band[:inside], k - below)[k - below])
