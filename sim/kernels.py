"""Compiled (numba) inner loops of workload generation, shared by both engines.

Each kernel computes exactly what a numpy expression in :mod:`sim.workload` or :mod:`sim.rng`
computes (same integer arithmetic, same float operations in the same order), in one pass and
without temporaries; ``tests/test_kernels.py`` checks them against those expressions bit for bit.
"""
from __future__ import annotations

import numba as nb
import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_C1 = np.uint64(0xBF58476D1CE4E5B9)
_C2 = np.uint64(0x94D049BB133111EB)


@nb.njit(cache=True, nogil=True, inline="always")
def _mix(z: np.uint64) -> np.uint64:
    z = (z ^ (z >> np.uint64(30))) * _C1
    z = (z ^ (z >> np.uint64(27))) * _C2
    return z ^ (z >> np.uint64(31))


@nb.njit(cache=True, nogil=True, inline="always")
def class_key(h0: np.uint64, a: np.uint64) -> np.uint64:
    """The keyed start of instance ``a``'s class draws (``h0``: :func:`sim.rng.hash_start`)."""
    return _mix(h0 ^ ((a + np.uint64(1)) * _GOLDEN))


@nb.njit(cache=True, nogil=True, inline="always")
def class_one(ha: np.uint64, req: int, c: np.uint64, cum_w: np.ndarray) -> int:
    """The class of request ``req``: ``searchsorted(cum_w, uniform(.., req, c), "right")``, capped
    at the last class (``ha``: :func:`class_key`)."""
    h = _mix(ha ^ ((np.uint64(req) + np.uint64(1)) * _C1))
    h = _mix(h ^ ((c + np.uint64(1)) * _C2))
    u = np.float64(h >> np.uint64(11)) * (1.0 / 9007199254740992.0)
    k = np.searchsorted(cum_w, u, side="right")
    return min(k, len(cum_w) - 1)  # type: ignore[return-value]  # numba-compiled: intp


@nb.njit(cache=True, nogil=True)
def class_of(h0: np.uint64, a: np.uint64, req: np.ndarray, c: np.uint64, cum_w: np.ndarray) -> np.ndarray:
    """Request class per request: ``searchsorted(cum_w, uniform(seed, stream, a, req, c), "right")``
    capped at the last class, where ``h0`` is the keyed start of :func:`sim.rng.uniform_array`
    (``_mix(seed * GOLDEN + stream)``)."""
    ha = class_key(h0, a)
    out = np.empty(len(req), dtype=np.int16)
    for i in range(len(req)):
        out[i] = class_one(ha, req[i], c, cum_w)
    return out


@nb.njit(cache=True, nogil=True)
def expand_events(t: np.ndarray, cls: np.ndarray, req: np.ndarray, nst: np.ndarray, off_tab: np.ndarray,
                  size_tab: np.ndarray, meta_tab: np.ndarray, stage_tab: np.ndarray, lvl: np.ndarray,
                  zero_offsets: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Requests to audit events, request by request and stage by stage: event time (arrival + the
    stage's offset), size, metadata-only size, level, request and stage."""
    total = 0
    for i in range(len(t)):
        total += nst[cls[i]]
    et = np.empty(total)
    sz = np.empty(total, dtype=np.int64)
    mt = np.empty(total, dtype=np.int64)
    lv = np.empty(total, dtype=np.int8)
    rq = np.empty(total, dtype=np.int64)
    st = np.empty(total, dtype=np.int8)
    e = 0
    for i in range(len(t)):
        c = cls[i]
        for k in range(nst[c]):
            et[e] = t[i] if zero_offsets else t[i] + off_tab[c, k]
            sz[e] = size_tab[c, k]
            mt[e] = meta_tab[c, k]
            lv[e] = lvl[c]
            rq[e] = req[i]
            st[e] = stage_tab[c, k]
            e += 1
    return et, sz, mt, lv, rq, st


@nb.njit(cache=True, nogil=True)
def inverse_step(cum: np.ndarray, t: np.ndarray, r: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Inverse of a piecewise-constant cumulative intensity: the time at which ``cum`` (knots ``t``,
    rates ``r``, ``cum[i]`` the integral up to ``t[i]``) reaches each ``y``; ``inf`` where the rate
    is zero for good."""
    last = len(t) - 2
    out = np.empty(len(y))
    for j in range(len(y)):
        i = np.searchsorted(cum, y[j], side="right") - 1
        if i < 0:
            i = 0
        elif i > last:
            i = last
        ri = r[i]
        out[j] = t[i] + ((y[j] - cum[i]) / ri if ri > 0 else np.inf)
    return out
