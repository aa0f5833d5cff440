"""``sim/fast/workspace.py``: the fused path's work arrays, per thread, grown and then reused."""
from __future__ import annotations

import threading

from audit_tune.sim.fast import workspace


def test_reused_while_big_enough_and_grown_when_not() -> None:
    a = workspace.work(1000)
    assert len(a.acc_t) >= 1000 and a.obs.shape[1] >= 2 * 1000 + 4 and len(a.d) >= 1002 and a.an.shape[1] >= 1002
    assert workspace.work(10) is a  # a smaller call reuses the arrays, pages already touched
    b = workspace.work(a.n + 1)
    assert b is not a and b.n == a.n + 1 and len(b.acc_t) == a.n + 1
    assert workspace.work(5) is b


def test_each_thread_has_its_own() -> None:
    mine = workspace.work(100)
    seen: list[workspace.Work] = []
    t = threading.Thread(target=lambda: seen.append(workspace.work(100)))
    t.start()
    t.join()
    assert seen and seen[0] is not mine and seen[0].acc_t is not mine.acc_t
