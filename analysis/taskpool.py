"""One local process pool for one recommendation's simulations (``docs/recommend.md``, "Speed").

:class:`Workers` owns a :class:`~concurrent.futures.ProcessPoolExecutor` of ``jobs`` processes,
started on first use with the ``fork`` start method where the platform has it (the workers inherit
the imported modules, and the numba kernels load from their on-disk cache, ``cache=True``, once per
worker). Every part of ``tune recommend`` that simulates (calibration replays, the search, the
comparison of the shown flag sets, the failure scenarios) runs through the same pool, so at most
``jobs`` simulations run at once.

:class:`KeyedRuns` runs one picklable module-level function over keyed items with a result cache: an
item whose key was run before is not run again. Work it is told about ahead of time
(:meth:`KeyedRuns.prefetch`) waits in a background queue and only fills processes the work asked
for now (:meth:`KeyedRuns.map`) leaves idle, so it never delays the search and takes the cores the
search's rounds leave idle. Results do not depend on ``jobs``: each item is a pure function of itself.
"""
from __future__ import annotations

import multiprocessing as mp
import os
from collections import deque
from collections.abc import Callable, Hashable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
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
    """``jobs`` worker processes, started on first use; ``jobs <= 1`` runs everything in-process."""

    def __init__(self, jobs: int) -> None:
        self.jobs = max(1, min(jobs, available_cores()))
        self._pool: ProcessPoolExecutor | None = None

    @property
    def parallel(self) -> bool:
        return self.jobs > 1

    def executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else None
            self._pool = ProcessPoolExecutor(max_workers=self.jobs, mp_context=ctx)
        return self._pool

    def map(self, fn: Callable[[T], R], items: list[T]) -> list[R]:
        """``[fn(x) for x in items]``, over the processes when there are several items and processes."""
        if not self.parallel or len(items) <= 1:
            return [fn(x) for x in items]
        return list(self.executor().map(fn, items))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None


class KeyedRuns(Generic[K, T, R]):
    """``fn`` over keyed items on :class:`Workers`, each key run once; background prefetching."""

    def __init__(self, workers: Workers, fn: Callable[[T], R]) -> None:
        self.workers, self.fn = workers, fn
        self._done: dict[K, R] = {}
        self._running: dict[K, Future[R]] = {}
        self._background: deque[tuple[K, T]] = deque()
        self._queued: set[K] = set()
        self.runs = 0  # distinct items run (or started)

    def _known(self, k: K) -> bool:
        return k in self._done or k in self._running or k in self._queued

    def prefetch(self, items: list[tuple[K, T]]) -> None:
        """Items a later :meth:`map` will ask for: run them when a process would otherwise idle."""
        if not self.workers.parallel:
            return
        for k, x in items:
            if not self._known(k):
                self._background.append((k, x))
                self._queued.add(k)
        self._top_up([])

    def _start(self, k: K, x: T) -> None:
        self._running[k] = self.workers.executor().submit(self.fn, x)
        self.runs += 1

    def _top_up(self, wanted: list[tuple[K, T]]) -> list[tuple[K, T]]:
        """Start wanted items first, then background ones, while fewer than 2 x jobs run."""
        limit = 2 * self.workers.jobs
        rest = list(wanted)
        while rest and len(self._running) < limit:
            k, x = rest.pop(0)
            self._start(k, x)
        while self._background and not rest and len(self._running) < limit:
            k, x = self._background.popleft()
            self._queued.discard(k)
            if k not in self._done and k not in self._running:
                self._start(k, x)
        return rest

    def _collect(self, block: bool) -> None:
        if not self._running:
            return
        done, _ = wait(list(self._running.values()), timeout=None if block else 0, return_when=FIRST_COMPLETED)
        for k in [k for k, f in self._running.items() if f in done]:
            self._done[k] = self._running.pop(k).result()

    def map(self, items: list[tuple[K, T]]) -> list[R]:
        """Results in item order; an item whose key was run (or is running, or queued) is not run again."""
        keys = [k for k, _ in items]
        if not self.workers.parallel:
            for k, x in items:
                if k not in self._done:
                    self._done[k] = self.fn(x)
                    self.runs += 1
            return [self._done[k] for k in keys]
        todo: dict[K, T] = {}
        for k, x in items:
            if k in self._queued:  # asked for now: out of the background queue
                self._queued.discard(k)
                self._background = deque((kk, xx) for kk, xx in self._background if kk != k)
            if k not in self._done and k not in self._running:
                todo.setdefault(k, x)
        rest = self._top_up(list(todo.items()))
        while any(k not in self._done for k in keys):
            self._collect(block=True)
            rest = self._top_up(rest)
        self._top_up([])
        return [self._done[k] for k in keys]

    def close(self) -> None:
        for f in self._running.values():
            f.cancel()
        self._running.clear()
        self._background.clear()
        self._queued.clear()
