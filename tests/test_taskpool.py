"""The recommendation's pool of threads (``analysis.taskpool``): each keyed item runs once, prefetched
work is reused, results do not depend on the number of threads, and the kernels it runs release the
interpreter lock."""
from __future__ import annotations

import importlib
import os
import pkgutil
import threading

from numba.core.registry import CPUDispatcher

from audit_tune.analysis.taskpool import KeyedRuns, Workers, available_cores


def square_and_thread(x: int) -> tuple[int, int]:
    """The square and the thread that computed it."""
    return x * x, threading.get_ident()


def test_available_cores_is_the_affinity_mask():
    assert available_cores() == (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())
    assert Workers(64).jobs == available_cores() and Workers(0).jobs == 1


def test_each_key_runs_once_and_prefetched_items_are_reused():
    w = Workers(2)
    try:
        runs: KeyedRuns[str, int, tuple[int, int]] = KeyedRuns(w, square_and_thread)
        runs.prefetch([(f"k{x}", x) for x in range(6)])
        first = runs.map([(f"k{x}", x) for x in (5, 1, 7, 1)])
        assert [r[0] for r in first] == [25, 1, 49, 1]
        assert runs.runs == 7  # 6 prefetched + k7; k1 asked twice, run once
        again = runs.map([(f"k{x}", x) for x in range(8)])
        assert [r[0] for r in again] == [x * x for x in range(8)] and runs.runs == 8  # k6 is new
        if available_cores() > 1:
            assert all(tid != threading.get_ident() for _, tid in again), "parallel runs happen in the workers"
    finally:
        w.close()


def test_one_process_runs_in_process_and_ignores_prefetch():
    w = Workers(1)
    runs: KeyedRuns[int, int, tuple[int, int]] = KeyedRuns(w, square_and_thread)
    runs.prefetch([(x, x) for x in range(3)])
    assert runs.runs == 0
    assert runs.map([(2, 2), (2, 2)]) == [(4, threading.get_ident())] * 2 and runs.runs == 1
    w.close()


def square_alone(x: int) -> tuple[int, int]:
    return x * x, 1


def squares_together(xs: list[int]) -> list[tuple[int, int]]:
    """Each square with the size of the work item it ran in."""
    return [(x * x, len(xs)) for x in xs]


def parity(x: int) -> int:
    return x % 2


def test_items_of_one_call_with_the_same_group_run_as_one_work_item():
    w = Workers(1)
    runs: KeyedRuns[str, int, tuple[int, int]] = KeyedRuns(w, square_alone, many=squares_together, group=parity)
    assert runs.map([(f"k{x}", x) for x in (0, 1, 2, 3, 4, 2)]) == [(0, 3), (1, 2), (4, 3), (9, 2), (16, 3), (4, 3)]
    assert runs.runs == 5
    # a later call: the known keys come from the cache, the new ones group among themselves
    assert runs.map([(f"k{x}", x) for x in (4, 5, 6)]) == [(16, 3), (25, 1), (36, 1)] and runs.runs == 7


def test_grouped_work_items_on_processes_keep_results_per_key():
    w = Workers(2)
    try:
        runs: KeyedRuns[str, int, tuple[int, int]] = KeyedRuns(w, square_alone, many=squares_together, group=parity)
        runs.prefetch([(f"k{x}", x) for x in range(6)])  # two work items of 3, both started at once
        got = runs.map([(f"k{x}", x) for x in (5, 1, 7, 9, 1)])
        if w.parallel:
            assert got == [(25, 3), (1, 3), (49, 2), (81, 2), (1, 3)]  # k7 and k9: one new item of 2
            assert runs.runs == 8
        again = runs.map([(f"k{x}", x) for x in range(10)])
        assert [r[0] for r in again] == [x * x for x in range(10)] and runs.runs == 10
        if w.parallel:
            assert [r[1] for r in again] == [3, 3, 3, 3, 3, 3, 2, 2, 2, 2]  # k6 and k8: one new item of 2
    finally:
        w.close()


def test_prefetched_items_ride_along_with_a_work_item_of_their_group_in_one_process():
    w = Workers(1)
    runs: KeyedRuns[str, int, tuple[int, int]] = KeyedRuns(w, square_alone, many=squares_together, group=parity)
    runs.prefetch([(f"k{x}", x) for x in range(6)])
    assert runs.runs == 0  # nothing runs ahead of time with one process
    assert runs.map([("k7", 7)]) == [(49, 4)] and runs.runs == 4  # k1, k3, k5 rode along
    assert runs.map([("k3", 3), ("k1", 1)]) == [(9, 4), (1, 4)] and runs.runs == 4  # from the cache
    assert runs.map([("k0", 0), ("k8", 8)]) == [(0, 4), (64, 4)] and runs.runs == 8  # k2, k4 rode along


def tens(x: int) -> int:
    return x // 10


def test_waiting_prefetched_items_ride_along_on_processes():
    w = Workers(2)
    try:
        runs: KeyedRuns[str, int, tuple[int, int]] = KeyedRuns(w, square_alone, many=squares_together, group=tens)
        runs.prefetch([(f"k{x}", x) for x in range(60)])  # six work items of 10: four start, two wait
        got = runs.map([("k50", 50), ("k59", 59), ("k61", 61)])
        if w.parallel:
            # k50 and k59 were waiting: asked now, they take the other 8 of theirs along; k61 is new
            assert got == [(2500, 10), (3481, 10), (3721, 1)] and runs.runs == 61
            assert runs.map([("k40", 40)]) == [(1600, 10)]  # the other waiting item, whole
        again = runs.map([(f"k{x}", x) for x in range(62)])
        assert [r[0] for r in again] == [x * x for x in range(62)] and runs.runs == 62
    finally:
        w.close()



def test_items_prefetched_not_to_fill_idle_processes_only_ride_along_or_run_when_asked():
    w = Workers(2)
    try:
        assert w.parallel
        runs: KeyedRuns[str, int, tuple[int, int]] = KeyedRuns(w, square_alone, many=squares_together, group=tens)
        runs.prefetch([(f"k{x}", x) for x in range(30)], idle=False)
        runs.map([("k99", 99)])  # the processes idle after this: still nothing prefetched starts
        assert runs.runs == 1
        assert runs.map([("k5", 5)]) == [(25, 10)] and runs.runs == 11  # asked: the other 9 of its group along
        assert runs.map([("k15", 15), ("k21", 21)]) == [(225, 10), (441, 10)] and runs.runs == 31
        assert runs.map([("k1", 1), ("k29", 29)]) == [(1, 10), (841, 10)] and runs.runs == 31  # from the cache
        runs.prefetch([("k40", 40), ("k41", 41)], idle=False)
        runs.prefetch([("k42", 42)])  # joins the waiting work item of its group, which does not fill idle ones
        assert runs.map([("k99", 99)]) == [(9801, 1)] and runs.runs == 31
        assert runs.map([("k43", 43)]) == [(1849, 4)] and runs.runs == 35
    finally:
        w.close()

def test_beside_runs_in_a_thread_with_processes_and_when_asked_with_one():
    started = threading.Event()
    go = threading.Event()

    def work() -> list[tuple[int, int]]:
        started.set()
        assert go.wait(30), "the caller went on while this ran"
        runs: KeyedRuns[int, int, tuple[int, int]] = KeyedRuns(w, square_and_thread)
        return runs.map([(x, x) for x in range(5)])

    w = Workers(2)
    try:
        assert w.parallel
        result = w.beside(work)
        assert started.wait(30), "started before its result is asked for"
        go.set()  # the caller's own work would run here
        assert [r[0] for r in result()] == [x * x for x in range(5)]

        def fails() -> int:
            raise ValueError("from the thread")
        try:
            w.beside(fails)()
        except ValueError as e:
            assert str(e) == "from the thread"
        else:
            raise AssertionError("the thread's error is raised to the caller")
    finally:
        w.close()
    one = Workers(1)
    calls: list[int] = []
    pending = one.beside(lambda: calls.append(1) or 7)
    assert calls == [] and pending() == 7 and calls == [1]


def test_every_compiled_kernel_releases_the_interpreter_lock():
    """The pool's threads run the simulations at once only inside kernels compiled with ``nogil``:
    one compiled without it would hold the lock and serialise them (the results would not change,
    so no other test would see it)."""
    kernels: dict[str, CPUDispatcher] = {}
    for pkg in ("sim", "analysis"):
        root = importlib.import_module(f"audit_tune.{pkg}")
        for info in pkgutil.walk_packages(root.__path__, f"audit_tune.{pkg}."):
            mod = importlib.import_module(info.name)
            for name, obj in vars(mod).items():
                if isinstance(obj, CPUDispatcher) and obj.py_func.__module__ == info.name:
                    kernels[f"{info.name}.{name}"] = obj
    assert len(kernels) >= 30, sorted(kernels)  # the engine's, the fluid model's, the statistics'
    held = sorted(k for k, d in kernels.items() if not d.targetoptions.get("nogil"))
    assert not held, f"compiled without nogil=True: {held}"
