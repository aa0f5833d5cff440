"""``tune recommend`` and its search, without Prometheus (synthetic snapshots from known loads).

Hooks for the end-to-end tests wired later (real Prometheus with backfilled fixtures, the live
local stack): :func:`write_snapshot` turns any snapshot dict into a file, and :func:`recommend_json`
runs the CLI on it and returns the parsed report; point them at a snapshot recorded by
``tune snapshot`` instead of :func:`analysis.calibrate.synthetic_snapshot`.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from audit_tune.analysis.calibrate import SyntheticWebhook, calibrate, synthetic_snapshot
from audit_tune.analysis.recommend import (
    Objective,
    Recommender,
    build_report,
    calibrate_all,
    fluid_drop_probability,
    nice_up,
    rule_of_thumb,
)
from audit_tune.analysis.taskpool import Workers
from audit_tune.cli.app import main
from audit_tune.sim.api import run
from audit_tune.sim.config import AuditFlags, parse_flags

BUSY = [1200.0 + 900.0 * np.sin(i / 3.0) ** 2 for i in range(12)]  # 6 min, peaks ~2,100 ev/s, bursty
FAST = ["--seeds", "2", "--jobs", "1", "--peak-window", "2m", "--no-progress"]


def write_snapshot(tmp_path: Path, snap: dict, name: str = "snap.json") -> Path:
    p = tmp_path / name
    p.write_text(json.dumps(snap))
    return p


def recommend_json(capsys, snapshot: Path, *args: str) -> tuple[int, dict | None, str]:
    # receiver failures are tests/test_outage.py's subject; here the healthy objective alone
    off = () if "--tolerate-outage" in args else ("--tolerate-outage", "none")
    code = main(["recommend", "--snapshot", str(snapshot), "-f", "json", *FAST, *off, *args])
    out = capsys.readouterr()
    return code, (json.loads(out.out) if out.out.strip() else None), out.err


@pytest.fixture(scope="module")
def busy_snapshot():
    return synthetic_snapshot(rates={"apiserver-0": BUSY, "apiserver-1": [r * 0.6 for r in BUSY]},
                              sigma=0.5, event_size=1100, seed=7)


def test_nice_numbers_and_docs_rule_of_thumb():
    assert [nice_up(x) for x in (0.7, 1.0, 3.2, 17, 2100)] == [0.8, 1.0, 4.0, 20.0, 2500.0]
    # the kubernetes.io example: 200 events/s -> batches of 100, 2 qps, buffer of 5 s = 1,000 events
    m = calibrate(synthetic_snapshot(rates={"a": [200.0] * 10}, sigma=0.0), "a")
    m = type(m)(**{**m.__dict__, "rates": tuple([200.0] * 10)})
    f, d = rule_of_thumb([m], AuditFlags())
    c = f.webhook.batch
    assert (c.max_batch_size, c.throttle_qps, c.buffer_size) == (100, 2.0, 1000)


def test_fluid_probability_limits(busy_snapshot):
    m = calibrate(busy_snapshot, "apiserver-0")
    big = parse_flags(["--audit-webhook-batch-throttle-qps=100"])
    small = parse_flags(["--audit-webhook-batch-throttle-qps=1", "--audit-webhook-batch-buffer-size=100"])
    assert fluid_drop_probability(m, big, m.duration)["buffered"] == 0
    assert fluid_drop_probability(m, small, m.duration)["buffered"] == 1
    # a longer horizon can only make a drop more likely
    mid = parse_flags(["--audit-webhook-batch-throttle-qps=5", "--audit-webhook-batch-buffer-size=2000"])
    p1 = fluid_drop_probability(m, mid, m.duration)["buffered"]
    p30 = fluid_drop_probability(m, mid, 30 * m.duration)["buffered"]
    assert p30 >= p1


def test_recommended_flags_give_zero_drops_on_the_same_load(busy_snapshot):
    # the healthy objective alone (receiver outages: tests/test_outage.py)
    obj = Objective(seeds=3, jobs=2, peak_window="2m", tolerate_outage=("none",))
    report = build_report(busy_snapshot, AuditFlags(), "defaults", obj, seed=1)
    rec = report.recommended
    assert rec is not None and rec.ok
    flags = parse_flags(rec.flags)
    c = flags.webhook.batch
    # analytic bound: capacity covers the observed 10 s peak x headroom on every instance
    peak = max(x.peak_burst_event_rate for x in report.calibration)
    assert c.drain_capacity >= 2 * peak
    assert c.max_batch_size * 1100 * 1.25 <= 12 * 1024 * 1024
    # re-simulate the whole observed window at x1 and the peak at x2 with seeds the search never used
    for name in ("apiserver-0", "apiserver-1"):
        m = calibrate(busy_snapshot, name)
        for seed in (101, 202, 303):
            d = run(m.scenario(flags, seed), engine="fast").to_dict(series=False)
            assert sum(d["errors"].values()) == 0, (name, seed, d["errors"])
        lo, hi = m.busiest_segments(120, 1)[0]
        d = run(m.scenario(flags, 404, scale=2.0, start=lo, stop=hi), engine="fast").to_dict(series=False)
        assert d["errors"]["buffered"] == 0
    # the three flag sets side by side, each with drops, memory, latency
    names = [e.name for e in report.comparison]
    assert names == ["current", "recommended", "rule-of-thumb"]
    for e in report.comparison:
        assert e.memory_bound > 0 and e.seeds == 3 and set(e.drops_headroom) == {"buffered", "webhook", "truncate"}
        assert {"drops_per_run_x1", "drops_per_run_headroom", "memory_bound_bytes", "delivery_latency_p99_seconds",
                "p_any_drop_horizon"} <= set(e.to_dict())
    ex = rec.explanation
    assert ex.binding_constraint in ex.slack and set(ex.flags) >= {"audit-webhook-batch-throttle-qps",
                                                                   "audit-webhook-batch-buffer-size"}
    assert report.to_dict()["recommended"]["flags"] == rec.flags


def test_search_screens_on_one_seed_and_chooses_as_the_full_evaluation(busy_snapshot):
    """A candidate that violates the objective on seed 1 violates it on every seed (the checks are
    monotone in the runs), so the search stops it there; survivors run every seed."""
    from audit_tune.analysis.recommend import webhook_flags

    models = [calibrate(busy_snapshot, n) for n in ("apiserver-0", "apiserver-1")]
    rec = Recommender(models, Objective(seeds=3, jobs=1, peak_window="2m"), seed=1)
    try:
        base = AuditFlags()
        small = webhook_flags(base, 100, 10, 1.0, 5.0, 5)    # 50 events/s of capacity for ~2,000 ev/s
        good = webhook_flags(base, 20000, 500, 5.0, 20.0, 30)
        named = [("small", small), ("good", good)]
        screened = rec._screened(named)
        assert [e.seeds for e in screened] == [1, 3]
        assert not screened[0].ok and screened[1].ok
        full = rec.evaluate_many(named, x1=False)
        assert [e.seeds for e in full] == [3, 3]
        assert not full[0].ok  # what the screen concluded holds on all seeds
        assert screened[1].to_dict() == full[1].to_dict()  # survivors are evaluated exactly as without the screen
        # screen: 2 sets x 1 seed x 2 instances; good: 2 more seeds x 2; then the full small: 2 more seeds x 2
        assert rec.runner.runs == 4 + 4 + 4
    finally:
        rec.close()


def test_receiver_limits_shape_the_batch(busy_snapshot):
    obj = Objective(seeds=2, jobs=1, peak_window="3m", receiver_max_qps=20, max_batch_bytes="300KiB")
    models = [calibrate(busy_snapshot, n) for n in ("apiserver-0", "apiserver-1")]
    r = Recommender(models, obj)
    cands, excluded = r.candidates(AuditFlags())
    for f in cands:
        c = f.webhook.batch
        assert c.throttle_qps * 2 <= 20
        assert c.max_batch_size * 1100 * 1.25 <= 300 * 1024
    assert any("--receiver-max-qps" in e for e in excluded) and any("--max-batch-bytes" in e for e in excluded)


def test_cli_too_small_current_flags_exit_3(tmp_path, capsys, busy_snapshot):
    p = write_snapshot(tmp_path, busy_snapshot)
    code, rep, err = recommend_json(capsys, p, "--current-flags",
                                    "--audit-webhook-batch-throttle-qps=1 --audit-webhook-batch-max-size=100")
    assert code == 3
    assert rep["current_ok"] is False and rep["recommended"]["ok"]
    cur = rep["comparison"][0]
    assert cur["name"] == "current" and sum(cur["drops_per_run_x1"].values()) > 0
    assert err.strip().count("\n") == 0 and "current flags violate the objective" in err
    # output echoes the effective configuration, seed and version
    assert rep["config"]["seed"] == 1 and rep["tool_version"]
    assert "--audit-webhook-batch-throttle-qps=1" in rep["config"]["current_flags"]
    assert rep["config"]["objective"]["headroom"] == 2.0


def test_cli_good_current_flags_exit_0_and_defaults_said(tmp_path, capsys):
    s = synthetic_snapshot(rates={"a": [100.0] * 12}, sigma=0.3)
    p = write_snapshot(tmp_path, s)
    # the defaults' retry chain (8.125 x 10 s) outlasts a 1 min outage, not the default 2 min one
    code = main(["recommend", "--snapshot", str(p), "-f", "json", "--seeds", "2", "--jobs", "1", "--peak-window", "2m",
                 "--tolerate-outage", "1m"])
    out = capsys.readouterr()
    assert code == 0, out.err
    rep = json.loads(out.out)
    assert rep["current_ok"] and "defaults" in rep["config"]["current_flags_source"]
    assert "--current-flags not given" in out.err


def test_cli_current_flags_from_a_manifest(tmp_path, capsys):
    s = synthetic_snapshot(rates={"a": [100.0] * 12}, sigma=0.3)
    p = write_snapshot(tmp_path, s)
    man = tmp_path / "kube-apiserver.yaml"
    man.write_text("apiVersion: v1\nkind: Pod\nspec:\n  containers:\n  - name: kube-apiserver\n    command:\n"
                   "    - kube-apiserver\n    - --etcd-servers=https://127.0.0.1:2379\n"
                   "    - --audit-webhook-batch-max-size=250\n")
    code, rep, err = recommend_json(capsys, p, "--current-flags", str(man))
    assert code == 0
    assert "--audit-webhook-batch-max-size=250" in rep["config"]["current_flags"]
    assert str(man) in rep["config"]["current_flags_source"]


def test_cli_not_enough_data_exit_4(tmp_path, capsys):
    s = synthetic_snapshot(rates={"a": [0.0] * 10, "b": [5.0, 6.0]}, sigma=0.0)
    p = write_snapshot(tmp_path, s)
    code = main(["recommend", "--snapshot", str(p), *FAST])
    err = capsys.readouterr().err
    assert code == 4
    line = [x for x in err.splitlines() if x.startswith("tune: error")]
    assert len(line) == 1 and "a: " in line[0] and "b: " in line[0]
    empty = write_snapshot(tmp_path, {**s, "instances": {}, "missing": [
        {"instance": "*", "item": "apiserver_audit_event_total", "why": "no series", "fix": "set --audit-policy-file"}]},
        "empty.json")
    code = main(["recommend", "--snapshot", str(empty), *FAST])
    err = capsys.readouterr().err
    assert code == 4 and "no series" in err and "set --audit-policy-file" in err


@pytest.mark.parametrize("args,needle", [
    (["--snapshot", "/nonexistent/snap.json"], "snap.json"),
    (["--headroom", "0.5"], "--headroom"),
    (["--max-drop-probability", "2"], "--max-drop-probability"),
    (["--memory-budget", "lots"], "--memory-budget"),
    (["-f", "xml"], "--format"),
    (["--current-flags", "--audit-webhook-batch-max-size=abc"], "not an integer"),
    (["--current-flags", "--audit-webhook-batch-max-sise=10"], "did you mean"),
])
def test_bad_input_is_one_line_exit_1(tmp_path, capsys, args, needle):
    p = write_snapshot(tmp_path, synthetic_snapshot(rates={"a": [50.0] * 6}, sigma=0.0))
    base = [] if args[0] == "--snapshot" else ["--snapshot", str(p)]
    code = main(["recommend", *base, *args, *FAST])
    err = capsys.readouterr().err
    assert code == 1
    lines = [x for x in err.splitlines() if x.startswith("tune: error")]
    assert len(lines) == 1 and needle in lines[0], err


def test_bad_snapshot_content_is_one_line(tmp_path, capsys):
    p = tmp_path / "s.json"
    p.write_text("{not json")
    assert main(["recommend", "--snapshot", str(p), *FAST]) == 1
    assert capsys.readouterr().err.count("tune: error") == 1


def test_without_input_uses_the_bundled_sample_and_says_so(capsys):
    from audit_tune.cli.commands.recommend import SAMPLE

    lost = sum(sum(i["errors_increase"].values()) for i in json.loads(SAMPLE.read_text())["instances"].values())
    assert lost > 0  # the sample was recorded with flags that drop events (sample-flags.txt)
    code = main(["recommend", "-f", "json", "--seeds", "1", "--jobs", "1", "--peak-window", "1m", "--no-progress"])
    out = capsys.readouterr()
    assert code == 3, out.err  # the flags in force lost events: they violate the objective (README: exits 3)
    assert "bundled sample" in out.err
    assert json.loads(out.out)["config"]["source"]["kind"] == "bundled sample"


def test_table_is_the_default_and_shows_the_comparison(tmp_path, capsys, busy_snapshot):
    p = write_snapshot(tmp_path, busy_snapshot)
    code = main(["recommend", "--snapshot", str(p), *FAST])
    out = capsys.readouterr().out
    assert code == 3  # the default 10 x 400 = 4,000 ev/s does not cover this load's peak x 2
    for needle in ("audit-tune", "seed=1", "Calibration", "rule-of-thumb", "recommended", "binding constraint",
                   "--audit-webhook-batch-throttle-qps=", "confidence"):
        assert needle in out, needle


def test_calibration_predicts_the_real_apiservers_drops_in_the_bundled_sample(capsys):
    """The bundled sample was recorded from a real kube-apiserver (scripts/record-sample.sh) running
    small flags: replaying it through the calibrated model must predict the buffered drops it saw."""
    import re

    from audit_tune.cli.commands.recommend import SAMPLE

    script = (Path(__file__).resolve().parents[1] / "scripts" / "record-sample.sh").read_text()
    m = re.search(r"FLAGS = \[(.*?)\]", script, re.S)
    assert SAMPLE.exists() and m, "bundled sample or its recording flags missing (scripts/record-sample.sh)"
    flags = re.findall(r'"(--audit-[^"]+)"', m.group(1))
    code = main(["recommend", "-f", "json", "--seeds", "1", "--jobs", "1", "--peak-window", "1m", "--no-progress",
                 "--current-flags", " ".join(flags)])
    out = capsys.readouterr()
    rep = json.loads(out.out)
    assert code == 3  # those flags drop events, and the snapshot shows it
    for c in rep["calibration"]:
        v = c["validation"]
        obs, pred = v["observed_errors"]["buffered"], v["predicted_errors"]["buffered"]
        if obs > 100:
            assert pred == pytest.approx(obs, rel=0.25), v
            assert v["confidence"] in ("high", "medium")


# ---------------------------------------------------------------------------------------------
# End to end against the real Prometheus (promtool-backfilled fixtures of analysis/fixtures.py).
# The live local stack version: record with scripts/record-sample.sh (see the sample test above).
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def drops_prom(prometheus_installed):
    from promfixtures import backfilled_prometheus

    with backfilled_prometheus(["drops"]) as (prom, truths):
        yield prom, truths["drops"]


def test_recommend_from_prometheus_equals_snapshot_path(drops_prom, tmp_path, capsys):
    prom, tr = drops_prom
    win = ["--end", str(int(tr.end)), "--history", f"{int(tr.end - tr.start)}s", "--step", "15s"]
    code = main(["recommend", "-p", prom.url, *win, "-f", "json", *FAST, "--tolerate-outage", "none"])
    out = capsys.readouterr()
    assert code == 3, out.err  # the fixture runs the default flags and drops events at its bursts
    live = json.loads(out.out)
    assert live["config"]["source"]["kind"] == "prometheus"
    # the same through a snapshot file recorded by 'tune snapshot'
    snap = tmp_path / "s.json"
    assert main(["snapshot", "-p", prom.url, *win, "-o", str(snap), "--no-progress"]) == 0
    capsys.readouterr()
    code, rep, _ = recommend_json(capsys, snap)
    assert code == 3
    assert rep["recommended"]["flags"] == live["recommended"]["flags"]
    # calibration against the fixture's truth: rates, and the buffered drops of the bursty instance
    by = {c["instance"]: c for c in live["calibration"]}
    for name, it in tr.instances.items():
        c = by[name]
        assert c["mean_event_rate"] == pytest.approx(it.mean_rate, rel=0.05)
        v = c["validation"]
        if it.drops_buffered > 1000:
            assert v["predicted_errors"]["buffered"] == pytest.approx(it.drops_buffered, rel=0.35), v
    cap = parse_flags(live["recommended"]["flags"]).webhook.batch.drain_capacity
    assert cap >= 2 * max(it.peak_rate for it in tr.instances.values())


def test_apiservers_the_snapshot_could_not_read_are_named():
    s = synthetic_snapshot(rates={"a": [100.0] * 6}, sigma=0.1)
    s["missing"] = [{"instance": "10.0.7.1:6443", "item": "apiserver_audit_event_total",
                     "why": "no samples: is the audit policy set?", "fix": "set --audit-policy-file"}]
    r = build_report(s, AuditFlags(), "defaults", Objective(seeds=1, jobs=1, peak_window="1m"))
    assert any(w.startswith("10.0.7.1:6443: not in the recommendation") and "--audit-policy-file" in w
               for w in r.warnings)


def test_impossible_memory_budget_exit_3_without_simulating(tmp_path, capsys):
    p = write_snapshot(tmp_path, synthetic_snapshot(rates={"a": [300.0] * 8}, sigma=0.3))
    code, rep, err = recommend_json(capsys, p, "--memory-budget", "100KiB")
    assert code == 3 and rep["recommended"] is None
    assert "no flag set meets the objective" in err
    assert all("--memory-budget" in e for e in rep["search"]["excluded"]) and rep["search"]["analytic_candidates"] == 0
    assert any("--memory-budget" in v for v in rep["current_violations"])


def test_failing_receiver_is_named_as_the_blocker(tmp_path, capsys):
    p = write_snapshot(tmp_path, synthetic_snapshot(rates={"a": [300.0] * 20}, sigma=0.3, webhook=SyntheticWebhook(failure_rate=0.3)))
    code, rep, err = recommend_json(capsys, p)
    assert code == 3 and rep["recommended"] is None
    assert rep["calibration"][0]["webhook_failure_rate"] == pytest.approx(0.3, abs=0.03)
    assert any("fix the receiver" in w for w in rep["no_recommendation_why"])
    assert "fix the receiver" in err and err.count("tune: error") == 1


def test_the_report_says_what_one_restart_at_the_peak_loses(tmp_path, capsys, busy_snapshot):
    code, doc, err = recommend_json(capsys, write_snapshot(tmp_path, busy_snapshot), "--headroom", "1.5")
    assert doc is not None, err
    r = doc["restart_at_peak"]
    peak = max(c["peak_burst_event_rate"] for c in doc["calibration"])
    assert r["events_per_second"] == pytest.approx(peak * 1.5, rel=1e-3)
    assert r["kill_after_seconds"] == 30.0
    names = [f["flag_set"] for f in r["flag_sets"]]
    assert names == (["current", "recommended"] if doc["recommended"] else ["current"])
    for f in r["flag_sets"]:
        assert f["events_lost"] == sum(f["lost_by_cause"].values())


@pytest.mark.parametrize("budget", [{}, {"memory_budget": "1GiB", "memory_overhead": "1"}])
def test_one_and_two_threads_give_the_same_report(busy_snapshot, budget):
    """The pool changes where runs happen, never what they give: the whole report (search, comparison,
    failure scenarios, with a survivor or with none, when the dominated candidates are confirmed beside
    the tolerance bisection, the restart at the peak beside the comparison) is the same with --jobs 1
    and --jobs 2, but for the jobs it echoes."""
    reps = {}
    for jobs in (1, 2):
        obj = Objective(seeds=2, jobs=jobs, peak_window="2m", **budget)
        d = build_report(busy_snapshot, AuditFlags(), "defaults", obj, seed=1).to_dict()
        assert d["config"]["objective"]["jobs"] == jobs
        d["config"]["objective"].pop("jobs")
        reps[jobs] = d
    assert reps[1]["recommended"] is not None
    assert reps[1]["failures"]["outcomes"], "the failure scenarios ran on the pool too"
    if budget:
        assert reps[1]["failures"]["survivor"] is not None
    else:  # the measured memory factor: no candidate holds the outage's backlog within 512 MiB
        assert reps[1]["failures"]["survivor"] is None and reps[1]["failures"]["frontier"]
        assert any(c["screened"] for r in reps[1]["search"]["rounds"] for c in r), "a dominated candidate to confirm"
    assert reps[1] == reps[2]


def test_candidates_are_compared_on_common_random_numbers(busy_snapshot):
    """Every candidate runs the same seeds on the same stretches, and a seed fixes the workload
    whatever the flags: the same events reach every candidate, so differences are the flags'."""
    from audit_tune.analysis.recommend import webhook_flags

    models = [calibrate(busy_snapshot, n) for n in ("apiserver-0", "apiserver-1")]
    rec = Recommender(models, Objective(seeds=3, jobs=1, peak_window="2m"), seed=1)
    try:
        a = webhook_flags(AuditFlags(), 100, 10, 1.0, 5.0, 5)  # drops most events
        b = webhook_flags(AuditFlags(), 20000, 500, 5.0, 20.0, 30)
        plan_a, index_a = rec._plan([("a", a)], True, 3)
        plan_b, index_b = rec._plan([("b", b)], True, 3)
        assert index_a == index_b and len(plan_a) == 2 * 2 * 3  # 2 loads x 2 instances x 3 seeds
        assert [t.key()[2:] for t in plan_a] == [t.key()[2:] for t in plan_b]
        assert sorted({t.seed for t in plan_a}) == [1, 2, 3]
        ra, rb = rec.runner.map(plan_a), rec.runner.map(plan_b)
        assert [r.events for r in ra] == [r.events for r in rb]
        assert sum(sum(r.errors.values()) for r in ra) > 0 == sum(r.errors["buffered"] for r in rb)
    finally:
        rec.close()


def test_a_candidate_whose_seed_1_key_exceeds_a_feasible_one_is_not_run_further(busy_snapshot):
    """Memory and p99 latency are maxima over runs, so a candidate's seed-1 (memory, latency) is a lower
    bound of its full one: once it exceeds a feasible candidate's full key it cannot be chosen."""
    from audit_tune.analysis.recommend import webhook_flags
    from audit_tune.analysis.search import choice_key

    models = [calibrate(busy_snapshot, n) for n in ("apiserver-0", "apiserver-1")]
    # event bytes only (--memory-overhead 1): both fit the budget, and memory decides between them
    rec = Recommender(models, Objective(seeds=3, jobs=1, peak_window="2m", memory_overhead="1"), seed=1)
    try:
        lean = webhook_flags(AuditFlags(), 20000, 500, 5.0, 20.0, 30)
        fat = webhook_flags(AuditFlags(), 160000, 500, 5.0, 20.0, 30)  # 8 x the buffer: far more memory
        screened = rec._screened([("fat", fat), ("lean", lean)])
        assert [e.seeds for e in screened] == [1, 3] and screened[0].ok and screened[1].ok
        assert fat in rec.dominated and lean not in rec.dominated
        assert rec.runner.runs == 4 + 4  # both on seed 1, then lean's 2 more seeds on 2 instances
        full = rec.evaluate_many([("fat", fat), ("lean", lean)], x1=False)
        assert all(e.ok for e in full) and min(full, key=choice_key).flags == lean  # the same choice
        assert choice_key(full[0]) >= choice_key(screened[0]) > choice_key(full[1])  # the bound held
        assert rec.confirm_many([fat]) == [True] and fat not in rec.dominated
    finally:
        rec.close()


def test_the_search_reports_dominated_candidates_and_still_chooses_the_least_memory(busy_snapshot):
    obj = Objective(seeds=3, jobs=2, peak_window="2m", tolerate_outage=("none",))
    rep = build_report(busy_snapshot, AuditFlags(), "defaults", obj, seed=1)
    trials = [t for r in rep.search.rounds for t in r]
    chosen = parse_flags(rep.recommended.flags)
    models = [calibrate(busy_snapshot, n) for n in ("apiserver-0", "apiserver-1")]
    rec = Recommender(models, obj, seed=1)
    try:  # every candidate that met the objective on seed 1, on every seed: the least-memory one is the choice
        from audit_tune.analysis.search import choice_key

        ok = [t for t in trials if not t.violations]
        full = rec.evaluate_many([(f"c{k}", parse_flags(t.flags, base=AuditFlags())) for k, t in enumerate(ok)], x1=False)
        best = min((e for e in full if e.ok), key=choice_key)
        assert tuple(best.args) == tuple(a for a in rep.recommended.flags if a in best.args)
        assert best.flags.webhook.batch == chosen.webhook.batch
        assert all(t.seeds == 1 for t in trials if t.screened) and all(t.seeds == 3 for t in ok if not t.screened)
    finally:
        rec.close()


def test_a_run_without_retries_is_the_same_under_any_initial_backoff(busy_snapshot):
    """The search's longer-backoff variants reuse the healthy runs of their base flags when no POST was
    retried: run both for real and compare."""
    from audit_tune.analysis.recommend import webhook_flags
    from audit_tune.analysis.simrunner import SimTask, sim_task

    m = calibrate(busy_snapshot, "apiserver-0")
    lo, hi = m.busiest_segments(120, 1)[0]
    f10 = webhook_flags(AuditFlags(), 20000, 500, 5.0, 20.0, 30)
    f60 = f10.__class__(**{**f10.__dict__, "webhook_initial_backoff": 60.0})
    for shape, scale in (("observed", 2.0), ("model", 1.0)):
        a, b = (sim_task(SimTask(m, f, 3, scale, lo, hi, shape), "fast") for f in (f10, f60))
        assert not a.retried and a == b
    rec = Recommender([m], Objective(seeds=2, jobs=1, peak_window="2m"), seed=1)
    try:
        first = rec.evaluate_many([("10s", f10)])
        runs = rec.runner.runs
        again = rec.evaluate_many([("60s", f60)])
        assert rec.runner.runs == runs  # reused, not run again
        assert first[0].to_dict() | {"name": "", "flags": []} == again[0].to_dict() | {"name": "", "flags": []}
    finally:
        rec.close()
    # a receiver that fails: runs retry, so the backoff matters and nothing is reused
    bad = SimTask(m, f10, 3, 1.0, lo, hi, "model")
    failing = m.__class__(**{**m.__dict__, "failure_rate": 0.3})
    assert sim_task(SimTask(failing, f10, 3, 1.0, lo, hi, "model"), "fast").retried and not sim_task(bad, "fast").retried


def test_fits_on_the_pool_give_the_models_and_skips_of_fits_one_by_one():
    """With two threads every instance is fitted on the pool: the same models, validations and
    skipped instances (with why) as fitting them one by one in the caller's thread."""
    snap = synthetic_snapshot(rates={"apiserver-0": BUSY, "apiserver-1": [r * 0.6 for r in BUSY],
                                     "idle": [0.0] * len(BUSY)}, sigma=0.5, event_size=1100, seed=7)
    got = {}
    for jobs in (1, 2):
        w = Workers(jobs)
        try:
            got[jobs] = calibrate_all(snap, AuditFlags(), workers=w)
        finally:
            w.close()
    models, vals, skipped = got[2]
    assert [m.name for m in models] == ["apiserver-0", "apiserver-1"] and [s.instance for s in skipped] == ["idle"]
    assert "did not increase" in skipped[0].why
    assert (models, vals, skipped) == got[1]
