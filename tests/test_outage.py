"""Receiver failures in the recommend objective (analysis/outage.py, analysis/check.py): scenarios,
losses, memory, outage tolerance, the frontier, and ``--evaluate``; on the bundled sample."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from audit_tune.analysis import memfactor, outage, outage_runs
from audit_tune.analysis.calibrate import calibrate
from audit_tune.basics.errors import InputError
from audit_tune.cli.app import main
from audit_tune.cli.inputs import SAMPLE
from audit_tune.sim.config import parse_flags

GOOD = ("--audit-webhook-batch-max-size=100 --audit-webhook-batch-throttle-qps=3 "
        "--audit-webhook-initial-backoff=20s --audit-webhook-batch-buffer-size=2000")


def run_json(capsys, *args: str) -> tuple[int, dict, str]:
    code = main(["recommend", "--no-progress", "--seeds", "1", "-f", "json", *args])
    out = capsys.readouterr()
    return code, json.loads(out.out) if out.out.strip() else {}, out.err


def snap_with_codes(codes: dict[str, float]) -> dict:
    return {"instances": {"a": {"webhook": {"requests_by_code": {"200": 1000.0, **codes}}}}}


@pytest.mark.parametrize("codes,kind", [({}, "refuse"), ({"503": 5.0, "429": 2.0}, "503"),
                                        ({"429": 9.0, "500": 1.0}, "429"), ({"<error>": 4.0}, "refuse")])
def test_default_outage_is_of_the_kind_the_data_shows(codes, kind) -> None:
    [sc] = outage.parse_scenarios((), 1.0, snap_with_codes(codes))
    assert (sc.kind, sc.duration) == (kind, outage.DEFAULT_OUTAGE)
    assert sc.origin.startswith("default") and (("no failed" in sc.origin) == (not codes))
    [given] = outage.parse_scenarios(("90s",), 3.0, snap_with_codes(codes))[:1]
    assert given.kind == kind and given.duration == 90


@pytest.mark.parametrize("args,word", [(["--tolerate-outage", "2m:boom"], "--tolerate-outage"),
                                       (["--tolerate-outage", "0s"], "--tolerate-outage"),
                                       (["--tolerate-outage", "soon:hang"], "--tolerate-outage"),
                                       (["--tolerate-slowdown", "0.5"], "--tolerate-slowdown")])
def test_bad_failure_options_are_one_line_exit_1(capsys, args, word) -> None:
    code = main(["recommend", "--no-progress", *args])
    err = capsys.readouterr().err
    assert code == 1 and word in err and err.strip().count("\n") == 0 and "Traceback" not in err
    with pytest.raises(InputError):
        outage.parse_scenarios([a for a in args if not a.startswith("--")] if "outage" in args[0] else (), 0.5
                               if "slowdown" in args[0] else 1.0, {})


def test_default_outage_recommendation_survives_and_evaluate_ignores_observed_drops(capsys) -> None:
    code, rep, err = run_json(capsys, "--evaluate", GOOD)
    f = rep["failures"]
    assert f["scenarios"][0]["origin"].startswith("default: one 2m0s refuse outage")
    # current flags did lose events in the sample, but --evaluate judges only the given flags
    assert rep["current_violations"][0].startswith("observed drops")
    assert code == 0 and rep["evaluated"]["ok"], rep["evaluated"]
    assert any(c["check"] == "2m0s refuse outage" for c in rep["evaluated"]["checks"])
    assert f["survivor"] == "recommended" and rep["recommended"]["ok"]
    budget = 512 * 2**20
    factor = rep["config"]["memory_factor"]
    assert factor["factor"] == memfactor.MEASURED and factor["source"].startswith("measured")
    tolerances = [o for o in f["outcomes"] if o["outage_tolerance_seconds"] is not None]
    assert {o["flag_set"] for o in tolerances} >= {"current", "recommended", "rule-of-thumb", "evaluated"}
    for o in tolerances:  # the tolerance search agrees with the scenario run (one instance here)
        assert o["peak_apiserver_memory_bytes"] == round(o["peak_memory_bytes"] * factor["factor"])
        survived = o["lost_webhook"] + o["lost_buffered"] == 0 and o["peak_apiserver_memory_bytes"] <= budget
        assert survived == (o["outage_tolerance_seconds"] >= 120), o
        if o["lost_if_twice_as_long"] is not None:
            assert o["lost_if_twice_as_long"] >= o["lost_webhook"] + o["lost_buffered"]
    # the recommended flags, re-simulated with the reference engine, lose nothing either
    snap = json.loads(Path(SAMPLE).read_text())
    m = calibrate(snap, sorted(snap["instances"])[0])
    flags = parse_flags(rep["recommended"]["flags"])
    sc = outage_runs.FailureScenario("refuse", 120.0)
    ref = outage_runs._run(outage_runs.RunTask(m, flags, 1, sc, 120.0, 300.0, "reference"))
    fast = outage_runs._run(outage_runs.RunTask(m, flags, 1, sc, 120.0, 300.0, "fast"))
    assert ref == fast and ref.lost == 0 and ref.events > 5000
    # the default backoff cannot outlast it: every batch's 5 attempts end within 8.125 x 10 s
    cur = next(o for o in f["outcomes"] if o["flag_set"] == "current")
    assert cur["lost_webhook"] > 0 and cur["outage_tolerance_seconds"] < 120


def test_frontier_when_no_flag_set_survives_within_the_budget(capsys) -> None:
    # event bytes only (--memory-overhead 1): the healthy candidates fit 3 MiB, the outage's backlog does not
    code, rep, err = run_json(capsys, "--memory-budget", "3MiB", "--memory-overhead", "1", "--tolerate-outage", "2m:refuse")
    f = rep["failures"]
    assert code == 3 and f["survivor"] is None and f["no_survivor"] in err
    assert f["frontier"] and all(r["lost"] > 0 or r["peak_apiserver_memory_bytes"] > 3 * 2**20 for r in f["frontier"])
    code = main(["recommend", "--no-progress", "--seeds", "1", "-f", "table", "--memory-budget", "3MiB",
                 "--memory-overhead", "1", "--tolerate-outage", "2m:refuse"])
    table = capsys.readouterr().out
    assert code == 3 and "Frontier" in table and "no flag set both survives" in table


def test_evaluate_answers_per_check_and_exits_3(capsys) -> None:
    code, rep, err = run_json(capsys, "--evaluate", "--audit-webhook-batch-buffer-size=100 --audit-webhook-batch-throttle-qps=1",
                              "--tolerate-outage", "1m:hang")
    checks = {c["check"]: c for c in rep["evaluated"]["checks"]}
    assert code == 3 and not rep["evaluated"]["ok"]
    last = err.strip().splitlines()[-1]
    assert not checks["headroom"]["ok"] and last.startswith("tune: error: --evaluate") and "headroom" in last
    assert "1m0s hang outage" in checks


def test_slowdown_scenario_holds_more_and_is_reported(capsys) -> None:
    snap = json.loads(Path(SAMPLE).read_text())
    m = calibrate(snap, sorted(snap["instances"])[0])
    flags = parse_flags(["--audit-webhook-batch-max-size=10", "--audit-webhook-batch-throttle-qps=20",
                         "--audit-webhook-batch-max-wait=1s"])
    scs = outage.parse_scenarios(("none",), 400.0, {})
    assert [s.kind for s in scs] == ["slowdown"] and scs[0].label == "latency x400"
    base = outage_runs._run(outage_runs.RunTask(m, flags, 1, outage_runs.FailureScenario("slowdown", factor=1.0), 0.0, 60.0))
    slow = outage_runs._run(outage_runs.RunTask(m, flags, 1, scs[0], 0.0, 60.0))
    assert slow.peak_memory > 3 * base.peak_memory and slow.recovery > base.recovery
    judge = outage.FailureJudge([m], scs, memfactor.MemoryBudget(1 << 30), 60.0, jobs=1)
    [o] = judge.judge([("x", flags)])
    judge.tolerances([o])
    assert o.peak_memory == slow.peak_memory and o.tolerance_seconds is None  # no tolerance for a slowdown


@pytest.mark.parametrize("text,factor", [("", memfactor.MEASURED), ("1", 1.0), ("2.5", 2.5)])
def test_memory_overhead_multiplies_held_event_bytes(text, factor) -> None:
    m = memfactor.parse_factor(text)
    assert m.factor == factor and m.apiserver_bytes(1000) == round(1000 * factor)
    assert m.source.startswith("measured" if not text else "--memory-overhead")
    assert f"x {factor:g}" in m.explain(2**20) and f"x {factor:g}" in m.line()


@pytest.mark.parametrize("bad", ["0.5", "zero", "inf"])
def test_bad_memory_overhead_is_one_line_exit_1(capsys, bad) -> None:
    code = main(["recommend", "--no-progress", "--memory-overhead", bad])
    err = capsys.readouterr().err
    assert code == 1 and "--memory-overhead" in err and err.strip().count("\n") == 0


def test_memory_overhead_decides_the_budget(capsys) -> None:
    """The same held bytes pass a budget with factor 1 and fail it with a factor that puts them over."""
    code, rep, _ = run_json(capsys, "--tolerate-outage", "2m:refuse", "--memory-overhead", "1")
    rec = next(o for o in rep["failures"]["outcomes"] if o["flag_set"] == "recommended")
    assert rep["config"]["memory_factor"] == {"factor": 1.0, "source": "--memory-overhead"}
    held = rec["peak_memory_bytes"]
    assert rec["ok"] and rec["peak_apiserver_memory_bytes"] == held
    factor = 2 * 512 * 2**20 / held  # twice the budget
    code, rep, _ = run_json(capsys, "--tolerate-outage", "2m:refuse", "--memory-overhead", f"{factor:.3f}",
                            "--evaluate", " ".join(rec["flags"]))
    ev = next(o for o in rep["failures"]["outcomes"] if o["flag_set"] == "evaluated")
    assert ev["peak_memory_bytes"] == held and not ev["ok"] and code == 3
    mem = next(c for c in rep["evaluated"]["checks"] if c["check"] == "2m0s refuse outage")
    assert not mem["ok"]

