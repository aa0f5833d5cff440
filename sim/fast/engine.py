"""The fast engine: same ``Scenario`` in, same ``Result`` out as the reference, 100x+ faster.

Per apiserver and per enabled backend, events stream through in chunks (so memory does not grow
with the run's duration):

1. truncation per event (vectorised);
2. the collector (``collector.run_collector``, compiled) decides drops, batches and dispatch times;
3. async batches go through the retry loop (``tasks.run_tasks``, vectorised); sync (log) batches
   already carry their write end from step 2;
4. statistics as the reference defines them: delivery latencies, in-flight batches (a batch counts
   from its dispatch to its goroutine's end, starts before ends at one instant), memory held
   (bytes accepted minus bytes released strictly before each accept), occupancy per interval.

For the common shapes (one asynchronous backend; Poisson arrivals over a step rate profile, a
constant rate or on/off bursts; every audit event emitted at its request's arrival and of one
size; ``arrivals.source`` decides) steps 1 and 2 are fused: the events are drawn inside the
compiled collector (``fused.run_fused``) from the same random streams, so they never exist as
arrays; only accepted events' times are kept, for steps 3 and 4. Several flag sets over the same
events of that kind (``shared.run_many``) share one such stream, drawn once, its blocks of times
fed to each flag set's step 2 (``_run_stream``). Everything else (replayed
traces, deterministic or ramped arrivals, stage offsets, events of several sizes, log backends,
restarts) takes the array path above.

Scenarios with a backend in ``blocking``/``blocking-strict`` mode, or with latency that grows with
concurrency, are run by the reference model (their timing depends on every request's path); the
result's ``engine`` then says ``fast (reference model: <why>)``.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

import numpy as np

from audit_tune.basics.heap import keep_large_blocks
from audit_tune.sim.fast import arrivals
from audit_tune.sim.fast.backend import Backend
from audit_tune.sim.reference import run as ref
from audit_tune.sim.result import BackendStats, InstanceStats, Result
from audit_tune.sim.scenario import Scenario, result_config
from audit_tune.sim.shutdown import EventRouter, Plan, shutdown_report
from audit_tune.sim.workload import EventChunk, add_level_counts, iter_events

ENGINE = "fast"
# events per block of a fused stream shared by several flag sets (_run_stream): each block is one
# array-path call per lane, so its fixed numpy cost is paid per block, and its work arrays take
# ~72 bytes per event. Measured (CPU s of bench/bench_recommend.py's recommendation, jobs 1, best
# of 3, two rounds): 2^16 4.49/4.54, 2^18 4.30/4.23, 2^19 4.29/4.06, 2^20 4.23/4.05 (72 MiB a call).
STREAM_BLOCK = 1 << 19


def fallback_reason(sc: Scenario) -> str | None:
    if not sc.all_batch:
        return "a backend in blocking mode"
    if sc.receiver.per_inflight:
        return "latency grows with concurrency"
    return None


def run(sc: Scenario, progress: Callable[[float], None] | None = None) -> Result:
    sc.validate()
    why = fallback_reason(sc)
    if why:
        res = ref(sc, progress)
        res.engine = f"fast (reference model: {why})"
        return res
    return run_lanes([sc], progress)[0]


def run_lanes(scs: Sequence[Scenario], progress: Callable[[float], None] | None = None) -> list[Result]:
    """Validated scenarios (``fallback_reason`` None) over one pass of their events: one, or several
    with the same events (``shared.same_events``); each result is :func:`run`'s but for ``wall_seconds``."""
    keep_large_blocks()  # the work arrays of every chunk reuse freed heap (audit_tune/basics/heap.py)
    wall0 = time.perf_counter()
    w = scs[0].workload
    per: list[list[_Lane]] = [[] for _ in scs]
    for i in range(w.instances):
        for k, lane in enumerate(_instance(scs, i, progress if i == 0 else None)):
            per[k].append(lane)
    wall = (time.perf_counter() - wall0) / len(scs)
    out: list[Result] = []
    for sc, lanes in zip(scs, per):
        end = max(ln.end for ln in lanes)
        for ln in lanes:
            ln.st.end_time = end
        res = Result(ENGINE, sc.seed, result_config(sc), [ln.st for ln in lanes],
                     "webhook" if "webhook" in sc.enabled else "log", simulated_seconds=end, wall_seconds=wall,
                     interval=sc.interval)
        if sc.drain:
            res.extra.update(shutdown_report([(ln.plan, ln.refused) for ln in lanes if ln.plan is not None]))
        out.append(res)
    return out


def _instance(scs: Sequence[Scenario], i: int, progress: Callable[[float], None] | None) -> list[_Lane]:
    """Apiserver ``i`` of each scenario, lifetime by lifetime; each chunk fed to every lane's backends."""
    sc = scs[0]
    w = sc.workload
    lanes = [_Lane(s, i) for s in scs]
    plan = lanes[0].plan
    router: EventRouter | None = None  # built for the array path only: a fused stream has no restarts
    while True:
        for ln in lanes:
            ln.start()
        fsrc = arrivals.source(sc, i) if len(lanes) == 1 or all(arrivals.fusable(ln.sc) for ln in lanes) else None
        if fsrc is None and plan is not None and router is None:
            router = EventRouter(w, sc.seed, i, plan)
        src = iter(()) if fsrc is not None else router.chunks() if router is not None else iter_events(w, sc.seed, i)
        if fsrc is not None and len(lanes) == 1:
            _run_fused(fsrc, next(iter(lanes[0].runners.values())), lanes[0].st, progress)
        elif fsrc is not None:
            _run_stream(fsrc, lanes, progress)
        for chunk in src:
            for ln in lanes:
                ln.st.requests_total += add_level_counts(w, ln.st.level_total, chunk.class_counts)
            if plan is None and len(chunk) and chunk.t[-1] >= w.duration:
                chunk = _head(chunk, int(np.searchsorted(chunk.t, w.duration, side="left")))
            if not len(chunk):
                continue
            for ln in lanes:
                ln.push(chunk)
            if progress:
                progress(min(float(chunk.t[-1]) / w.duration, 1.0))
        if all([ln.close(fsrc is not None and len(lanes) == 1) for ln in lanes]):
            break
    for ln in lanes:
        ln.refused = router.refused if router is not None else 0
    return lanes


class _Lane:
    """One scenario's apiserver: statistics, lifetimes, backends, the chunk held back (the last is final)."""

    def __init__(self, sc: Scenario, i: int) -> None:
        self.sc, self.i = sc, i
        self.stats = {name: BackendStats.of(sc, name) for name in sc.enabled}
        self.st = InstanceStats(f"apiserver-{i}", self.stats)
        self.plan = Plan(sc.workload, sc.shutdown, sc.request_timeout, sc.seed, i) if sc.drain else None
        self.runners: dict[str, Backend] = {}
        self.held: tuple[EventChunk | np.ndarray, int] | None = None
        self.end = math.nan
        self.refused = 0

    def start(self) -> None:
        """The backends of the next lifetime (the whole run without a shutdown plan)."""
        sc, lt = self.sc, self.plan.current if self.plan is not None else None
        self.runners = {name: Backend(sc, self.i, name, sc.flags.backend(name), self.stats[name], lt)
                        for name in sc.enabled}
        self.held = None

    def push(self, chunk: EventChunk | np.ndarray) -> None:
        if self.held is not None:
            for r in self.runners.values():
                r.feed(self.held[0], self.held[1], final=False)
        self.held = (chunk, self.st.events_total)
        self.st.events_total += len(chunk)

    def close(self, fused: bool) -> bool:
        """Feed the last chunk as final and end the lifetime; True when it was the last one."""
        st, held = self.st, self.held
        for r in self.runners.values():
            if held is not None:
                r.feed(held[0], held[1], final=True)
            elif not fused:
                r.feed(None, st.events_total, final=True)
        plan, self.held = self.plan, None
        if plan is None:
            self.end, self.runners = self.sc.workload.duration, {}
            return True
        last = plan.final
        closed = plan.close(max(r.finish_time() for r in self.runners.values()))
        primary = "webhook" if "webhook" in self.runners else "log"
        for name, r in self.runners.items():
            gone = r.settle(closed, primary=name == primary)
            if name == primary:
                st.events_total -= gone
        if last:
            self.end, self.runners = closed.exit, {}  # only the statistics and the plan outlive the pass
        return last


def _run_stream(src: arrivals.Source, lanes: list[_Lane], progress: Callable[[float], None] | None) -> None:
    """Every event of a fused stream through several lanes' backends (scenarios the fused path serves,
    the same events, other flags): drawn once, by the compiled generator, a block of times at a time,
    each block fed to every lane as the array path feeds a chunk."""
    while True:
        t = arrivals.stream(src, STREAM_BLOCK)
        if len(t):
            for ln in lanes:
                ln.push(t)
            if progress:
                progress(min(float(t[-1]) / src.G[arrivals.G_DUR], 1.0))
        if src.ended:
            break
    for ln in lanes:
        for level, n in zip(src.levels, src.requests()):
            ln.st.level_total[level] += n
            ln.st.requests_total += n


def _run_fused(src: arrivals.Source, backend: Backend, st: InstanceStats,
               progress: Callable[[float], None] | None) -> None:
    """Every event of a fused stream through its one backend, call by call."""
    while True:
        before = src.drawn
        backend.feed_generated(src)
        st.events_total += src.drawn - before
        if src.ended:
            break
        if progress:
            progress(min(float(src.G[arrivals.G_LAST]) / src.G[arrivals.G_DUR], 1.0))
    for level, n in zip(src.levels, src.requests()):
        st.level_total[level] += n
        st.requests_total += n


def _head(c: EventChunk, k: int) -> EventChunk:
    """The events before the horizon (a run that does not drain stops there)."""
    return EventChunk(c.t[:k], c.size[:k], c.meta[:k], c.level[:k], c.req[:k], c.stage[:k], c.class_counts)

