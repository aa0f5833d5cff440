"""The compiled collector over arrays (``sim/fast/collector.py``): its tight loops for an open window
and a blocked collector take runs of arrivals at once when no occupancy series is kept; the result
is the one the arrival-by-arrival loops give (kept series), whatever the groups, buffer and batch."""
from __future__ import annotations

import numpy as np
import pytest

from audit_tune.sim.fast import collector as col


def _run(at: np.ndarray, cap: int, max_size: int, wait: float, qps: float, obs: bool) -> tuple:
    throttle = qps > 0
    P = np.array([cap, max_size, wait, 1.0 if throttle else 0.0, qps, 2.0, 0.0, 0.0, 1.0 if obs else 0.0])
    S = col.new_state(2.0)
    S[col.S_DEADLINE] = wait
    C = np.zeros(8)
    C[col.C_FIRST_DROP] = np.nan
    N = len(at)
    ints, floats, ob = np.zeros((3, N + 2), dtype=np.int64), np.zeros((2, N + 2)), np.zeros((2, 2 * N + 4))
    i_end = col.run_collector(at, np.empty(0), np.empty(0, dtype=np.int64), P, S, C, ints, floats, ob,
                              (0, True, float(at[-1]) + 5.0, np.inf, 0))  # stop 5 s after the last: drain, done
    acc_n, nb = int(C[col.C_ACC_N]), int(C[col.C_NB])
    counters = {k: _num(C[i]) for i, k in enumerate(("acc", "qh", "nb", "no", "drops", "first_drop", "tw", "max_occ"))
                if k != "no"}
    return (i_end, ints[0, :acc_n].tolist(), ints[1, :nb].tolist(), ints[2, :nb].tolist(), floats[0, :nb].tolist(),
            [_num(x) for x in S], counters)


def _num(x: float) -> float | None:
    return None if np.isnan(x) else float(x)


@pytest.mark.parametrize("cap", [2, 3, 50, 10_000])
@pytest.mark.parametrize("max_size, wait", [(3, 1.0), (5, 0.0625), (400, 1.0), (400, 0.25)])
@pytest.mark.parametrize("qps", [0.0, 4.0, 64.0])
def test_runs_taken_at_once_give_what_arrival_by_arrival_gives(cap, max_size, wait, qps) -> None:
    """Arrivals on a grid of 1/64 s (exact in binary, as are the waits and the throttle's 1/qps): groups
    of equal times, and arrivals exactly at a deadline or at the end of a throttle wait."""
    g = np.random.default_rng(cap + max_size + int(qps))
    at = np.sort(np.repeat(g.integers(0, 1280, 3000) / 64.0, g.integers(1, 5, 3000)))
    with_series = _run(at, cap, max_size, wait, qps, obs=True)
    assert _run(at, cap, max_size, wait, qps, obs=False) == with_series


def test_a_crafted_window() -> None:
    """One arrival, then groups of 3 and 2 in an open window of a batch of 400 (the tight loop
    takes them: the buffer held 3 at most), then a full buffer of 4 while throttled drops."""
    at = np.array([0.1, 0.2, 0.2, 0.2, 0.3, 0.3])
    got = _run(at, 4, 400, 1.0, 0.0, obs=False)
    assert got[0] == 6 and got[1] == [0, 1, 2, 3, 4, 5] and got[2:4] == ([0], [6]) and got[6]["max_occ"] == 3
    burst = np.concatenate([[0.0], np.full(9, 0.5)])
    got = _run(burst, 4, 1, 1.0, 1.0, obs=False)  # batches of one at 1 qps: blocked from t=0 after 2 tokens
    assert got[6]["drops"] > 0 and got[6]["first_drop"] == 0.5 and got[6]["max_occ"] == 4
