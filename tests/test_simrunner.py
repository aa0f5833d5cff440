"""The recommender's simulation tasks (``analysis.simrunner``): the flag sets of one workload run as
one work item over one pass of generated events, and each task's summary is the one its scenario
run alone gives, in task order, at one or two processes."""
from __future__ import annotations

import numpy as np
import pytest

from audit_tune.analysis import simrunner
from audit_tune.analysis.calibrate import calibrate, synthetic_snapshot
from audit_tune.analysis.flagsets import webhook_flags
from audit_tune.analysis.simrunner import Runner, SimTask, sim_tasks
from audit_tune.analysis.taskpool import Workers
from audit_tune.sim.api import run
from audit_tune.sim.config import AuditFlags

BUSY = [1200.0 + 900.0 * np.sin(i / 3.0) ** 2 for i in range(8)]


@pytest.fixture(scope="module")
def models():
    snap = synthetic_snapshot(rates={"apiserver-0": BUSY, "apiserver-1": [r * 0.6 for r in BUSY]},
                              sigma=0.5, event_size=1100, seed=7)
    return [calibrate(snap, n) for n in ("apiserver-0", "apiserver-1")]


FLAGS = [AuditFlags(), webhook_flags(AuditFlags(), 100, 10, 1.0, 5.0, 5),
         webhook_flags(AuditFlags(), 20000, 500, 5.0, 20.0, 30)]


def tasks_of(models) -> list[SimTask]:
    """Every flag set at two seeds and two loads, flag set by flag set (as the recommender asks)."""
    return [SimTask(m, f, seed, scale, 2, 6, shape) for f in FLAGS for m in models for seed in (1, 2)
            for scale, shape in ((1.0, "model"), (1.5, "observed"))]


def alone(t: SimTask) -> dict:
    d = run(t.model.scenario(t.flags, t.seed, scale=t.scale, start=t.lo, stop=t.hi, shape=t.shape),
            engine="fast").to_dict(series=False)
    return {k: d[k] for k in ("events_total", "errors", "peak_memory_bytes", "max_inflight_batches",
                              "max_buffer_occupancy", "delivery_latency_seconds")}


def summary(r) -> dict:
    return {"events_total": r.events, "errors": r.errors, "peak_memory_bytes": r.peak_memory,
            "max_inflight_batches": r.max_inflight, "max_buffer_occupancy": r.max_occupancy,
            "delivery_latency_seconds": (r.p99, r.max_latency)}


def test_one_work_item_gives_each_task_its_own_run(models):
    ts = [t for t in tasks_of(models) if t.model is models[0] and t.seed == 1 and t.scale == 1.0]
    assert len(ts) == len(FLAGS)
    got = sim_tasks(ts, "fast")
    want = [alone(t) for t in ts]
    for g, w in zip(got, want):
        lat = w.pop("delivery_latency_seconds")
        assert summary(g) == {**w, "delivery_latency_seconds": (lat["p99"], lat["max"])}
    assert got[1].errors["buffered"] > 0 and got[0].events == got[1].events == got[2].events


@pytest.mark.parametrize("jobs", [1, 2])
def test_runner_results_in_task_order_each_task_once(models, jobs, monkeypatch):
    ts = tasks_of(models)
    items: list[int] = []  # the flag sets of each work item run in this process
    real = simrunner.run_many

    def counted(scs, engine):
        items.append(len(scs))
        return real(scs, engine=engine)

    monkeypatch.setattr(simrunner, "run_many", counted)
    w = Workers(jobs)
    r = Runner(w)
    try:
        r.prefetch(ts[:8])  # the first flag set, in the background
        got = r.map(ts)
        assert r.runs == len(ts)
        again = r.map(list(reversed(ts)))
        assert r.runs == len(ts) and again == list(reversed(got))
        if jobs == 1:  # the prefetch is ignored: 8 workloads of 3 flag sets each
            assert items == [3] * 8
    finally:
        r.close()
        w.close()
    for t, g in zip(ts, got):
        want = alone(t)
        lat = want.pop("delivery_latency_seconds")
        assert summary(g) == {**want, "delivery_latency_seconds": (lat["p99"], lat["max"])}
