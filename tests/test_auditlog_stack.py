"""Audit logs from a real kube-apiserver (tests/auditstack.py: the log backend on, rotated and
gzipped every 1 MB, webhook to a sink with a store, Prometheus scraping every 5 s) under
'tune loadtest' with 1 s bursts every 10 s, far shorter than the scrape interval:

* the log snapshot and the Prometheus snapshot agree on the total events (within one scrape of load);
* the sink's store, read the same way, holds the same events (nothing was dropped);
* the log-based recommendation sees the bursts the Prometheus-based one cannot, and sizes for them.

Binaries come from the real-stack fixtures (built when missing, never skipped)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from audit_tune.cli.app import main
from tests.auditstack import recorded

SCRAPE = 5.0


def _rec(snap: Path, capsys) -> dict:
    code = main(["recommend", "--snapshot", str(snap), "-f", "json", "--no-progress", "--seeds", "2",
                 "--audit-webhook-batch-max-wait=1s", "--audit-webhook-batch-max-size=100"])
    cap = capsys.readouterr()
    assert code in (0, 3), cap.err
    return json.loads(cap.out)


@pytest.mark.stack
def test_log_and_prometheus_agree_and_the_log_sees_the_bursts(stack_binaries, prometheus_installed, tmp_path: Path,
                                                               capsys) -> None:
    with recorded(tmp_path, "burst:20,300@10s/1s", "60s", scrape=f"{SCRAPE:g}s") as r:
        assert r.loadtest_rc == 0
        hist = int(r.t1 - r.cluster.started_at) + 10
        prom_snap, log_snap, both = tmp_path / "prom.json", tmp_path / "log.json", tmp_path / "both.json"
        assert main(["snapshot", "-p", r.prom.url, "--history", f"{hist}s", "--step", "5s", "--end", str(int(r.t1)),
                     "--webhook-host", r.webhook_host, "-o", str(prom_snap), "--no-progress"]) == 0
        assert main(["snapshot", "--audit-log", f"apiserver={r.log_dir}", "--step", "5s", "-o", str(log_snap),
                     "--no-progress"]) == 0
        assert main(["snapshot", "--audit-log", f"apiserver={r.log_dir}", "-p", r.prom.url, "--step", "5s",
                     "--webhook-host", r.webhook_host, "-o", str(both), "--no-progress"]) == 0
        rotated = sorted(p.name for p in r.log_dir.iterdir())
        capsys.readouterr()
        store_snap = tmp_path / "store.json"
        assert main(["snapshot", "--audit-log", f"sink={r.store}", "--step", "5s", "-o", str(store_snap),
                     "--no-progress"]) == 0
    assert any(n.endswith(".gz") for n in rotated), rotated  # the 1 MB rotation and compression happened
    P = json.loads(prom_snap.read_text())
    L = json.loads(log_snap.read_text())
    B = json.loads(both.read_text())
    S = json.loads(store_snap.read_text())
    (pname, pinst), = P["instances"].items()
    linst = L["instances"]["apiserver"]
    rate = linst["events_increase"] / L["audit_log"]["instances"]["apiserver"]["span_seconds"]
    # totals: the log (every event, blocking mode) against apiserver_audit_event_total's increase
    tol = max(0.03 * linst["events_increase"], 2 * SCRAPE * rate)
    assert abs(linst["events_increase"] - pinst["events_increase"]) <= tol, (linst["events_increase"], pinst["events_increase"])
    # the combined snapshot takes drops and webhook figures from Prometheus, arrivals from the log
    bl = B["audit_log"]["instances"]["apiserver"]
    assert bl["prometheus_instance"] == pname
    assert bl["sources"]["event_rate"] == "audit log" and bl["sources"]["webhook"].startswith("prometheus")
    assert B["instances"]["apiserver"]["webhook"] is not None
    assert bl["completeness"]["complete"] is True and bl["completeness"]["missing_events"] == 0
    # the sink's store, read the same way: the events the webhook delivered, all of them
    sinst = S["instances"]["sink"]
    assert S["audit_log"]["instances"]["sink"]["completeness"]["source"] == "store"
    assert abs(sinst["events_increase"] - linst["events_increase"]) <= 0.01 * linst["events_increase"]
    # 1 s bursts of 300 req/s every 10 s: the log's 1 s peak shows them; a 5 s scrape averages them away
    log_b = {b["window"]: b for b in L["audit_log"]["instances"]["apiserver"]["bursts"]}
    prom_peak = max(pinst["event_rate_peak"]["v"]) if pinst.get("event_rate_peak") else max(pinst["event_rate"]["v"])
    assert log_b[1.0]["peak_rate"] >= 2 * prom_peak, (log_b[1.0], prom_peak)
    rp, rl = _rec(prom_snap, capsys), _rec(log_snap, capsys)
    cp, cl = rp["calibration"][0], rl["calibration"][0]
    assert cl["peak_burst_event_rate"] >= 2 * cp["peak_burst_event_rate"]
    assert cl["exact_trace_events"] == linst["events_increase"]

    def capacity(rep: dict) -> float:
        f = dict(a[2:].split("=", 1) for a in rep["recommended"]["flags"])
        return float(f["audit-webhook-batch-throttle-qps"]) * float(f["audit-webhook-batch-max-size"])

    assert capacity(rl) >= 2 * cl["peak_burst_event_rate"] > capacity(rp)
