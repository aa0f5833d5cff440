"""The log backend in recommend (analysis/logbackend.py): the write-cost probe, blocking vs batch,
the log stall scenario, and both backends' flags in the outputs."""
from __future__ import annotations

import json

from audit_tune.analysis import logbackend
from audit_tune.cli.app import main
from audit_tune.sim.config import parse_flags


def test_probe_appends_and_rotates_and_says_it_measured_this_host(tmp_path) -> None:
    wc = logbackend.probe_write_cost(900, 100, lines=3000, folder=str(tmp_path))
    assert wc.per_event > 0 and "THIS host" in wc.source
    rotations = int(wc.source.split(" rotations")[0].rsplit(" ", 1)[1])
    assert rotations == (3000 * (900 - 80 + 80)) // (1 << 20)  # one per MiB written
    assert not list(tmp_path.iterdir())  # the probe's files are gone


def test_batch_drain_stall_loss_and_blocking_latency() -> None:
    batch = parse_flags(["--audit-log-path=/a.log", "--audit-log-mode=batch", "--audit-log-batch-buffer-size=500",
                         "--audit-log-batch-max-size=10", "--audit-log-batch-throttle-enable=true",
                         "--audit-log-batch-throttle-qps=20", "--audit-log-batch-throttle-burst=2"])
    j = logbackend.judge("b", batch, 1e-4, peak=100.0, headroom=2, epr=2, size=1000, stall=30, budget=1 << 30)
    assert j.drain == 200.0 and j.stall_loss == 100 * 30 - 500
    assert any("log stall drops" in v for v in j.violations) and not any("drain" in v for v in j.violations)
    slow = logbackend.judge("b", batch, 1e-2, peak=100.0, headroom=2, epr=2, size=1000, stall=0, budget=1 << 30)
    assert slow.drain == 100.0 and any("drain" in v for v in slow.violations)
    blocking = parse_flags(["--audit-log-path=/a.log"])
    k = logbackend.judge("k", blocking, 1e-4, peak=100.0, headroom=2, epr=2, size=1000, stall=30, budget=1 << 30)
    assert k.added_latency == 2e-4 and k.stall_loss == 0 and any("blocks every API request" in v for v in k.violations)
    rec = logbackend.recommend_log(blocking, 1e-4, 100.0, 2, 1000, 30)
    r = logbackend.judge("r", rec, 1e-4, peak=100.0, headroom=2, epr=2, size=1000, stall=30, budget=1 << 30)
    assert rec.log.mode == "batch" and not r.violations


def test_recommend_covers_the_log_backend_when_its_path_is_set(capsys) -> None:
    code = main(["recommend", "--no-progress", "--seeds", "1", "-f", "json", "--tolerate-outage", "none",
                 "--log-write-latency", "50us", "--tolerate-log-stall", "30s", "--current-flags",
                 "--audit-log-path=/var/log/audit.log --audit-log-mode=batch --audit-log-batch-buffer-size=100"])
    out = capsys.readouterr()
    rep = json.loads(out.out)
    lg = rep["log_backend"]
    assert code == 3 and lg["write_cost_source"] == "--log-write-latency" and abs(lg["write_cost_seconds"] - 5e-5) < 1e-12
    cur = lg["flag_sets"][0]
    assert cur["stall_loss_events"] > 0 and not cur["ok"]
    assert any("log stall" in v for v in rep["current_violations"])
    assert "--audit-log-mode=batch" in rep["recommended"]["flags"]
    assert any(f.startswith("--audit-webhook-batch-max-size") for f in rep["recommended"]["flags"])
    assert next(r for r in lg["flag_sets"] if r["name"] == "recommended")["ok"]


def test_bad_log_options_exit_1(capsys) -> None:
    for args in (["--tolerate-log-stall", "0s"], ["--log-write-latency", "fast"]):
        code = main(["recommend", "--no-progress", *args])
        err = capsys.readouterr().err
        assert code == 1 and args[0] in err and err.strip().count("\n") == 0
