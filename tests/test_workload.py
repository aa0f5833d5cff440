"""``sim/workload.py``: the rate profile's closed forms against its general piecewise arithmetic."""
from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from audit_tune.sim.workload import RateProfile

rates = st.one_of(st.floats(0.0, 1e9, allow_nan=False), st.integers(0, 10**9))
durations = st.one_of(st.floats(1e-6, 1e8, allow_nan=False), st.integers(1, 10**8))


@settings(max_examples=3000, deadline=None, derandomize=True)
@given(rate=rates, duration=durations, interp=st.sampled_from(["step", "linear"]))
def test_one_knot_mean_rate_is_the_cumulatives_to_the_bit(rate, duration, interp) -> None:
    """A one-rate profile's mean rate skips the piecewise pass; the chunk length (and so the random
    stream) depends on it, so it must be the same double."""
    p = RateProfile((0.0,), (rate,), interp)
    assert p.mean_rate(duration) == p.cumulative(np.array([duration]))[0] / duration


def test_mean_rate_of_several_knots_and_a_late_start() -> None:
    p = RateProfile((0.0, 10.0), (100.0, 300.0), "step")
    assert p.mean_rate(20.0) == (100.0 * 10 + 300.0 * 10) / 20
    late = RateProfile((5.0,), (100.0,), "step")
    assert late.mean_rate(10.0) == 50.0
    assert RateProfile((0.0,), (7.0,), "step").mean_rate(0.0) == 7.0
