"""sim/selection.py: the exact order statistics equal numpy's, whatever the data's shape."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audit_tune.sim import selection

QS = [0.0, 1e-9, 0.01, 0.25, 0.5, 0.9, 0.99, 0.999, 1.0]


def numpy_quantiles(x: np.ndarray, qs: list[float]) -> list[float]:
    return [float(v) for v in np.quantile(x, qs, method="inverted_cdf")]


@given(st.integers(1, 70_000), st.lists(st.floats(0.0, 1.0), min_size=1, max_size=4))
@settings(max_examples=300, deadline=None)
def test_index_is_numpys(n: int, qs: list[float]) -> None:
    x = np.arange(n, dtype=float)  # sorted distinct values: the element is its index
    got = [selection.inverted_cdf_index(n, q) for q in qs]
    assert got == [int(v) for v in np.quantile(x, qs, method="inverted_cdf")]


def _at_sample(x: np.ndarray, v: float) -> np.ndarray:
    if len(x) >= selection.SMALL:
        x[selection._sample_index(len(x))] = v
    return x


SHAPES = {
    "gamma": lambda rng, n: rng.gamma(2.0, 0.3, n),
    "sorted": lambda rng, n: np.sort(rng.exponential(1.0, n)),
    "reversed": lambda rng, n: np.sort(rng.exponential(1.0, n))[::-1].copy(),
    # latencies of batches: end - t over each batch's events, a sawtooth
    "batches": lambda rng, n: (np.repeat(np.arange(n // 400 + 1) + 1.0, 400)[:n] + rng.exponential(0.2, n)
                               - np.tile(np.linspace(0, 1, 400), n // 400 + 1)[:n]),
    "few distinct": lambda rng, n: rng.integers(0, 3, n).astype(float),
    "all equal": lambda rng, n: np.full(n, 0.25),
    "heavy tail": lambda rng, n: rng.pareto(0.7, n),
    "one outlier": lambda rng, n: np.concatenate([np.full(n - 1, 1.0), [1e9]]),
    "negative": lambda rng, n: rng.normal(0.0, 1.0, n),
    # the sampled positions all hold one value while the rest is spread: the band misses
    "adversarial sample": lambda rng, n: _at_sample(rng.uniform(0, 10, n), 5.0),
}


@pytest.mark.parametrize("shape", sorted(SHAPES))
@pytest.mark.parametrize("n", [1, 7, selection.SMALL - 1, selection.SMALL, 50_001, 400_000])
def test_quantiles_are_numpys(shape: str, n: int) -> None:
    x = SHAPES[shape](np.random.default_rng(n), n)
    before = x.copy()
    assert selection.quantiles(x, QS) == numpy_quantiles(x, QS)
    assert np.array_equal(x, before)  # the input is not reordered


@given(st.lists(st.floats(-1e300, 1e300, allow_nan=False), min_size=1, max_size=300),
       st.integers(selection.SMALL, 3 * selection.SMALL), st.integers(0, 2**32 - 1))
@settings(max_examples=60, deadline=None)
def test_order_statistic_any_finite_values(vals: list[float], n: int, seed: int) -> None:
    """Arrays above the small-array cut-off drawn from any finite values (ties, huge magnitudes,
    signed zeros, infinities excluded): the k-th smallest is numpy's."""
    rng = np.random.default_rng(seed)
    x = rng.choice(np.array(vals), n)
    k = int(rng.integers(0, n))
    assert selection.order_statistic(x, k) == float(np.partition(x, k)[k])


def test_band_misses_fall_back_to_a_full_partition() -> None:
    """A sample that misplaces the band (every sampled value equal, the rest spread) still gives
    numpy's element: the band check fails and the whole array is partitioned."""
    n = 200_000
    x = _at_sample(np.linspace(0.0, 1.0, n), 0.5)
    k = int(0.99 * n)
    sample = np.sort(x[selection._sample_index(n)])
    assert selection._in_band([x], k, sample, len(sample), n) is None
    assert selection.order_statistic(x, k) == float(np.partition(x, k)[k])


def test_a_periodic_array_does_not_alias_the_sample() -> None:
    """Latencies repeat a sawtooth of the batch size; a strided sample whose stride is a multiple of
    it would see one phase only. The drawn positions see every phase: the band holds the median."""
    n, period = 409_600, 100  # a stride of n // 4096 = 100 would sample one phase
    x = np.tile(np.arange(period, dtype=float), n // period)
    k = n // 2
    sample = np.sort(x[selection._sample_index(n)])
    assert selection._in_band([x], k, sample, len(sample), n) == float(np.partition(x, k)[k])


@pytest.mark.parametrize("shape", ["gamma", "batches", "few distinct", "adversarial sample", "negative"])
@pytest.mark.parametrize("sizes", [(0, 70_000), (1, 5, 80_000), (30_000, 0, 30_000, 1), (9_000, 8_000), (200_000,) * 3])
def test_parts_give_the_quantiles_of_the_parts_joined(shape: str, sizes: tuple[int, ...]) -> None:
    """A run's latencies arrive call by call: the quantiles of the parts, never joined, are numpy's
    of the joined array, whichever part holds the band, with empty parts among them."""
    rng = np.random.default_rng(len(sizes) + sum(sizes))
    x = SHAPES[shape](rng, sum(sizes))
    parts = np.split(x, np.cumsum(sizes)[:-1])
    assert [len(p) for p in parts] == list(sizes)
    assert selection.quantiles(parts, QS) == numpy_quantiles(x, QS)
    k = int(rng.integers(0, len(x)))
    assert selection.quantile_elements(parts, [k]) == [float(np.partition(x, k)[k])]
