"""Wiring: one SimPy environment, per instance a frontend and a pipe per enabled backend."""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Generator

import numpy as np
import simpy

from audit_tune.sim.reference.buffered import Pipe
from audit_tune.sim.reference.clock import ARRIVAL, STOP, at
from audit_tune.sim.reference.frontend import Frontend
from audit_tune.sim.result import BackendStats, InstanceStats, Result
from audit_tune.sim.scenario import Scenario, result_config
from audit_tune.sim.shutdown import EventRouter, Lifetime, Plan, shutdown_report, split_after_close
from audit_tune.sim.workload import add_level_counts, iter_events, iter_requests

ENGINE = "reference"


def run(sc: Scenario, progress: Callable[[float], None] | None = None) -> Result:
    wall0 = time.perf_counter()
    sc.validate()
    w = sc.workload
    insts: list[InstanceStats] = []
    ends: list[float] = []
    lives = []
    for i in range(w.instances):
        bstats = {name: BackendStats.of(sc, name) for name in sc.enabled}
        st = InstanceStats(f"apiserver-{i}", bstats)
        insts.append(st)
        prog = progress if i == 0 else None
        if not sc.drain:
            env = simpy.Environment()
            pipes, fe = _instance(env, sc, i, bstats, st, None)
            env.process(_drive(env, sc, fe, i, prog, None, None))
            env.run(until=w.duration)
            for pipe in pipes.values():
                pipe.stats.in_flight_at_end = pipe.held_events
            ends.append(w.duration)
            continue
        plan = Plan(w, sc.shutdown, sc.request_timeout, sc.seed, i)
        router = EventRouter(w, sc.seed, i, plan)
        while True:
            lt = plan.current
            env = simpy.Environment(initial_time=lt.up)
            pipes, fe = _instance(env, sc, i, bstats, st, lt)
            env.process(_drive(env, sc, fe, i, prog, lt, router))
            env.process(_stop(env, sc, fe, lt))
            env.run(until=lt.kill if math.isfinite(lt.kill) else None)
            last = plan.final
            closed = plan.close(fe.finish if fe.finish is not None else lt.kill)
            closed.lost["blocking-call-at-exit"] += fe.cut_at_exit(closed.exit)
            primary = "webhook" if "webhook" in pipes else "log"
            for name, pipe in pipes.items():
                late = np.asarray(pipe.after_close)
                n_err, n_gone = split_after_close(late, closed.exit)
                pipe.stats.drop("buffered", n_err, float(late[0]) if n_err else 0.0)
                if name == primary:
                    st.events_total -= n_gone
                    closed.lost["not-emitted"] += n_gone + fe.not_emitted
                    if pipe.held_events:
                        b, f, r = pipe.kill_losses()
                        closed.lost["buffer-at-kill"] += b
                        closed.lost["in-flight-at-kill"] += f
                        closed.lost["retry-chain-at-kill"] += r
                pipe.stats.in_flight_at_end = 0 if math.isfinite(lt.kill) else pipe.held_events
            if last:
                ends.append(closed.exit)
                break
        lives.append((plan, router.refused))
    end = max(ends)
    for st in insts:
        st.end_time = end
    res = Result(ENGINE, sc.seed, result_config(sc), insts, "webhook" if "webhook" in sc.enabled else "log",
                 simulated_seconds=end, wall_seconds=time.perf_counter() - wall0, interval=sc.interval)
    if lives:
        res.extra.update(shutdown_report(lives))
    return res


def _instance(env: simpy.Environment, sc: Scenario, i: int, bstats: dict[str, BackendStats], st: InstanceStats,
              lt: Lifetime | None) -> tuple[dict[str, Pipe], Frontend]:
    """One apiserver process: a fresh pipe per backend (empty buffer, full throttle), its frontend."""
    first = lt is None or lt.up == 0.0
    pipes = {name: Pipe(env, name, sc.flags.backend(name), bstats[name], sc.seed, i, sc.receiver, sc.log_writer,
                        sc.flags.webhook_initial_backoff, sc.throttle_initial_tokens if first else None)
             for name in sc.enabled}
    return pipes, Frontend(env, pipes, st, sc.seed, i, sc.request_timeout)


def _stop(env: simpy.Environment, sc: Scenario, fe: Frontend, lt: Lifetime) -> Generator[simpy.Event, object, None]:
    """The audit stopCh closes once requests have drained (sim/shutdown.py); ``Shutdown`` returns
    when every backend has drained and its goroutines ended; the process exits after that."""
    yield at(env, lt.drained, STOP)
    while fe.running:
        # blocking modes: the wait group (outside the timeout filter) lets a request go when it
        # ends or when the client had its 504, whichever is first
        first = min(fe.running.values())
        if first <= env.now:
            for p in [p for p, d in fe.running.items() if d <= env.now]:
                del fe.running[p]
            continue
        yield env.any_of([*fe.running, at(env, first, STOP)])
        for p in [p for p in fe.running if not p.is_alive]:
            del fe.running[p]
    for pipe in fe.pipes.values():
        pipe.stop()
    for pipe in fe.pipes.values():
        if pipe.done is not None and pipe.done.is_alive:
            yield pipe.done
    fe.finish = env.now
    fe.exit_at = lt.exit_time(env.now, sc.request_timeout)


def _drive(env: simpy.Environment, sc: Scenario, fe: Frontend, inst: int, progress: Callable[[float], None] | None, lt: Lifetime | None,
           router: EventRouter | None) -> Generator[simpy.Event, object, None]:
    """Feed this process's traffic: its events (all backends in batch mode) or its requests."""
    w = sc.workload
    if sc.all_batch:
        src = router.chunks() if router is not None else iter_events(w, sc.seed, inst)
        for chunk in src:
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
            if progress and n:
                progress(min(ts[-1] / w.duration, 1.0))
        return
    plans = [c.stages(w.policy_omit_stages) for c in w.classes]
    lo = lt.up if lt is not None else 0.0
    hi = lt.not_accepting if lt is not None else math.inf
    for rc in iter_requests(w, sc.seed, inst):
        fe.stats.requests_total += add_level_counts(w, fe.stats.level_total,
                                                    np.bincount(rc.cls, minlength=len(w.classes)))
        for t, ci, rq in zip(rc.t.tolist(), rc.cls.tolist(), rc.req.tolist()):
            if not lo <= t < hi:
                continue  # another process's request, or refused while none accepted
            yield at(env, t, ARRIVAL)
            proc = env.process(fe.request(t, w.classes[ci], plans[ci], rq))
            if not w.classes[ci].long_running:
                fe.running[proc] = t + sc.request_timeout
        if progress and len(rc.t):
            progress(min(float(rc.t[-1]) / w.duration, 1.0))


