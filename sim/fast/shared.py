"""Several flag sets over one generated workload: :func:`run_many`.

A scenario's events depend on its workload and seed only (``sim.workload.iter_events``), never on
the audit flags; so do the lifetimes of the shutdown plan when there are no restarts
(``sim.shutdown.Plan``: the run's end is the only SIGTERM). Scenarios that differ in their flags
(or in anything else a backend reads from its own scenario: receiver, log writer, enabled
backends, shutdown delays, request timeout) can therefore share one pass of generated events: per
apiserver one event source, and per scenario its own backends, statistics and plan, every chunk
fed to each (``engine.run_lanes``). Generating the events is 40-50 % of a fast run of a
recommender task: three flag sets of one 300 s stretch (170 k-1.4 M events) took 0.63-0.69 of the
CPU time of three separate runs (measured on ``bench/bench_recommend.py``'s snapshot).

A scenario the fused path serves (``arrivals.fusable``) runs fused when it is alone. In company
(every scenario of the group fusable) the group's events are drawn once per apiserver by the fused
path's compiled generator (``arrivals.stream``, bit for bit ``iter_events``'s times), a block of
``engine.STREAM_BLOCK`` times at a time, and each block is fed to every flag set's collector as the
array path feeds a chunk: no numpy generation, and only times (one event size, so no sizes, levels
or stages). Measured on ``bench/bench_recommend.py``'s snapshot (CPU seconds of one in-process
recommendation, three runs each, 2026-12-07): 4.56 s with numpy's generation for the groups, 4.20 s
with the shared stream; every fusable run fused alone instead of sharing: 5.2-5.3 s. The latency
mean and the throttle-wait total of a run are sums over blocks, so they can differ from the run
alone's (other chunks) in their last bits; every count, maximum and percentile is the same.

Not shared: scenarios the reference model runs (``engine.fallback_reason``) and restarts (the
lifetimes, so which events each process emits, depend on when the previous process exited, which
depends on the flags). Those run on their own, as ``engine.run``.
"""
from __future__ import annotations

from collections.abc import Sequence

from audit_tune.sim.fast.engine import fallback_reason, run, run_lanes
from audit_tune.sim.result import Result
from audit_tune.sim.scenario import Scenario


def shareable(sc: Scenario) -> bool:
    """Whether ``sc``'s events can come from a pass it shares (see the module docstring)."""
    return fallback_reason(sc) is None and not sc.shutdown.restart_at


def same_events(a: Scenario, b: Scenario) -> bool:
    """Whether ``a`` and ``b`` see the same events: same workload and seed, and both drain or neither
    (a run without the shutdown sequence cuts its events at the duration)."""
    return a.seed == b.seed and a.drain == b.drain and (a.workload is b.workload or a.workload == b.workload)


def run_many(scs: Sequence[Scenario]) -> list[Result]:
    """``[engine.run(sc) for sc in scs]``, with the scenarios that see the same events run over one
    pass of them; results in order, each the same as ``engine.run(sc)`` (``wall_seconds`` aside:
    a shared pass gives each of its scenarios an even share of its time)."""
    out: list[Result | None] = [None] * len(scs)
    groups: list[list[int]] = []
    for k, sc in enumerate(scs):
        sc.validate()
        if not shareable(sc):
            continue
        g = next((g for g in groups if same_events(scs[g[0]], sc)), None)
        if g is None:
            groups.append([k])
        else:
            g.append(k)
    for g in groups:
        if len(g) > 1:
            for k, res in zip(g, run_lanes([scs[k] for k in g])):
                out[k] = res
    return [res if res is not None else run(sc) for sc, res in zip(scs, out)]
