"""``sim/fast/pcg64.py``: numpy's PCG64 and standard exponential, compiled inline, bit for bit."""
from __future__ import annotations

import numba as nb
import numpy as np
import pytest

from audit_tune.sim.fast import pcg64


@nb.njit
def _draws(st: np.ndarray, n: int) -> np.ndarray:
    out = np.empty(n)
    for i in range(n):
        out[i] = pcg64.standard_exponential(st)
    return out


@nb.njit
def _raw(st: np.ndarray, n: int) -> np.ndarray:
    out = np.empty(n, dtype=np.uint64)
    for i in range(n):
        out[i] = pcg64.next64(st)
    return out


@pytest.mark.parametrize("seed", [0, 1, 2**63 + 5, 123456789])
def test_draws_are_numpys_and_share_the_generators_state(seed: int) -> None:
    g, want = np.random.Generator(np.random.PCG64(seed)), np.random.Generator(np.random.PCG64(seed))
    st = pcg64.state_of(g)
    np.testing.assert_array_equal(_raw(st, 1000), want.bit_generator.random_raw(1000))
    got = _draws(st, 1_000_000)  # ~1% of draws take the ziggurat's slow paths
    exp = want.standard_exponential(1_000_000)
    assert got.dtype == exp.dtype
    np.testing.assert_array_equal(got, exp)
    # the state is the generator's own: numpy's draws continue the compiled ones, and back
    np.testing.assert_array_equal(g.standard_exponential(1000), want.standard_exponential(1000))
    np.testing.assert_array_equal(_draws(st, 1000), want.standard_exponential(1000))
    assert g.bit_generator.state == want.bit_generator.state


def test_only_pcg64() -> None:
    with pytest.raises(TypeError, match="PCG64"):
        pcg64.state_of(np.random.Generator(np.random.MT19937(1)))


def test_each_generators_view_is_its_own_state() -> None:
    """The layout is checked once per process; every later view must still be its own generator's."""
    gens = [np.random.Generator(np.random.PCG64(s)) for s in (7, 8, 2**100 + 3)]
    views = [pcg64.state_of(g) for g in gens]
    for g, v in zip(gens, views):
        g.standard_exponential(3)
        s = g.bit_generator.state["state"]
        assert [int(w) for w in v] == [s["state"] & (2**64 - 1), s["state"] >> 64, s["inc"] & (2**64 - 1), s["inc"] >> 64]
