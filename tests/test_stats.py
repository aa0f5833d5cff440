"""``sim/stats.py``: the compiled update path of :class:`Quantiles` against the numpy it replaces.

The histogram's bucket is defined by a numpy expression (``bucket_index``); the compiled path finds
it by search in a table of thresholds, and sums samples in numpy's pairwise order. Both must give
the same histogram, count, total and maximum as numpy, bit for bit, including at every bucket edge.
"""
from __future__ import annotations

import numpy as np

from audit_tune.sim import stats
from audit_tune.sim.stats import Quantiles, bucket_index, bucket_thresholds, pairwise_sum, span_samples


def _numpy_hist(x: np.ndarray) -> np.ndarray:
    return np.bincount(bucket_index(x), minlength=stats._NB + 1)


def _compiled_hist(x: np.ndarray) -> np.ndarray:
    q = Quantiles(exact_cap=0)
    with np.errstate(over="ignore"):  # the total of the extreme samples
        q.add(x)
    assert q._hist is not None
    return q._hist


def test_thresholds_are_numpys_bucket_edges() -> None:
    thr = bucket_thresholds()
    edges = thr[1:-1]
    assert len(edges) == stats._NB and edges[0] == 1e-6 and (np.diff(thr[1:]) > 0).all()
    np.testing.assert_array_equal(bucket_index(edges), np.arange(1, stats._NB + 1))
    np.testing.assert_array_equal(bucket_index(np.nextafter(edges, 0)), np.arange(0, stats._NB))
    with np.errstate(over="ignore"):
        assert thr[0] / 1e-6 == np.inf and np.nextafter(thr[0], 0) / 1e-6 < np.inf


def test_compiled_histogram_is_numpys_at_every_edge() -> None:
    g = np.random.default_rng(11)
    thr = bucket_thresholds()
    near = [thr, 2.0 ** (np.arange(stats._NB) / 64.0) * 1e-6]  # the edges, and near them by the formula
    for _ in range(3):  # a few doubles either side of each edge
        near += [np.nextafter(near[-2], 0), np.nextafter(near[-2], np.inf),
                 np.nextafter(near[-1], 0), np.nextafter(near[-1], np.inf)]
    x = np.concatenate(near + [g.lognormal(0.0, 4.0, 400_000), g.uniform(0.0, 3e-6, 20_000),
                               np.array([0.0, 1e-6, 1e9, 1e300, 7.0e8, 2.5, np.inf, np.finfo(float).max])])
    g.shuffle(x)
    with np.errstate(invalid="ignore", over="ignore"):
        want = _numpy_hist(x)
    assert want[0] > 0 and want[-1] > 0  # below 1 µs, overflowing and capped ones are there
    np.testing.assert_array_equal(_compiled_hist(x), want)
    np.testing.assert_array_equal(_compiled_hist(np.sort(x)), want)


def test_pairwise_sum_is_numpys_sum() -> None:
    g = np.random.default_rng(12)
    for n in [*range(0, 300), 1023, 1024, 1025, 4099, 65536, 131_071, 262_145, 2_500_001]:
        a = g.lognormal(0.0, 3.0, n)
        assert 0.0 + pairwise_sum(a, n) == np.sum(a), n


def _spans(g: np.random.Generator, batches: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    n = g.integers(1, 400, batches).astype(np.int64)
    end = g.uniform(10.0, 20.0, batches)
    ok = g.uniform(size=batches) < 0.8
    t = g.uniform(0.0, 10.0, int(n.sum()))
    return end, ok, n, t


def test_span_samples() -> None:
    end, ok, n, t = _spans(np.random.default_rng(13), 300)
    np.testing.assert_array_equal(span_samples(end, ok, n, t), (np.repeat(end, n) - t)[np.repeat(ok, n)])


def test_add_spans_is_add_of_the_samples_in_both_modes() -> None:
    g = np.random.default_rng(14)
    a, b = Quantiles(exact_cap=50_000), Quantiles(exact_cap=50_000)
    added = 0
    for k in range(12):  # exact mode first, then the switch to the histogram, then histogram mode
        end, ok, n, t = _spans(g, 40 + 30 * k)
        x = span_samples(end, ok, n, t)
        a.add(x)
        assert b.add_spans(end, ok, n, t) == len(x)
        added += len(x)
        assert (a.exact, a.count, a.total, a.max) == (b.exact, b.count, b.total, b.max)
        assert a.summary() == b.summary()
    assert not b.exact and b.count == added
    assert a._hist is not None and b._hist is not None
    np.testing.assert_array_equal(a._hist, b._hist)
    none = np.zeros(3, dtype=bool)
    assert b.add_spans(np.ones(3), none, np.ones(3, dtype=np.int64), np.zeros(3)) == 0
    assert b.count == added
