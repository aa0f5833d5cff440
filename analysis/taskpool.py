"""One local pool of threads for one recommendation's simulations (``docs/recommend.md``, "Speed").

:class:`Workers` owns a :class:`~concurrent.futures.ThreadPoolExecutor` of ``jobs`` threads, started
on first use. The simulations spend their time in numba kernels compiled with ``nogil=True`` (the
fast engine's generator, collector and fused loops, the fluid walk, the percentile selection), which
run on every thread at once; only the Python between kernels takes turns on the interpreter lock.
Threads share the process's memory, so nothing is pickled: a work item hands over its instance's model
by reference, and the kernels are loaded from numba's on-disk cache (``cache=True``) once per process.
Every part of ``tune recommend`` that simulates (calibration replays, the search, the comparison of the
shown flag sets, the failure scenarios) runs through the same pool, so at most ``jobs`` simulations
run at once. What runs on it reads its inputs and writes only its own results.

:class:`KeyedRuns` runs one function over keyed items with a result cache: an item whose key was run
before is not run again. Work it is told about ahead of time (:meth:`KeyedRuns.prefetch`) waits in a
background queue and only fills threads the work asked for now (:meth:`KeyedRuns.map`) leaves idle,
so it never delays the search and takes the cores the search's rounds leave idle. Items that share
work (the recommender's flag sets of one workload) can run as one work item, their results still kept
per key: those of one call, and prefetched ones that have not started when a work item of their group
starts (they ride along with it, so their shared work is done once; with one thread, that is the only
way a prefetched item runs before it is asked for). Results do not depend on ``jobs``: each item is a
pure function of itself.
"""
from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable, Hashable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")
R = TypeVar("R")


def available_cores() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


class Workers:
    """``jobs`` worker threads, started on first use; ``jobs <= 1`` runs everything in the caller's thread."""

    def __init__(self, jobs: int) -> None:
        self.jobs = max(1, min(jobs, available_cores()))
        self._pool: ThreadPoolExecutor | None = None

    @property
    def parallel(self) -> bool:
        return self.jobs > 1

    def executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self.jobs, thread_name_prefix="audit-tune-sim")
        return self._pool

    def map(self, fn: Callable[[T], R], items: list[T]) -> list[R]:
        """``[fn(x) for x in items]``, over the threads when there are several items and threads."""
        if not self.parallel or len(items) <= 1:
            return [fn(x) for x in items]
        return list(self.executor().map(fn, items))

    def beside(self, fn: Callable[[], R]) -> Callable[[], R]:
        """Start ``fn`` (which submits its own work to these threads, through objects nothing else
        uses until it is done) in a thread beside the caller's next work, so that the two share the
        workers instead of waiting for each other; the returned function waits for its result
        (re-raising what it raised). With one worker, ``fn`` runs when the result is asked for."""
        if not self.parallel:
            return fn
        box: list[R] = []
        err: list[BaseException] = []

        def run() -> None:
            try:
                box.append(fn())
            except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
                err.append(e)

        self.executor()  # the workers exist before the thread uses them
        t = threading.Thread(target=run, name="audit-tune-beside", daemon=True)
        t.start()

        def result() -> R:
            t.join()
            if err:
                raise err[0]
            return box[0]
        return result

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None


class KeyedRuns(Generic[K, T, R]):
    """``fn`` over keyed items on :class:`Workers`, each key run once; background prefetching.

    With ``many`` and ``group``, the items of one call (:meth:`map` or :meth:`prefetch`) that run
    and have the same ``group(item)`` are one work item ``many(items)``, which must return
    ``[fn(x) for x in items]`` (cheaper when the items share work); results are still kept per key.
    A work item that starts takes along the prefetched items of its group still waiting."""

    def __init__(self, workers: Workers, fn: Callable[[T], R], many: Callable[[list[T]], list[R]] | None = None,
                 group: Callable[[T], Hashable] | None = None) -> None:
        self.workers, self.fn, self.many, self.group = workers, fn, many, group
        self._done: dict[K, R] = {}
        self._running: dict[K, Future[list[R]]] = {}
        self._live: dict[Future[list[R]], list[K]] = {}  # work items under way, with their keys in order
        # work items waiting in the background, each with its group (None without groups)
        self._background: deque[tuple[Hashable | None, list[tuple[K, T]]]] = deque()
        self._waiting: dict[Hashable, list[tuple[K, T]]] = {}  # the background's work items, by group
        self._group_of = group if many is not None else None  # what makes items one work item
        self._queued: set[K] = set()
        self.runs = 0  # distinct items run (or started)

    def _grouped(self, items: list[tuple[K, T]]) -> list[list[tuple[K, T]]]:
        """Work items: the distinct keys of ``items`` not run yet, by ``group`` (first seen first)."""
        by: dict[Hashable, list[tuple[K, T]]] = {}
        seen: set[K] = set()
        for n, (k, x) in enumerate(items):
            if k in seen or k in self._done or k in self._running:
                continue
            seen.add(k)
            by.setdefault(self._group_of(x) if self._group_of is not None else n, []).append((k, x))
        return list(by.values())

    def prefetch(self, items: list[tuple[K, T]], idle: bool = True) -> None:
        """Items a later :meth:`map` will ask for: run them when a worker would otherwise idle, or
        along with a work item of their group that starts first. With ``idle`` False (with groups
        only) they never start on their own: for items that work asked for later will take along,
        whose shared work would be done twice if they filled an idle worker first. With one
        worker and no groups, nothing runs until it is asked for."""
        group_of = self._group_of
        if group_of is None and (not idle or not self.workers.parallel):
            return
        for g in self._grouped([(k, x) for k, x in items if k not in self._queued]):
            self._queued.update(k for k, _ in g)
            gk = group_of(g[0][1]) if group_of is not None else None
            if gk is not None and gk in self._waiting:
                self._waiting[gk].extend(g)  # one waiting work item per group
                continue
            if idle:
                self._background.append((gk, g))
            if gk is not None:
                self._waiting[gk] = g
        if self.workers.parallel:
            self._top_up([])

    def _along(self, g: list[tuple[K, T]]) -> list[tuple[K, T]]:
        """``g`` with the waiting prefetched items of its group (taken out of the background)."""
        if self._group_of is None or not self._waiting:
            return g
        w = self._waiting.pop(self._group_of(g[0][1]), None)
        if not w:
            return g
        mine = {k for k, _ in g}
        extra = [(k, x) for k, x in w if k not in mine and k not in self._done and k not in self._running]
        self._queued.difference_update(k for k, _ in w)
        w.clear()  # its entry in the background queue is now empty and is skipped
        return g + extra

    def _start(self, g: list[tuple[K, T]]) -> None:
        g = self._along(g)
        ex = self.workers.executor()
        f = ex.submit(_one, self.fn, g[0][1]) if len(g) == 1 or self.many is None else ex.submit(self.many, [x for _, x in g])
        self._live[f] = [k for k, _ in g]
        for k, _ in g:
            self._running[k] = f
        self.runs += len(g)

    def _top_up(self, wanted: list[list[tuple[K, T]]]) -> list[list[tuple[K, T]]]:
        """Start wanted work items first, then background ones, while fewer than 2 x jobs run."""
        limit = 2 * self.workers.jobs
        rest = list(wanted)
        while rest and len(self._live) < limit:
            self._start(rest.pop(0))
        while self._background and not rest and len(self._live) < limit:
            gk, g = self._background.popleft()
            if gk is not None and self._waiting.get(gk) is g:
                del self._waiting[gk]
            self._queued.difference_update(k for k, _ in g)
            g = [(k, x) for k, x in g if k not in self._done and k not in self._running]
            if g:
                self._start(g)
        return rest

    def _collect(self, block: bool) -> list[K]:
        """Results of the work items that have finished (waiting for one with ``block``); their keys."""
        if not self._live:
            return []
        done, _ = wait(list(self._live), timeout=None if block else 0, return_when=FIRST_COMPLETED)
        finished: list[K] = []
        for f in done:
            for k, r in zip(self._live.pop(f), f.result()):
                self._done[k] = r
                del self._running[k]
                finished.append(k)
        return finished

    def _here(self, g: list[tuple[K, T]]) -> None:
        g = self._along(g)
        xs = [x for _, x in g]
        res = self.many(xs) if len(g) > 1 and self.many is not None else [self.fn(xs[0])]
        for (k, _), r in zip(g, res):
            self._done[k] = r
        self.runs += len(g)

    def map(self, items: list[tuple[K, T]]) -> list[R]:
        """Results in item order; an item whose key was run (or is running, or queued) is not run again."""
        keys = [k for k, _ in items]
        if not self.workers.parallel:
            for g in self._grouped(items):
                self._here(g)
            return [self._done[k] for k in keys]
        asked = {k for k in keys if k in self._queued}
        if asked:  # asked for now: out of the background queue
            self._queued -= asked
            for _, g in self._background:
                g[:] = [(k, x) for k, x in g if k not in asked]  # in place: _waiting holds the same lists
        rest = self._top_up(self._grouped(items))
        waiting = {k for k in keys if k not in self._done}  # keys hash their flag sets: each once here
        while waiting:
            waiting.difference_update(self._collect(block=True))
            rest = self._top_up(rest)
        self._top_up([])
        return [self._done[k] for k in keys]

    def close(self) -> None:
        for f in self._live:
            f.cancel()
        self._live.clear()
        self._running.clear()
        self._background.clear()
        self._waiting.clear()
        self._queued.clear()


def _one(fn: Callable[[T], R], x: T) -> list[R]:
    """One item's work item."""
    return [fn(x)]
