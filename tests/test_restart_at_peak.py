"""One restart at the peak, per flag set (analysis/restart_at_peak.py)."""
from __future__ import annotations

from audit_tune.analysis.calibrate import SyntheticWebhook, calibrate, synthetic_snapshot
from audit_tune.analysis.restart_at_peak import restart_at_peak
from audit_tune.sim.config import AuditFlags, parse_flags
from audit_tune.sim.latency import Latency
from audit_tune.sim.restart import restart_loss


def _models(latency: Latency, failure_rate: float = 0.0):
    snap = synthetic_snapshot(rates={"a": [300.0] * 12, "b": [900.0] * 12}, sigma=0.2,
                              webhook=SyntheticWebhook(latency, failure_rate))
    return [calibrate(snap, "a"), calibrate(snap, "b")]


def test_the_busiest_apiserver_at_its_peak_times_headroom_per_flag_set():
    models = _models(Latency("fixed", 0.05))
    big = parse_flags(["--audit-webhook-batch-buffer-size=100000", "--audit-webhook-batch-throttle-qps=100"])
    r = restart_at_peak(models, [("current", AuditFlags()), ("recommended", big)], headroom=2.0)
    assert r is not None and r.instance == "b"
    busiest = max(models, key=lambda m: m.peak_burst_rate)
    assert r.rate == busiest.peak_burst_rate * 2.0
    assert [row.name for row in r.rows] == ["current", "recommended"]
    # each row is exactly restart_loss on that apiserver's receiver at that rate
    for row, flags in zip(r.rows, (AuditFlags(), big)):
        assert row.loss == restart_loss(flags, r.rate, kill_after=30.0, receiver=busiest.receiver())
    d = r.to_dict()
    assert d["flag_sets"][0]["events_lost"] == r.rows[0].loss.total
    assert len(r.lines()) == 2 and "one restart of b" in r.lines()[0]


def test_a_receiver_that_keeps_failing_loses_its_retry_chains_at_the_kill():
    models = _models(Latency("fixed", 0.05), failure_rate=0.6)
    r = restart_at_peak(models, [("current", AuditFlags())], headroom=1.0)
    assert r is not None
    row = r.rows[0]
    assert row.loss.killed and row.loss.total > 0
    assert row.loss.by_cause.get("retry-chain-at-kill", 0) > 0, row.loss.by_cause
