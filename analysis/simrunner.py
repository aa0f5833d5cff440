"""Simulation tasks for the recommender: one instance's busiest stretch under one flag set, seed and
load, run in-process or over a local process pool (``docs/recommend.md``, "Search").
"""
from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

from audit_tune.analysis.calibrate import InstanceModel
from audit_tune.sim.api import run
from audit_tune.sim.config import AuditFlags


@dataclass(frozen=True)
class SimTask:
    """One run: ``model``'s steps ``lo:hi`` under ``flags``, rates x ``scale``, bursts of ``shape``."""

    model: InstanceModel
    flags: AuditFlags
    seed: int
    scale: float
    lo: int
    hi: int
    shape: str

    def key(self) -> tuple[str, AuditFlags, int, float, int, int, str]:
        return (self.model.name, self.flags, self.seed, self.scale, self.lo, self.hi, self.shape)


@dataclass(frozen=True)
class RunSummary:
    """What the recommender reads from one simulated run."""

    events: int
    errors: dict[str, float]
    peak_memory: int
    max_inflight: int
    max_occupancy: int
    p99: float | None
    max_latency: float | None


def sim_task(task: SimTask, engine: str) -> RunSummary:
    m = task.model
    res = run(m.scenario(task.flags, task.seed, scale=task.scale, start=task.lo, stop=task.hi, shape=task.shape),
              engine=engine)
    d = res.to_dict(series=False)
    return RunSummary(d["events_total"], d["errors"], d["peak_memory_bytes"], d["max_inflight_batches"],
                      d["max_buffer_occupancy"], d["delivery_latency_seconds"]["p99"],
                      d["delivery_latency_seconds"]["max"])


def _pool_task(item: tuple[SimTask, str]) -> RunSummary:
    return sim_task(*item)


class Runner:
    """Runs simulation tasks, in-process (jobs=1) or over a local process pool."""

    def __init__(self, jobs: int, engine: str = "fast", progress: Callable[[str], None] | None = None) -> None:
        self.jobs, self.engine, self.progress = jobs, engine, progress
        self._pool: ProcessPoolExecutor | None = None
        self._cache: dict[tuple[object, ...], RunSummary] = {}
        self.runs = 0

    def map(self, tasks: list[SimTask]) -> list[RunSummary]:
        """Results in task order; a task already run (same instance, flags, seed, scale, stretch) is reused."""
        keys = [t.key() for t in tasks]
        todo = list({k: t for k, t in zip(keys, tasks) if k not in self._cache}.items())
        self.runs += len(todo)
        if self.jobs <= 1 or len(todo) <= 1:
            res = [sim_task(t, self.engine) for _, t in todo]
        else:
            if self._pool is None:
                ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else None
                self._pool = ProcessPoolExecutor(max_workers=min(self.jobs, os.cpu_count() or 1), mp_context=ctx)
            res = list(self._pool.map(_pool_task, [(t, self.engine) for _, t in todo],
                                      chunksize=max(1, len(todo) // (4 * self.jobs))))
        for (k, _), r in zip(todo, res):
            self._cache[k] = r
        return [self._cache[k] for k in keys]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None
