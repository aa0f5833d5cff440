"""Retry-After retries in the data (analysis/retries.py): attempts from round trips and retries, the
default outage kind and Retry-After of ``tune recommend``'s failure scenarios, read from a real
Prometheus backfilled with the ``retry-after`` fixture (tests/promfixtures.py): one apiserver whose
webhook receiver answers 1 % of attempts 503 with ``Retry-After: 5`` and exports
``rest_client_request_retries_total``, one with the same answers and without that counter."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from promfixtures import backfilled_prometheus

from audit_tune.analysis import outage, retries
from audit_tune.analysis.calibrate import calibrate
from audit_tune.basics.errors import InputError
from audit_tune.cli.app import main

WITH, WITHOUT = "10.6.0.1:6443", "10.6.0.2:6443"


def _snap(requests: dict[str, float], retried: dict[str, float] | None) -> dict:
    return {"instances": {"a": {"webhook": {"requests_by_code": requests, "retries_by_code": retried}}}}


def test_attempts_from_round_trips_and_retries() -> None:
    # 100 attempts answered 503 + Retry-After, 5 retries each, all 503: 600 round trips, 500 retries;
    # 9,900 attempts answered 200 at once
    att = retries.attempts_by_code({"200": 9900.0, "503": 600.0}, {"503": 500.0})
    assert att == {"200": 9900.0, "503": 100.0}
    assert retries.attempts_by_code({"200": 10.0, "503": 6.0}, None) == {"200": 10.0, "503": 6.0}
    # a retried attempt that then succeeds: 2 round trips (503, 200), 1 retry answered 200
    assert retries.attempts_by_code({"200": 1.0, "503": 1.0}, {"200": 1.0}) == {"200": 1.0}


@pytest.mark.parametrize("k,n", [(5, 5), (2, 10), (1, 15), (9, 3), (10, 1), (14, 1)])
def test_retry_after_is_the_smallest_whole_value_that_fits_the_retries(k, n) -> None:
    ev = retries.evidence(_snap({"200": 1000.0, "503": 10.0 * (k + 1)}, {"503": 10.0 * k}))
    assert ev.retries_per_failed_attempt == pytest.approx(k)
    got, why = retries.default_retry_after(ev)
    assert got == n and "rest_client_request_retries_total" in why
    assert k * got < 30 <= (k + 1) * got or k >= 10


def test_no_retries_no_retry_after_and_the_reason() -> None:
    got, why = retries.default_retry_after(retries.evidence(_snap({"200": 10.0, "503": 5.0}, None)))
    assert got is None and "no rest_client_request_retries_total series" in why
    got, why = retries.default_retry_after(retries.evidence(_snap({"200": 10.0}, {})))
    assert got is None and "no in-attempt retries" in why


@pytest.mark.parametrize("text,want", [("none", None), ("7s", 7), ("30s", 30)])
def test_the_option_overrides_the_data(text, want) -> None:
    snap = _snap({"200": 1000.0, "503": 60.0}, {"503": 50.0})
    [sc] = outage.parse_scenarios(("2m:503",), 1.0, snap, text)
    assert sc.retry_after == want and "--webhook-retry-after" in sc.origin
    [refuse] = outage.parse_scenarios(("2m:refuse",), 1.0, snap, text)
    assert refuse.retry_after is None  # only answered outages carry the header


@pytest.mark.parametrize("bad", ["0s", "1.5s", "31s", "soon"])
def test_bad_retry_after_is_one_line_exit_1(capsys, bad) -> None:
    with pytest.raises(InputError, match="--webhook-retry-after"):
        outage.parse_scenarios((), 1.0, {}, bad)
    code = main(["recommend", "--no-progress", "--webhook-retry-after", bad])
    err = capsys.readouterr().err
    assert code == 1 and "--webhook-retry-after" in err and err.strip().count("\n") == 0


@pytest.fixture(scope="module")
def fixture_snapshot(prometheus_installed, tmp_path_factory) -> tuple[dict, object]:
    out = tmp_path_factory.mktemp("retries") / "s.json"
    with backfilled_prometheus(["retry-after"]) as (prom, truths):
        tr = truths["retry-after"]
        code = main(["snapshot", "-p", prom.url, "-o", str(out), "--end", str(int(tr.end)),
                     "--history", f"{int(tr.end - tr.start)}s", "--no-progress"])
    assert code == 0
    return json.loads(Path(out).read_text()), tr


def test_snapshot_reads_retries_where_exported(fixture_snapshot) -> None:
    snap, tr = fixture_snapshot
    a, b = (snap["instances"][i]["webhook"] for i in (WITH, WITHOUT))
    want = tr.instances[WITH].retries_by_code["503"]
    assert set(a["retries_by_code"]) == {"503"} and a["retries_by_code"]["503"] == pytest.approx(want, rel=0.03)
    assert a["requests_by_code"]["503"] == pytest.approx(tr.instances[WITH].posts_by_code["503"], rel=0.03)
    assert b["retries_by_code"] is None and b["requests_by_code"]["503"] > 0
    assert tr.instances[WITHOUT].retries_by_code is None


def test_recommend_defaults_from_the_retries(fixture_snapshot) -> None:
    snap, tr = fixture_snapshot
    [sc] = outage.parse_scenarios((), 1.0, snap)
    assert sc.kind == "503" and sc.retry_after == 5, sc
    assert "rest_client_request_retries_total" in sc.origin and "Retry-After 5s" in sc.origin
    assert sc.attempt_seconds == 30.0  # each attempt keeps retrying until the client's timeout
    # without the counter: the same 503s, no Retry-After assumed, and the reason says why
    only_b = {**snap, "instances": {WITHOUT: snap["instances"][WITHOUT]}}
    [sb] = outage.parse_scenarios((), 1.0, only_b)
    assert sb.kind == "503" and sb.retry_after is None and "does not export" in sb.origin


def test_failure_probability_counts_attempts_not_round_trips(fixture_snapshot) -> None:
    """With the retries counter, the 5 retried round trips of an attempt are one failed attempt (1 %);
    without it, each round trip counts as an attempt (about 6 %)."""
    snap, tr = fixture_snapshot
    pa, pb = (calibrate(snap, i).failure_rate for i in (WITH, WITHOUT))
    truth = tr.instances[WITH].retried_attempts / (tr.instances[WITH].posts + tr.instances[WITH].retried_attempts)
    assert pa == pytest.approx(truth, rel=0.1) and 0.008 < pa < 0.012
    assert pb > 5 * pa
