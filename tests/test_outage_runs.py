"""The failure scenarios' simulation runs on the pool (analysis/outage_runs.py)."""
from __future__ import annotations

import json
from pathlib import Path

from audit_tune.analysis import outage, outage_runs
from audit_tune.analysis.calibrate import calibrate
from audit_tune.analysis.taskpool import Workers
from audit_tune.cli.inputs import SAMPLE
from audit_tune.sim.config import parse_flags


def test_the_pool_deals_the_runs_of_a_call_to_a_few_work_items_and_gives_each_run_in_order() -> None:
    snap = json.loads(Path(SAMPLE).read_text())
    m = calibrate(snap, sorted(snap["instances"])[0])
    sc = outage.parse_scenarios(("30s:refuse",), 1.0, {})[0]
    flags = [parse_flags(f.split()) for f in ("--audit-webhook-batch-throttle-qps=0.5 --audit-webhook-batch-max-size=5 "
                                              "--audit-webhook-batch-buffer-size=20", "--audit-webhook-initial-backoff=1s", "")]
    tasks = [outage_runs.RunTask(m, f, 1, sc, d, 60.0) for f in flags for d in (10.0, 30.0, 45.0)]
    want = [outage_runs._run(t) for t in tasks]
    assert len(set(want)) == len(tasks) and any(w.lost for w in want), "runs that differ, some losing events"
    w = Workers(2)
    pool = outage_runs.Pool(w, "fast")
    try:
        assert w.parallel
        assert pool.map(tasks + tasks[:3]) == want + want[:3] and pool.runs == len(tasks)
        assert pool.map(tasks[::-1]) == want[::-1] and pool.runs == len(tasks)  # each distinct run once
    finally:
        pool.close()
        w.close()
