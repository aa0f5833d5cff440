"""``tune simulate`` end to end through the CLI entry point."""
from __future__ import annotations

import json

import pytest

from audit_tune.cli.app import main


def run_cli(capsys, *args):
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_demo_shows_drops_under_default_flags(capsys):
    code, out, err = run_cli(capsys, "simulate", "--duration", "30s", "-f", "json")
    assert code == 0
    d = json.loads(out)
    assert d["errors"]["buffered"] > 0 and d["engine"] in ("reference", "fast")
    assert d["config"]["flags"]["audit-webhook-batch-max-size"] == "400"
    assert d["config"]["tool_version"]
    assert "built-in demo" in err


def test_flags_verbatim_change_the_result(capsys):
    code, out, _ = run_cli(capsys, "simulate", "--rate", "6000", "--duration", "30s", "-f", "json",
                           "--audit-webhook-batch-throttle-qps=20")
    d = json.loads(out)
    assert code == 0 and d["errors"]["buffered"] == 0
    assert "--audit-webhook-batch-throttle-qps=20" in d["config"]["flags_changed"]


def test_table_output_and_max_drops_exit_3(capsys):
    code, out, err = run_cli(capsys, "simulate", "--rate", "8000", "--duration", "20s", "--max-drops", "0")
    assert code == 3
    assert "LOST" in out and "events_total" in out
    assert "--max-drops" in err and err.count("\n") == 1


@pytest.mark.parametrize("args,needle", [
    (["--audit-webhook-batch-max-size=0"], "--audit-webhook-batch-max-size=0"),
    (["--audit-webhook-batch-throttle-qps=-1"], "throttle-qps"),
    (["--duration", "-5s"], "--duration"),
    (["--duration", "5 fortnights"], "--duration"),
    (["--rate", "lots"], "--rate"),
    (["--webhook-latency", "lognormal:median=1s"], "p99"),
    (["--webhook-outage", "40s-10s"], "--webhook-outage"),
    (["--webhook-failure-rate", "2"], "--webhook-failure-rate"),
    (["--instances", "2", "--weights", "1,2,3"], "--weights"),
    (["--no-such-option"], "no-such-option"),
    (["--engine", "warp"], "--engine"),
    (["--format", "xml", "--duration", "1s"], "--format"),
])
def test_bad_input_is_one_line_exit_1(capsys, args, needle):
    code, out, err = run_cli(capsys, "simulate", *args)
    assert code == 1
    lines = [ln for ln in err.splitlines() if ln.startswith("tune: error")]
    assert len(lines) == 1 and needle in lines[0]
    assert "Traceback" not in err


def test_bad_trace_files(tmp_path, capsys):
    bad = tmp_path / "t.csv"
    bad.write_text("time\n0.1\n0.2\nbanana\n")
    code, _, err = run_cli(capsys, "simulate", "--trace", str(bad))
    assert code == 1 and "t.csv:4" in err
    back = tmp_path / "b.csv"
    back.write_text("0.5\n0.2\n")
    code, _, err = run_cli(capsys, "simulate", "--trace", str(back))
    assert code == 1 and "backwards" in err
    code, _, err = run_cli(capsys, "simulate", "--trace", str(tmp_path / "missing.csv"))
    assert code == 1 and "missing.csv" in err
    empty = tmp_path / "e.csv"
    empty.write_text("# nothing\n")
    code, _, err = run_cli(capsys, "simulate", "--trace", str(empty))
    assert code == 1 and "no arrivals" in err


def test_trace_and_rate_series_replay(tmp_path, capsys):
    tr = tmp_path / "trace.csv"
    tr.write_text("time,instance\n" + "".join(f"{i * 0.001:.3f},{i % 2}\n" for i in range(3000)))
    code, out, _ = run_cli(capsys, "simulate", "--trace", str(tr), "-f", "json", "--omit-stages", "RequestReceived")
    d = json.loads(out)
    assert code == 0 and d["events_total"] == 3000 and len(d["instances"]) == 2
    rs = tmp_path / "rates.csv"
    rs.write_text("t,rate\n0,1000\n10,8000\n20,1000\n")
    code, out, _ = run_cli(capsys, "simulate", "--rate-series", str(rs), "--duration", "30s", "-f", "json")
    d = json.loads(out)
    assert code == 0 and d["events_total"] == pytest.approx(100000, rel=0.03)


def test_output_file_is_written_atomically(tmp_path, capsys):
    target = tmp_path / "r.json"
    code, out, _ = run_cli(capsys, "simulate", "--rate", "100", "--duration", "5s", "-f", "json", "-o", str(target))
    assert code == 0 and out == "" and json.loads(target.read_text())["events_total"] > 0
    # a failing run leaves an existing file untouched
    target.write_text("keep")
    code, _, _ = run_cli(capsys, "simulate", "--rate", "bad", "-o", str(target))
    assert code == 1 and target.read_text() == "keep"


def test_scenario_file_round_trip(tmp_path, capsys):
    from audit_tune.sim.scenario import Scenario
    from tests.simhelp import scenario

    sc = scenario(["--audit-webhook-batch-max-size=50"], rate=500, duration=10)
    f = tmp_path / "s.json"
    f.write_text(json.dumps(sc.to_dict()))
    assert Scenario.load(f).to_dict() == sc.to_dict()
    code, out, _ = run_cli(capsys, "simulate", "--scenario", str(f), "-f", "json")
    assert code == 0 and json.loads(out)["batch_size"]["max"] <= 50
    f.write_text("{not json")
    code, _, err = run_cli(capsys, "simulate", "--scenario", str(f))
    assert code == 1 and "s.json" in err


@pytest.mark.parametrize("profile, needle", [
    ({"times": [0, 10, 5], "rates": [1, 2, 3]}, "increasing order"),
    ({"times": [0, 10], "rates": [1, 2, 3]}, "2 times for 3 rates"),
    ({"times": [-1], "rates": [1]}, ">= 0"),
    ({"times": [0], "rates": [1], "interp": "cubic"}, "use step or linear")])
def test_scenario_file_with_a_bad_rate_profile(tmp_path, capsys, profile, needle):
    from tests.simhelp import scenario

    doc = scenario(rate=500, duration=10).to_dict()
    doc["workload"]["arrivals"]["profile"] = profile
    f = tmp_path / "s.json"
    f.write_text(json.dumps(doc))
    code, out, err = run_cli(capsys, "simulate", "--scenario", str(f))
    assert code == 1 and out == "" and needle in err and len(err.strip().splitlines()) == 1, err


def test_help_has_an_example(capsys):
    code, out, _ = run_cli(capsys, "simulate", "--help")
    assert code == 0 and "Example" in out


def test_flags_kube_apiserver_refuses_exit_1_and_spin_warning(capsys):
    # kube-apiserver with a webhook refuses to start on these even with truncation off
    code, out, err = run_cli(capsys, "simulate", "--rate", "10", "--duration", "5s", "-f", "json",
                             "--audit-webhook-truncate-max-event-size=2", "--audit-webhook-truncate-max-batch-size=1")
    assert code == 1 and out == "" and "max-batch-size=1" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    code, out, err = run_cli(capsys, "simulate", "--rate", "10", "--duration", "5s", "-f", "json",
                             "--audit-log-path=/tmp/audit.log", "--audit-log-mode=batch",
                             "--audit-log-batch-max-size=5")
    assert code == 0 and json.loads(out)["events_total"] > 0
    spin = [ln for ln in err.splitlines() if "spin" in ln]
    assert len(spin) == 1 and "--audit-log-batch-max-wait=0s" in spin[0]
    # log batch options are ignored without --audit-log-path, as upstream
    code, out, err = run_cli(capsys, "simulate", "--rate", "10", "--duration", "5s", "-f", "json",
                             "--audit-log-mode=batch", "--audit-log-batch-buffer-size=0")
    assert code == 0 and "spin" not in err


@pytest.mark.parametrize("omit,answered,closed,late", [([], 2, 0, 2), (["--omit-stages", "RequestReceived"], 0, 2, 0)])
def test_request_timeout_rows_say_what_the_client_saw(capsys, omit, answered, closed, late):
    """blocking-strict, every attempt failing, 1 s backoff: the retry chain (8-10 s) outlasts
    --request-timeout=3s and ends before the run's SIGTERM (two requests, 10 s apart, in 20 s)."""
    args = ["simulate", "--request-rate", "0.1", "--duration", "20s", "--arrivals", "deterministic",
            "--audit-webhook-mode=blocking-strict", "--audit-webhook-initial-backoff=1s",
            "--webhook-failure-rate", "1", "--request-timeout", "3s", *omit]
    code, out, _ = run_cli(capsys, *args, "-f", "json")
    d = json.loads(out)
    assert code == 0 and d["requests_timed_out"] == answered + closed == 2
    assert (d["requests_timed_out_504"], d["requests_closed_at_timeout"]) == (answered, closed)
    assert d["requests_rejected_after_timeout"] == d["requests_rejected"] == late
    code, out, _ = run_cli(capsys, *args)
    rows = {ln.split("│")[1].strip(): ln.split("│")[2].strip() for ln in out.splitlines() if ln.count("│") == 3}
    assert code == 0 and rows["requests_timed_out (at --request-timeout)"] == "2"
    assert (rows["answered 504"], rows["connection closed, no complete answer"]) == (str(answered), str(closed))
    assert ("rejection counted after arrival p50 / max" in out) == bool(late)


def test_a_blocking_call_cut_off_at_the_exit_is_a_row_and_a_loss(capsys):
    """One request at 0 s, SIGTERM at 2 s: the process exits at its 3 s timeout, the retry chain
    (8-10 s) is cut off; no error is counted, but the event is lost for --max-drops."""
    args = ["simulate", "--request-rate", "0.5", "--duration", "2s", "--arrivals", "deterministic",
            "--audit-webhook-mode=blocking-strict", "--audit-webhook-initial-backoff=1s",
            "--webhook-failure-rate", "1", "--request-timeout", "3s"]
    code, out, _ = run_cli(capsys, *args, "-f", "json")
    d = json.loads(out)
    assert code == 0 and d["blocking_calls_at_exit"] == 1 and d["simulated_seconds"] == 3.0
    assert d["errors"]["webhook"] == d["requests_rejected"] == 0
    code, out, err = run_cli(capsys, *args, "--max-drops", "0")
    rows = {ln.split("│")[1].strip(): ln.split("│")[2].strip() for ln in out.splitlines() if ln.count("│") == 3}
    assert code == 3 and rows["blocking_calls_at_exit (cut off, never delivered)"] == "1"
    assert "No audit events lost" not in out and "blocking_calls_at_exit 1" in err
