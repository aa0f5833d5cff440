"""The simulation runs of the receiver failure scenarios (:mod:`analysis.outage`), on the pool.

A run is one instance's model under one flag set and one scenario, from its busiest step: an
outage of ``duration`` seconds (the workload runs until the receiver returns, then drains), or a
slowdown over the ``window``. Runs take milliseconds, so the runs of one call are dealt to a few
work items per thread.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import NamedTuple

import numpy as np

from audit_tune.analysis.calibrate import InstanceModel
from audit_tune.analysis.taskpool import KeyedRuns, Workers
from audit_tune.basics.jsondata import JsonObject
from audit_tune.sim.api import run
from audit_tune.sim.config import AuditFlags
from audit_tune.sim.latency import Latency
from audit_tune.sim.receiver import ATTEMPT_TIMEOUT, Outage
from audit_tune.sim.units import format_duration


@dataclass(frozen=True)
class FailureScenario:
    """One receiver failure the flags must tolerate."""

    kind: str  # refuse | hang | 503 | 429 | slowdown
    duration: float = 0.0  # outage seconds
    factor: float = 1.0  # slowdown: latency x factor
    origin: str = ""  # the option it came from, or which default and why
    retry_after: int | None = None  # 429/503 outages: whole seconds of Retry-After on the answers

    @property
    def is_outage(self) -> bool:
        return self.kind != "slowdown"

    @property
    def label(self) -> str:
        if self.is_outage:
            ra = f" (Retry-After {self.retry_after}s)" if self.retry_after is not None else ""
            return f"{format_duration(self.duration)} {self.kind} outage{ra}"
        return f"latency x{self.factor:g}"

    @property
    def attempt_seconds(self) -> float:
        """How long one attempt lasts in the outage: the 30 s client timeout when it hangs, or when
        Retry-After keeps the client retrying inside the attempt; about nothing otherwise."""
        return ATTEMPT_TIMEOUT if self.kind == "hang" or self.retry_after is not None else 0.0

    def outage(self, duration: float | None = None) -> Outage:
        d = self.duration if duration is None else duration
        if self.kind in ("refuse", "hang"):
            return Outage(0.0, d, self.kind)
        return Outage(0.0, d, "status", int(self.kind), self.retry_after)

    def to_dict(self) -> JsonObject:
        return {"label": self.label, "kind": self.kind, "duration_seconds": self.duration if self.is_outage else None,
                "factor": None if self.is_outage else self.factor, "origin": self.origin,
                "retry_after_seconds": self.retry_after}


def _stretch(m: InstanceModel, seconds: float) -> tuple[InstanceModel, int, int]:
    """The model (its history repeated if needed) and the steps from its busiest step, ``seconds`` long."""
    key = np.asarray(m.peak_rates if m.peak_rates else m.rates, dtype=float)
    start = int(np.argmax(key))
    steps = max(1, int(math.ceil(seconds / m.step)))
    n = len(m.rates)
    reps = int(math.ceil((start + steps) / n))
    if reps > 1:
        m = replace(m, rates=m.rates * reps, peak_rates=(m.peak_rates * reps if m.peak_rates else None),
                    times=tuple(i * m.step for i in range(n * reps)))
    return m, start, start + steps


RunKey = tuple[str, AuditFlags, int, FailureScenario, float, float]


class RunTask(NamedTuple):
    """One simulation: an instance's model and flags under one scenario, ``duration`` (outage) or
    ``window`` (slowdown) seconds long."""

    model: InstanceModel
    flags: AuditFlags
    seed: int
    scenario: FailureScenario
    duration: float
    window: float
    engine: str = "fast"

    @property
    def key(self) -> RunKey:
        return (self.model.name, self.flags, self.seed, self.scenario, round(self.duration, 3), self.window)


@dataclass(frozen=True)
class RunResult:
    """What one run lost and held: webhook/buffered drops, peak held event bytes, seconds from the
    receiver's return (or the window's end) until the pipeline was empty, events emitted."""

    webhook: int
    buffered: int
    peak_memory: int
    recovery: float
    events: int

    @property
    def lost(self) -> int:
        return self.webhook + self.buffered


def _run(task: RunTask) -> RunResult:
    m, flags, seed, sc, duration, window, engine = task
    if sc.is_outage:
        tm, lo, hi = _stretch(m, duration)
        base = tm.scenario(flags, seed, start=lo, stop=hi, shape="observed")
        rcv = replace(base.receiver, outages=(sc.outage(duration),))
        base = replace(base, workload=replace(base.workload, duration=duration))
    else:
        tm, lo, hi = _stretch(m, window)
        base = tm.scenario(flags, seed, start=lo, stop=hi, shape="observed")
        lat = base.receiver.latency
        rcv = replace(base.receiver, latency=Latency(lat.kind, lat.a * sc.factor, lat.b * sc.factor,
                                                     values=tuple(v * sc.factor for v in lat.values)))
    t = run(replace(base, receiver=rcv, record_latency=False, record_occupancy=False), engine=engine).totals()
    end = duration if sc.is_outage else window
    return RunResult(t.errors["webhook"], t.errors["buffered"], t.peak_memory_bytes,
                     max(0.0, t.simulated_seconds - end), t.events_total)


#: A run and the work item it goes to (runs of one call are dealt round-robin to a few work items).
Dealt = tuple[int, RunTask]


def _run_dealt(item: Dealt) -> RunResult:
    return _run(item[1])


def _run_many(items: list[Dealt]) -> list[RunResult]:
    return [_run(t) for _, t in items]


def _hand(item: Dealt) -> int:
    return item[0]


class Pool:
    """Runs :func:`_run` tasks on :class:`~analysis.taskpool.Workers` (the recommendation's pool, or
    a pool of its own of ``workers`` threads when that is a number), each distinct task once.

    A run takes milliseconds, so the runs of one call are dealt round-robin to two work items per
    thread: a few futures to wait for instead of one per run (one per run, or one work item per
    thread, measured the same)."""

    def __init__(self, workers: Workers | int, engine: str) -> None:
        self.engine = engine
        self._own = isinstance(workers, int)
        self.workers = Workers(workers) if isinstance(workers, int) else workers
        self._runs: KeyedRuns[RunKey, Dealt, RunResult] = KeyedRuns(self.workers, _run_dealt, _run_many, _hand)

    @property
    def runs(self) -> int:
        return self._runs.runs

    def map(self, tasks: list[RunTask]) -> list[RunResult]:
        hands = 2 * self.workers.jobs
        return self._runs.map([(t.key, (k % hands, t._replace(engine=self.engine))) for k, t in enumerate(tasks)])

    def close(self) -> None:
        self._runs.close()
        if self._own:
            self.workers.close()
