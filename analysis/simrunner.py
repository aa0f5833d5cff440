"""Simulation tasks for the recommender: one instance's busiest stretch under one flag set, seed and
load, run in the caller's thread or on the recommendation's threads (``docs/recommend.md``, "Search").

Every candidate runs with the same seeds (``seed``, ``seed + 1``, ...): the comparisons between
candidates are paired (common random numbers), since a seed fixes the workload of a run whatever
the flags. For the same reason the tasks of one call that differ only in their flags are one work
item: the scenario is built once and the flag sets run over one pass of its generated events
(:func:`audit_tune.sim.api.run_many`).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from audit_tune.analysis.calibrate import InstanceModel
from audit_tune.analysis.taskpool import KeyedRuns, Workers
from audit_tune.sim.api import run_many
from audit_tune.sim.config import AuditFlags
from audit_tune.sim.result import Result

#: What makes two simulation tasks the same run: instance, flags, seed, scale, stretch, shape.
TaskKey = tuple[str, AuditFlags, int, float, int, int, str]
#: What makes two tasks the same workload (the task key without the flags).
WorkloadKey = tuple[str, int, float, int, int, str]


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

    def key(self) -> TaskKey:
        return (self.model.name, self.flags, self.seed, self.scale, self.lo, self.hi, self.shape)

    def workload_key(self) -> WorkloadKey:
        return (self.model.name, self.seed, self.scale, self.lo, self.hi, self.shape)


@dataclass(frozen=True)
class RunSummary:
    """What the recommender reads from one simulated run."""

    events: int
    errors: dict[str, int]
    peak_memory: int
    max_inflight: int
    max_occupancy: int
    p99: float | None
    max_latency: float | None
    retried: bool = False  # some POST took more than one attempt (so the backoff was used)


def sim_task(task: SimTask, engine: str) -> RunSummary:
    return sim_tasks([task], engine)[0]


def sim_tasks(tasks: list[SimTask], engine: str) -> list[RunSummary]:
    """``[sim_task(t, engine) for t in tasks]`` for tasks of one workload (same :meth:`SimTask.workload_key`):
    its scenario is built once, and every flag set runs over one pass of its events."""
    t = tasks[0]
    assert all(u.workload_key() == t.workload_key() for u in tasks)
    sc = replace(t.model.scenario(t.flags, t.seed, scale=t.scale, start=t.lo, stop=t.hi, shape=t.shape),
                 record_occupancy=False)  # the recommender reads the largest occupancy, not its series
    return [_summary(r) for r in run_many([sc.with_flags(u.flags) for u in tasks], engine=engine)]


def _summary(res: Result) -> RunSummary:
    """The run's counts and its p99 and largest delivery latency (the one percentile read here)."""
    t, q = res.totals(), res.delivery()
    return RunSummary(t.events_total, t.errors, t.peak_memory_bytes, t.max_inflight_batches,
                      t.max_buffer_occupancy, q.quantile(0.99) if q.count else None, q.max if q.count else None,
                      t.attempts > t.batches)


def _pool_task(item: tuple[SimTask, str]) -> RunSummary:
    return sim_task(*item)


def _pool_tasks(items: list[tuple[SimTask, str]]) -> list[RunSummary]:
    return sim_tasks([t for t, _ in items], items[0][1])


def _workload_of(item: tuple[SimTask, str]) -> tuple[WorkloadKey, str]:
    return item[0].workload_key(), item[1]


class Runner:
    """Runs simulation tasks on :class:`~analysis.taskpool.Workers` (in the caller's thread when ``jobs`` is 1),
    each distinct task once (:class:`~analysis.taskpool.KeyedRuns`); the tasks of one call with the
    same workload run as one work item (:func:`sim_tasks`)."""

    def __init__(self, workers: Workers, engine: str = "fast") -> None:
        self.workers, self.engine = workers, engine
        self._runs: KeyedRuns[TaskKey, tuple[SimTask, str], RunSummary] = KeyedRuns(
            workers, _pool_task, many=_pool_tasks, group=_workload_of)
        self._first_try: dict[TaskKey, RunSummary] = {}  # runs without a retry, by key without the backoff

    @property
    def runs(self) -> int:
        return self._runs.runs

    def _any_backoff(self, t: SimTask) -> TaskKey:
        """The task's key with the initial backoff left out (see :meth:`map`)."""
        return (t.model.name, replace(t.flags, webhook_initial_backoff=0.0), t.seed, t.scale, t.lo, t.hi, t.shape)

    def _items(self, tasks: list[SimTask]) -> list[tuple[TaskKey, tuple[SimTask, str]]]:
        return [(t.key(), (t, self.engine)) for t in tasks]

    def prefetch(self, tasks: list[SimTask], idle: bool = True) -> None:
        """Tasks a later :meth:`map` will ask for, run on threads the current work leaves idle
        (``idle``) or only along with work of the same workload (:meth:`KeyedRuns.prefetch`)."""
        self._runs.prefetch(self._items(tasks), idle)

    def map(self, tasks: list[SimTask]) -> list[RunSummary]:
        """Results in task order; a task already run (same instance, flags, seed, scale, stretch) is reused.

        So is a run that differs only in ``--audit-webhook-initial-backoff`` from one where every POST
        succeeded at its first attempt: the backoff is only slept between attempts
        (``k8s.io/apiserver/pkg/util/webhook``), and each attempt's draws depend on the seed, the batch
        and the attempt number, not on when it starts, so that run is the same under any backoff
        (``tests/test_recommend.py`` runs both and compares)."""
        out: list[RunSummary | None] = [self._first_try.get(self._any_backoff(t)) for t in tasks]
        todo = [t for t, r in zip(tasks, out) if r is None]
        fresh = iter(self._runs.map(self._items(todo)))
        res = [r if r is not None else next(fresh) for r in out]
        for t, r in zip(tasks, res):
            if not r.retried:
                self._first_try.setdefault(self._any_backoff(t), r)
        return res

    def close(self) -> None:
        self._runs.close()
