"""The apiserver's shutdown sequence and restarts (sim/shutdown.py), on both engines."""
from __future__ import annotations

import json
from dataclasses import replace

import pytest

from audit_tune.cli.app import main
from audit_tune.sim.config import parse_flags
from audit_tune.sim.latency import Latency
from audit_tune.sim.receiver import Receiver
from audit_tune.sim.restart import restart_loss
from audit_tune.sim.shutdown import ShutdownOptions
from audit_tune.sim.workload import RequestClass
from tests.simhelp import lost, result, scenario

WATCH = RequestClass("watch", weight=0.5, level="Metadata", long_running=True, duration=5.0, first_byte=0.001)
GET = RequestClass("get", weight=0.5, level="Metadata")
WATCH_EVENTS = 3  # RequestReceived, ResponseStarted, ResponseComplete


def _watch_scenario(**sd):
    sc = scenario(["--audit-webhook-batch-max-wait=100ms"], rate=200.0, duration=10.0, classes=(GET, WATCH))
    return replace(sc, shutdown=ShutdownOptions(**sd)).validate()


@pytest.mark.parametrize("engine", ["fast", "reference"])
def test_watch_ends_after_the_audit_stop_are_buffered_errors(engine):
    d = result(_watch_scenario(), engine)
    # the pipeline stops at --duration; watches still open then end within 5 s, before the process
    # exits (the HTTP server waits for their connections up to the request timeout): buffered errors
    late = d["errors"]["buffered"]
    assert late > 0 and d["events_not_emitted"] == 0
    assert d["events_total"] == d["delivered"] + lost(d)
    assert 10.0 < d["simulated_seconds"] <= 15.0 + 1e-9
    # the grace period waits for them: delivered instead
    g = result(_watch_scenario(watch_grace=10.0), engine)
    assert g["errors"]["buffered"] == 0 and g["delivered"] == d["delivered"] + late


@pytest.mark.parametrize("engine", ["fast", "reference"])
def test_watches_outliving_the_request_timeout_are_never_emitted(engine):
    sc = replace(_watch_scenario(), request_timeout=2.0)
    d = result(sc, engine)
    # the HTTP server gives up at not_accepting + 2 s and the process exits: later watch ends vanish
    assert d["events_not_emitted"] > 0
    assert d["simulated_seconds"] == pytest.approx(12.0)
    assert d["events_total"] == d["delivered"] + lost(d)
    longer = result(replace(sc, shutdown=ShutdownOptions(delay=3.0)), engine)
    assert longer["events_not_emitted"] < d["events_not_emitted"]  # served 3 s more


def test_issue_example_ends_near_the_request_timeout_not_the_watch_lifetime(capsys):
    code = main(["simulate", "--rate", "100", "--duration", "1m", "--long-running-fraction", "0.5", "-f", "json"])
    d = json.loads(capsys.readouterr().out)
    assert code == 0
    assert d["simulated_seconds"] == pytest.approx(120.0)  # not 360 s: watches are not waited for
    # watches of 5 min opened in the last minute: their ResponseComplete is never emitted
    assert 0.15 < d["events_not_emitted"] / (d["events_total"] + d["events_not_emitted"]) < 0.3
    assert d["delivered"] == d["events_total"]


@pytest.mark.parametrize("engine", ["fast", "reference"])
def test_restart_kill_loses_what_was_in_flight_and_conserves_events(engine):
    rcv = Receiver(latency=Latency("fixed", 4.0))
    sc = scenario([], rate=500.0, duration=30.0, receiver=rcv)
    sc = replace(sc, shutdown=ShutdownOptions(restart_at=(10.0,), kill_after=2.0, restart_gap=1.0)).validate()
    d = result(sc, engine)
    loss = d["restart_loss"]
    assert loss["in-flight-at-kill"] > 0 and loss["retry-chain-at-kill"] == 0
    life = d["lifetimes"][0]
    assert life[0]["killed"] and life[0]["exit"] == pytest.approx(12.0) and life[1]["up"] == pytest.approx(13.0)
    killed = sum(v for k, v in loss.items() if k != "not-emitted")
    assert d["events_total"] == d["delivered"] + lost(d) + killed
    assert d["events_refused"] > 0  # requests between 10 s and 13 s found no apiserver
    # a grace period long enough to finish the 4 s POSTs loses nothing
    ok = result(replace(sc, shutdown=replace(sc.shutdown, kill_after=30.0)), engine)
    assert not ok["lifetimes"][0][0]["killed"]
    assert sum(ok["restart_loss"].values()) == 0


def test_restart_loss_function_by_cause():
    failing = Receiver(latency=Latency("fixed", 0.05), error_rate=0.6)
    r = restart_loss(parse_flags([]), 3000.0, receiver=failing, kill_after=5.0)
    assert r.killed and r.exit_seconds == pytest.approx(5.0)
    assert r.by_cause["retry-chain-at-kill"] > 0 and r.total == sum(r.by_cause.values())
    healthy = restart_loss(parse_flags([]), 3000.0)
    assert healthy.total == 0 and not healthy.killed


@pytest.mark.parametrize("args,needle", [
    (["--restart-at", "2m"], "--restart-at=120s"),
    (["--restart-at", "20s,10s"], "increasing"),
    (["--kill-after", "0s"], "--kill-after"),
    (["--shutdown-delay-duration", "-1s"], "shutdown-delay-duration"),
])
def test_bad_shutdown_options_exit_1(capsys, args, needle):
    code = main(["simulate", "--rate", "10", "--duration", "1m", "-f", "json", *args])
    err = capsys.readouterr().err
    assert code == 1 and needle in err and len(err.strip().splitlines()) == 1


def test_blocking_strict_rejection_after_the_request_timeout_is_a_504_first():
    from audit_tune.sim.receiver import Outage

    flags = ["--audit-webhook-mode=blocking-strict", "--audit-webhook-initial-backoff=10s"]
    down = Receiver(latency=Latency("fixed", 0.01), outages=(Outage(0.0, 1000.0, "status", 503),))
    # ten requests in 5 s, SIGTERM at 120 s: after every retry chain (4 backoffs of 10-33.75 s)
    sc = scenario(flags, trace=[0.5 * i for i in range(10)], duration=120.0, receiver=down, classes=(GET,))
    d = result(sc, "fast")
    # the chain outlasts the 60 s timeout: 504 first, rejection later
    assert d["requests_rejected"] == 10 and d["blocking_calls_at_exit"] == 0
    assert d["requests_timed_out"] == d["requests_timed_out_504"] == d["requests_rejected_after_timeout"] \
        == d["requests_rejected"]
    assert d["requests_closed_at_timeout"] == 0
    assert d["request_added_latency_seconds"]["p50"] > 60
    late = d["rejected_after_timeout_seconds"]
    assert 60 < late["p50"] <= late["max"] == pytest.approx(d["request_added_latency_seconds"]["max"])
    quick = result(scenario(["--audit-webhook-mode=blocking-strict", "--audit-webhook-initial-backoff=100ms"],
                            rate=2.0, duration=5.0, receiver=down, classes=(GET,)), "fast")
    assert quick["requests_rejected"] > 0 and quick["requests_timed_out"] == 0  # rejected within the timeout


@pytest.mark.parametrize("mode", ["blocking", "blocking-strict"])
def test_blocking_calls_outliving_the_process_are_cut_off_at_its_exit(mode):
    """SIGTERM at 5 s: the wait group lets each request go at its 60 s timeout while its retry
    chain (up to 77.5 s) carries on; the process exits after the last timeout, not after the
    chains, and their rejections and errors are never counted."""
    from audit_tune.sim.receiver import Outage

    flags = [f"--audit-webhook-mode={mode}", "--audit-webhook-initial-backoff=10s"]
    down = Receiver(latency=Latency("fixed", 0.01), outages=(Outage(0.0, 1000.0, "status", 503),))
    sc = scenario(flags, trace=[0.5 * i for i in range(10)], duration=5.0, receiver=down, classes=(GET,))
    ds = {e: result(sc, e) for e in ("reference", "fast")}
    assert {k: v for k, v in ds["reference"].items() if k not in ("engine", "wall_seconds")} == \
        {k: v for k, v in ds["fast"].items() if k not in ("engine", "wall_seconds")}
    d = ds["fast"]
    assert d["simulated_seconds"] == pytest.approx(4.5 + 60.0)  # the last request's timeout
    assert d["blocking_calls_at_exit"] == d["events_total"] == 10
    assert d["requests_rejected"] == d["requests_rejected_after_timeout"] == 0
    assert d["errors"]["webhook"] == d["delivered"] == d["in_flight_at_end"] == 0
    assert d["requests_timed_out"] == d["requests_timed_out_504"] == 10
    assert d["events_not_emitted"] == 10  # the RequestReceived call was cut: ResponseComplete never comes
    assert d["restart_loss"]["blocking-call-at-exit"] == 0  # the run's end, not a restart
    assert d["lifetimes"][0][0]["lost"]["blocking-call-at-exit"] == 10


def test_a_kill_cuts_off_the_blocking_calls_under_way_as_a_restart_loss():
    """Restart at 5 s, kill 30 s later: the wait group still waits for the 60 s timeouts, so the
    kubelet's kill ends the process, its blocking calls with it, before any request timed out."""
    from audit_tune.sim.receiver import Outage

    down = Receiver(latency=Latency("fixed", 0.01), outages=(Outage(0.0, 1000.0, "status", 503),))
    sc = scenario(["--audit-webhook-mode=blocking-strict", "--audit-webhook-initial-backoff=10s"],
                  trace=[0.5 * i for i in range(10)], duration=200.0, receiver=down, classes=(GET,))
    sc = replace(sc, shutdown=ShutdownOptions(restart_at=(5.0,), kill_after=30.0)).validate()
    d = result(sc, "fast")
    life = d["lifetimes"][0][0]
    assert life["killed"] and life["exit"] == pytest.approx(35.0)
    assert d["restart_loss"]["blocking-call-at-exit"] == d["blocking_calls_at_exit"] == 10
    assert d["requests_timed_out"] == d["requests_rejected"] == d["errors"]["webhook"] == 0
    assert d["events_total"] == d["delivered"] + lost(d) + d["blocking_calls_at_exit"] == 10


def _strict_timeout(omit: frozenset[str]) -> dict[str, dict]:
    """One request, every POST answered 503, a 3 s request timeout, 1 s backoff (the retry chain
    ends at 8.1-9.8 s), SIGTERM after the chain: each engine's result."""
    one = RequestClass("get", level="Metadata", omit_stages=omit)
    sc = scenario(["--audit-webhook-mode=blocking-strict", "--audit-webhook-initial-backoff=1s"], trace=(0.0,),
                  duration=20.0, receiver=Receiver(error_rate=1.0), classes=(one,))
    sc = replace(sc, request_timeout=3.0).validate()
    return {e: result(sc, e) for e in ("reference", "fast")}


KEYS = ("requests_timed_out", "requests_timed_out_504", "requests_closed_at_timeout", "requests_rejected",
        "requests_rejected_after_timeout", "rejected_after_timeout_seconds", "errors", "request_added_latency_seconds")


def test_request_received_blocking_past_the_timeout_is_a_504_and_a_late_rejection():
    ds = _strict_timeout(frozenset())
    assert {k: ds["reference"][k] for k in KEYS} == {k: ds["fast"][k] for k in KEYS}
    d = ds["fast"]
    assert d["requests_timed_out"] == d["requests_timed_out_504"] == 1 and d["requests_closed_at_timeout"] == 0
    assert d["requests_rejected"] == d["requests_rejected_after_timeout"] == 1
    assert d["errors"]["webhook"] == 1 and d["delivered"] == 0
    # counted when the fifth attempt fails: backoffs 1 + 1.5 + 2.25 + 3.375 s, each x U[1, 1.2)
    assert 8.125 <= d["rejected_after_timeout_seconds"]["max"] < 9.75 + 0.1


def test_response_complete_blocking_past_the_timeout_closes_the_connection_and_is_never_a_rejection():
    ds = _strict_timeout(frozenset({"RequestReceived"}))
    assert {k: ds["reference"][k] for k in KEYS} == {k: ds["fast"][k] for k in KEYS}
    d = ds["fast"]
    # the handler wrote its answer, then WithAudit's ResponseComplete call blocked past the deadline
    assert d["requests_timed_out"] == d["requests_closed_at_timeout"] == 1 and d["requests_timed_out_504"] == 0
    assert d["requests_rejected"] == d["requests_rejected_after_timeout"] == 0
    assert d["rejected_after_timeout_seconds"]["max"] is None
    assert d["errors"]["webhook"] == 1 and 8.125 <= d["request_added_latency_seconds"]["max"] < 9.85


def test_a_slow_handler_past_the_timeout_is_a_504_even_with_response_complete_blocking():
    """Nothing written when the deadline passes inside the handler: 504, whatever the audit calls do."""
    slow = RequestClass("get", level="Metadata", duration=4.0, omit_stages=frozenset({"RequestReceived"}))
    sc = scenario(["--audit-webhook-mode=blocking-strict", "--audit-webhook-initial-backoff=1s"], trace=(0.0,),
                  duration=20.0, receiver=Receiver(error_rate=1.0), classes=(slow,))
    d = result(replace(sc, request_timeout=3.0).validate(), "fast")
    assert d["requests_timed_out"] == d["requests_timed_out_504"] == 1 and d["requests_closed_at_timeout"] == 0
    assert d["requests_rejected"] == 0
