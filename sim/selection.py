"""Exact order statistics of large float arrays without partitioning all of them.

``np.quantile(x, q, method="inverted_cdf")`` partitions the whole array around the quantile's
index and, for float input, around its last element too (to find NaNs): two selection passes over
every sample. :func:`quantiles` returns the same elements, but partitions only the samples inside a
band known to hold each order statistic:

1. a sample of 4,096 values at random positions is sorted, and for the rank ``k`` of ``n`` the band is
   the sample's values at ranks ``k/n`` of it, widened by a few standard errors of a binomial count
   on each side;
2. one comparison pass counts the values below the band and inside it; if the band holds rank
   ``k`` (``below <= k < below + inside``), the ``k - below``-th smallest of the band's values is
   the answer (every value below the band is smaller than every value in it);
3. otherwise (a band missed by the sample, which the width makes rare) the whole array is
   partitioned, as numpy does.

So the answer is always the element numpy returns; only the work differs: the band is a few
percent of the samples. The sample's positions are drawn from a generator seeded with the array's
length, so the same array always costs the same work.

The index of a quantile is numpy's (``_inverted_cdf`` in ``numpy/lib/_function_base_impl.py``:
``n q - 1`` rounded up when it has a fraction; :func:`inverted_cdf_index`).

Precondition: no NaN (numpy would answer NaN; here a NaN compares false, so which band it falls in
is an accident and so is the answer). The caller's samples are durations between finite times.
"""
from __future__ import annotations

import math

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


def quantiles(x: F64, qs: list[float]) -> list[float]:
    """``np.quantile(x, qs, method="inverted_cdf")`` of finite values, as floats."""
    n = len(x)
    return quantile_elements(x, [inverted_cdf_index(n, q) for q in qs])


def quantile_elements(x: F64, ks: list[int]) -> list[float]:
    """The ``k``-th smallest values (0-based) of the finite values ``x``, for each ``k`` in ``ks``."""
    n = len(x)
    if n < SMALL:
        part = np.partition(x, ks)
        return [float(part[k]) for k in ks]
    sample = np.sort(x[_sample_index(n)])
    m = len(sample)
    out: list[float] = []
    for k in ks:
        got = _in_band(x, k, sample, m, n)
        if got is None:
            got = float(np.partition(x, k)[k])
        out.append(got)
    return out


def _sample_index(n: int) -> npt.NDArray[np.int64]:
    """Where to sample ``n`` values: :data:`SAMPLE` positions drawn from a generator seeded with
    ``n``, so the same array always costs the same work, and no stride can alias with a period of
    the data (a run's latencies repeat a sawtooth of the batch size)."""
    idx: npt.NDArray[np.int64] = np.random.default_rng(n).integers(0, n, SAMPLE)
    return idx


def _in_band(x: F64, k: int, sample: F64, m: int, n: int) -> float | None:
    """The ``k``-th smallest of ``x`` from the band the sorted ``sample`` places around it; None
    when the band does not hold it."""
    p = (k + 0.5) / n
    half = WIDTH_SE * math.sqrt(max(p * (1 - p), 1.0 / m) * m) + 2
    j_lo, j_hi = int(math.floor(p * m - half)), int(math.ceil(p * m + half))
    lo = sample[j_lo] if j_lo >= 0 else 0.0
    hi = sample[j_hi] if j_hi < m else 0.0
    if j_lo >= 0:
        below_mask = x < lo
        below = int(np.count_nonzero(below_mask))
        if below > k:
            return None
        band_mask = ~below_mask
        if j_hi < m:
            band_mask &= x <= hi
    elif j_hi < m:
        below, band_mask = 0, x <= hi
    else:
        return None
    band = x[band_mask]
    if below + len(band) <= k:
        return None
    return float(np.partition(band, k - below)[k - below])
