"""Retry-After on 429/5xx answers: the webhook REST client's own retries inside one attempt
(client-go ``rest/request.go``, ``rest/with_retry.go``), in the receiver model and the CLI."""
from __future__ import annotations

import json

import numpy as np
import pytest

from audit_tune.cli.app import main
from audit_tune.sim.latency import Latency
from audit_tune.sim.receiver import ATTEMPT_TIMEOUT, CLIENT_MAX_RETRIES, Outage, Receiver
from tests.simhelp import result, scenario


def expected_attempt(start: float, lat: float, o: Outage) -> tuple[float, bool, int]:
    """The client loop written out plainly for a fixed latency and one outage."""
    deadline, t = start + ATTEMPT_TIMEOUT, start
    for i in range(CLIENT_MAX_RETRIES + 1):
        if not o.covers(t):
            return (t + lat - start, True, 200) if t + lat < deadline else (ATTEMPT_TIMEOUT, False, -1)
        if t + lat >= deadline:
            return ATTEMPT_TIMEOUT, False, -1
        if i == CLIENT_MAX_RETRIES:
            return t + lat - start, False, o.status
        t += lat + o.retry_after
        if t >= deadline:
            return ATTEMPT_TIMEOUT, False, -1
    raise AssertionError


@pytest.mark.parametrize("ra", [0, 1, 4, 29])
@pytest.mark.parametrize("end", [1.5, 12.0, 300.0])
def test_attempts_follow_the_client_loop(ra: int, end: float) -> None:
    lat = 0.05
    o = Outage(1.0, end, "status", 503, retry_after=ra)
    rcv = Receiver(latency=Latency("fixed", lat), outages=(o,))
    starts = np.array([0.2, 1.0, 1.3, 5.0, 11.99, 40.0])
    dur, ok, code = rcv.attempt_array(3, 0, np.arange(len(starts)), 0, starts, np.full(len(starts), 2000))
    for s, d, k, c in zip(starts, dur, ok, code):
        ed, eok, ec = expected_attempt(float(s), lat, o)
        assert (round(float(d), 9), bool(k), int(c)) == (round(ed, 9), eok, ec), (s, ra, end)


def test_without_retry_after_or_for_4xx_the_answer_ends_the_attempt() -> None:
    for o in (Outage(0, 100, "status", 503), Outage(0, 100, "status", 404, retry_after=2)):
        dur, ok, code = Receiver(latency=Latency("fixed", 0.05), outages=(o,)).attempt_array(
            1, 0, np.arange(3), 0, np.array([0.0, 1.0, 2.0]), np.full(3, 100))
        assert not ok.any() and (code == o.status).all() and np.allclose(dur, 0.05)


def test_retry_after_turns_webhook_drops_into_delivery_and_both_engines_agree() -> None:
    flags = ["--audit-webhook-initial-backoff=100ms", "--audit-webhook-batch-max-size=10",
             "--audit-webhook-batch-max-wait=50ms", "--audit-webhook-batch-throttle-qps=200"]
    plain = scenario(flags, rate=500, duration=6, receiver=Receiver(outages=(Outage(1, 3, "status", 503),)))
    ra = scenario(flags, rate=500, duration=6, receiver=Receiver(outages=(Outage(1, 3, "status", 503, retry_after=1),)))
    p = result(plain, "fast")
    a, b = result(ra, "fast"), result(ra, "reference")
    assert p["errors"]["webhook"] > 0
    assert a["errors"]["webhook"] == 0 == b["errors"]["webhook"]
    assert a["delivered"] == b["delivered"] == a["events_total"]
    assert a["peak_memory_bytes"] == b["peak_memory_bytes"]


def run_cli(capsys, *args):
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_retry_after(capsys) -> None:
    code, out, err = run_cli(capsys, "simulate", "--rate", "300", "--duration", "60s", "-f", "json",
                             "--webhook-outage", "0s-20s:503", "--webhook-retry-after", "5s")
    d = json.loads(out)
    assert code == 0 and d["errors"]["webhook"] == 0 and d["delivered"] == d["events_total"]
    code2, out2, _ = run_cli(capsys, "simulate", "--rate", "300", "--duration", "60s", "-f", "json",
                             "--webhook-outage", "0s-20s:503")
    assert code2 == 0 and json.loads(out2)["attempts"] > d["attempts"]


@pytest.mark.parametrize("args,word", [
    (["--webhook-outage", "0s-20s:503", "--webhook-retry-after", "1.5s"], "--webhook-retry-after"),
    (["--webhook-outage", "0s-20s:503", "--webhook-retry-after", "soon"], "--webhook-retry-after"),
    (["--webhook-outage", "0s-20s:refuse", "--webhook-retry-after", "2s"], "--webhook-retry-after"),
])
def test_cli_bad_retry_after_is_one_line_exit_1(capsys, args, word) -> None:
    code, out, err = run_cli(capsys, "simulate", "--duration", "5s", *args)
    assert code == 1 and word in err and err.strip().count("\n") == 0 and "Traceback" not in err
