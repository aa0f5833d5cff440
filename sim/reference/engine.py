"""Wiring: one SimPy environment, per instance a frontend and a pipe per enabled backend."""
from __future__ import annotations

import time
from typing import Callable, Generator

import simpy

from audit_tune.sim.reference.buffered import Pipe
from audit_tune.sim.reference.clock import ARRIVAL, at
from audit_tune.sim.reference.frontend import Frontend
from audit_tune.sim.result import BackendStats, InstanceStats, Result
from audit_tune.sim.scenario import Scenario, result_config
import numpy as np

from audit_tune.sim.workload import add_level_counts, iter_events, iter_requests

ENGINE = "reference"


def run(sc: Scenario, progress: Callable[[float], None] | None = None) -> Result:
    wall0 = time.perf_counter()
    sc.validate()
    env = simpy.Environment()
    w = sc.workload
    insts: list[InstanceStats] = []
    all_pipes: list[list[Pipe]] = []
    finished: list[float] = [0.0]
    for i in range(w.instances):
        pipes: dict[str, Pipe] = {}
        bstats: dict[str, BackendStats] = {}
        for name in sc.enabled:
            opts = sc.flags.backend(name)
            bstats[name] = BackendStats(name, opts.mode, sc.interval)
            pipes[name] = Pipe(env, name, opts, bstats[name], sc.seed, i, sc.receiver, sc.log_writer,
                               sc.flags.webhook_initial_backoff, sc.throttle_initial_tokens)
        st = InstanceStats(f"apiserver-{i}", bstats)
        insts.append(st)
        all_pipes.append(list(pipes.values()))
        fe = Frontend(env, pipes, st, sc.seed, i, sc.request_timeout)
        env.process(_drive(env, sc, fe, i, progress if i == 0 else None, finished))
    if sc.drain:
        env.run()
        end = max(finished)  # stale window timers may still sit in the queue after that
    else:
        env.run(until=w.duration)
        end = env.now
    for st, pipes_i in zip(insts, all_pipes):
        st.end_time = end
        for pipe in pipes_i:
            pipe.stats.in_flight_at_end = pipe.held_events
    return Result(ENGINE, sc.seed, result_config(sc), insts, "webhook" if "webhook" in sc.enabled else "log",
                  simulated_seconds=end, wall_seconds=time.perf_counter() - wall0, interval=sc.interval)


def _drive(env: simpy.Environment, sc: Scenario, fe: Frontend, inst: int, progress, finished: list[float]) -> Generator:
    """Feed this instance's traffic, then stop its backends as the apiserver does on shutdown."""
    w = sc.workload
    last = 0.0
    if sc.all_batch:
        for chunk in iter_events(w, sc.seed, inst):
            fe.stats.requests_total += add_level_counts(w, fe.stats.level_total, chunk.class_counts)
            ts, sz, mt, lv = chunk.t.tolist(), chunk.size.tolist(), chunk.meta.tolist(), chunk.level.tolist()
            n = len(ts)
            j = 0
            while j < n:
                t = ts[j]
                yield at(env, t, ARRIVAL)
                while j < n and ts[j] == t:
                    fe.offer_batch(t, sz[j], mt[j], lv[j])
                    j += 1
            last = ts[-1] if n else last
            if progress:
                progress(min(last / w.duration, 1.0))
    else:
        plans = [c.stages(w.policy_omit_stages) for c in w.classes]
        procs = []
        for rc in iter_requests(w, sc.seed, inst):
            fe.stats.requests_total += add_level_counts(w, fe.stats.level_total,
                                                        np.bincount(rc.cls, minlength=len(w.classes)))
            for t, ci, rq in zip(rc.t.tolist(), rc.cls.tolist(), rc.req.tolist()):
                yield at(env, t, ARRIVAL)
                procs.append(env.process(fe.request(t, w.classes[ci], plans[ci], rq)))
            procs = [p for p in procs if p.is_alive]
            if progress and len(rc.t):
                progress(min(float(rc.t[-1]) / w.duration, 1.0))
        for p in procs:
            if p.is_alive:
                yield p
    # stopCh closes when every in-flight request has finished (and not before the run's duration)
    yield at(env, max(w.duration, env.now), ARRIVAL)
    for pipe in fe.pipes.values():
        pipe.stop()
    for pipe in fe.pipes.values():
        if pipe.done is not None and pipe.done.is_alive:
            yield pipe.done
    finished.append(env.now)


