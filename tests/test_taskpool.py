"""The recommendation's process pool (``analysis.taskpool``): each keyed item runs once, prefetched
work is reused, and results do not depend on the number of processes."""
from __future__ import annotations

import os

from audit_tune.analysis.taskpool import KeyedRuns, Workers, available_cores


def square_and_pid(x: int) -> tuple[int, int]:
    return x * x, os.getpid()


def test_available_cores_is_the_affinity_mask():
    assert available_cores() == (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())
    assert Workers(64).jobs == available_cores() and Workers(0).jobs == 1


def test_each_key_runs_once_and_prefetched_items_are_reused():
    w = Workers(2)
    try:
        runs: KeyedRuns[str, int, tuple[int, int]] = KeyedRuns(w, square_and_pid)
        runs.prefetch([(f"k{x}", x) for x in range(6)])
        first = runs.map([(f"k{x}", x) for x in (5, 1, 7, 1)])
        assert [r[0] for r in first] == [25, 1, 49, 1]
        assert runs.runs == 7  # 6 prefetched + k7; k1 asked twice, run once
        again = runs.map([(f"k{x}", x) for x in range(8)])
        assert [r[0] for r in again] == [x * x for x in range(8)] and runs.runs == 8  # k6 is new
        if available_cores() > 1:
            assert all(pid != os.getpid() for _, pid in again), "parallel runs happen in the workers"
    finally:
        w.close()


def test_one_process_runs_in_process_and_ignores_prefetch():
    w = Workers(1)
    runs: KeyedRuns[int, int, tuple[int, int]] = KeyedRuns(w, square_and_pid)
    runs.prefetch([(x, x) for x in range(3)])
    assert runs.runs == 0
    assert runs.map([(2, 2), (2, 2)]) == [(4, os.getpid())] * 2 and runs.runs == 1
    w.close()
