"""The compiled workload kernels give bit-identical results to the numpy expressions they replace."""
from __future__ import annotations

import numpy as np
import pytest

from audit_tune.sim import kernels, rng


@pytest.mark.parametrize("seed, inst, ncls", [(1, 0, 2), (7, 3, 5), (2**40 + 3, 1, 9), (0, 0, 1)])
def test_class_of_matches_uniform_array(seed: int, inst: int, ncls: int) -> None:
    g = np.random.default_rng(seed % 1000)
    w = g.uniform(0.0, 3.0, ncls)
    w[0] = 0.0 if ncls > 2 else w[0]  # a zero-weight class must never be chosen
    cum_w = np.cumsum(w)
    cum_w /= cum_w[-1]
    req = np.concatenate([np.arange(5000), g.integers(0, 2**62, 5000)]).astype(np.int64)
    u = rng.uniform_array(seed, rng.S_REQ_CLASS, inst, req)
    want = np.minimum(np.searchsorted(cum_w, u, side="right"), ncls - 1).astype(np.int16)
    got = kernels.class_of(np.uint64(rng.hash_start(seed, rng.S_REQ_CLASS)), np.uint64(inst), req, np.uint64(0), cum_w)
    assert got.dtype == np.int16
    np.testing.assert_array_equal(got, want)
    assert len(np.unique(got)) > 1 or ncls == 1  # the draws do spread over classes


def _expand_numpy(t, cls, req, nst, off_tab, size_tab, meta_tab, stage_tab, lvl, zero_offsets):
    """The numpy formulation the kernel replaced (repeat/arange fancy indexing)."""
    per = nst[cls]
    total = int(per.sum())
    c = np.repeat(cls.astype(np.int64), per)
    pos = np.arange(total) - np.repeat(np.cumsum(per) - per, per)
    rep_t, rep_r = np.repeat(t, per), np.repeat(req, per)
    et = rep_t if zero_offsets else rep_t + off_tab[c, pos]
    return et, size_tab[c, pos], meta_tab[c, pos], lvl[c], rep_r, stage_tab[c, pos]


@pytest.mark.parametrize("zero_offsets", [True, False])
def test_expand_events_matches_numpy(zero_offsets: bool) -> None:
    g = np.random.default_rng(5)
    ncls, width, n = 4, 3, 20000
    nst = np.array([1, 3, 2, 0], dtype=np.int64)
    off_tab = np.zeros((ncls, width)) if zero_offsets else g.uniform(0, 0.5, (ncls, width))
    size_tab = g.integers(100, 50000, (ncls, width)).astype(np.int64)
    meta_tab = np.minimum(size_tab, 2000)
    stage_tab = g.integers(0, 4, (ncls, width)).astype(np.int8)
    lvl = np.array([1, 2, 3, 0], dtype=np.int8)
    t = np.cumsum(g.exponential(1e-3, n))
    cls = g.integers(0, ncls, n).astype(np.int16)
    req = np.arange(100, 100 + n, dtype=np.int64)
    got = kernels.expand_events(t, cls, req, nst, off_tab, size_tab, meta_tab, stage_tab, lvl, zero_offsets)
    want = _expand_numpy(t, cls, req, nst, off_tab, size_tab, meta_tab, stage_tab, lvl, zero_offsets)
    assert len(got[0]) == int(nst[cls].sum()) > n
    for a, b in zip(got, want):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("knots", [1, 7, 300])
def test_inverse_step_matches_numpy(knots: int) -> None:
    from audit_tune.sim.workload import RateProfile

    g = np.random.default_rng(knots)
    times = np.sort(np.concatenate([[0.0], g.uniform(0, 1000, knots - 1)])).tolist()
    rates = g.uniform(0, 50, knots)
    rates[g.uniform(size=knots) < 0.2] = 0.0  # silent stretches
    p = RateProfile(tuple(times), tuple(rates.tolist()), "step")
    total = float(p.cumulative(np.array([1200.0]), 1200.0)[0])
    y = np.sort(g.uniform(0, total * 1.05, 20000))  # some beyond the end: past the last knot
    got = p.inverse_cumulative(y, 1200.0)
    want = p._inverse_numpy(y, 1200.0)
    np.testing.assert_array_equal(got, want)
    assert np.isfinite(got).mean() > 0.5


def test_arrival_draws_are_exponential_scale_one() -> None:
    """sim.workload draws arrival gaps with ``standard_exponential``: the same numbers, and the same
    stream position afterwards, as ``exponential(1.0)`` (checked on the installed numpy)."""
    from audit_tune.sim import rng as r

    g1, g2 = r.generator(3, r.S_ARRIVALS, 1), r.generator(3, r.S_ARRIVALS, 1)
    for n in (1, 1000, 300_000):
        np.testing.assert_array_equal(g1.exponential(1.0, size=n), g2.standard_exponential(n))
    assert g1.uniform() == g2.uniform()

