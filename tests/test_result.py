"""The simulation result's dictionary form (``sim/result.py``)."""
from dataclasses import replace

import pytest

from audit_tune.basics.errors import InputError
from audit_tune.sim.api import run
from audit_tune.sim.config import parse_flags
from audit_tune.sim.scenario import Scenario
from audit_tune.sim.workload import Arrivals, RateProfile, RequestClass, Workload


def _result():
    rc = (RequestClass("rc", level="Metadata", omit_stages=frozenset({"RequestReceived"})),)
    w = Workload(Arrivals("poisson", RateProfile.constant(200.0)), 5.0, rc)
    return run(Scenario(flags=parse_flags([]), workload=w).validate(), engine="fast")


def test_a_summary_without_series_leaves_the_next_one_whole():
    r = _result()
    short = r.to_dict(series=False)
    assert all("occupancy" not in b for b in short["backends"].values())
    full = r.to_dict()
    assert "occupancy" in full
    assert all("occupancy" in b and b["occupancy"]["max"] for b in full["backends"].values())
    # the two forms agree on every count
    for name, b in short["backends"].items():
        assert {k: v for k, v in full["backends"][name].items() if k != "occupancy"} == b


def _scenario(flags: list[str], instances: int, rate: float, seconds: float) -> Scenario:
    rc = (RequestClass("rc", level="Metadata", omit_stages=frozenset({"RequestReceived"})),)
    w = Workload(Arrivals("poisson", RateProfile.constant(rate)), seconds, rc, instances=instances)
    return Scenario(flags=parse_flags(flags), workload=w).validate()


CASES = {
    "one apiserver": (["--audit-webhook-batch-max-size=50"], 1, 300.0, 5.0),
    "three apiservers": (["--audit-webhook-batch-max-size=50"], 3, 300.0, 5.0),
    # qps 1 x 10 events a batch against 3,000 ev/s: buffered drops, a full buffer
    "overloaded": (["--audit-webhook-batch-max-size=10", "--audit-webhook-batch-throttle-qps=1",
                    "--audit-webhook-batch-buffer-size=500"], 2, 3000.0, 4.0),
    "log and webhook": (["--audit-log-path=/tmp/audit.log", "--audit-log-mode=batch",
                         "--audit-webhook-batch-max-size=50"], 1, 300.0, 5.0),
    # 3 x 800,000 latencies, over the 2,000,000 the merged quantiles keep exact: the histogram
    "histogram": (["--audit-webhook-batch-max-size=500", "--audit-webhook-batch-throttle-qps=100"], 3, 80_000.0, 30.0),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_totals_and_the_primary_latencies_are_the_dictionarys(case: str) -> None:
    """``totals()`` and ``delivery()`` give what ``to_dict`` says, without its percentiles."""
    r = run(_scenario(*CASES[case]), engine="fast")
    t, q = r.totals(), r.delivery()
    d = r.to_dict(series=False)
    assert t.events_total == d["events_total"] > 0
    assert t.errors == d["errors"]
    for k in ("peak_memory_bytes", "max_inflight_batches", "max_buffer_occupancy", "batches", "attempts",
              "simulated_seconds"):
        assert getattr(t, k) == d[k], k
    lat = d["delivery_latency_seconds"]
    assert q.quantile(0.99) == lat["p99"] and q.max == lat["max"] and q.quantile(0.5) == lat["p50"]
    if case == "overloaded":
        assert t.errors["buffered"] > 0
    if case == "histogram":
        assert not q.exact


@pytest.mark.parametrize("engine", ["fast", "reference"])
@pytest.mark.parametrize("case", ["three apiservers", "overloaded", "log and webhook"])
def test_a_run_that_keeps_no_latency_or_occupancy_counts_the_same(engine: str, case: str) -> None:
    """``record_latency``/``record_occupancy`` False leave the run and every count as they are; only
    the latencies and the occupancy series are empty, and the result's config says so."""
    flags, n, rate, seconds = CASES[case]
    if engine == "reference":
        rate, seconds = min(rate, 300.0), min(seconds, 2.0)
    sc = _scenario(flags, n, rate, seconds)
    full = run(sc, engine=engine)
    bare = run(replace(sc, record_latency=False, record_occupancy=False), engine=engine)
    assert bare.totals() == full.totals()
    a, b = full.to_dict(), bare.to_dict()
    assert b["delivered"] == a["delivered"] > 0
    assert b["delivery_latency_seconds"]["p99"] is None and a["delivery_latency_seconds"]["p99"] is not None
    assert b["backends"]["webhook"]["occupancy"]["max"] == [] and a["backends"]["webhook"]["occupancy"]["max"]
    assert b["config"]["record"] == {"latency": False, "occupancy": False} and "record" not in a["config"]
    for k in ("events_total", "errors", "batches", "attempts_by_code", "max_buffer_occupancy", "peak_memory_bytes",
              "max_inflight_batches", "throttle_wait_seconds_total", "first_drop_seconds", "in_flight_at_end"):
        assert b[k] == a[k], k
    only_latency = run(replace(sc, record_occupancy=False), engine=engine).to_dict()
    assert only_latency["delivery_latency_seconds"] == a["delivery_latency_seconds"]


def test_a_scenario_file_states_what_it_records() -> None:
    sc = replace(_scenario([], 1, 10.0, 1.0), record_latency=False)
    d = sc.to_dict()
    assert d["record"] == {"latency": False, "occupancy": True}
    back = Scenario.from_dict(d)
    assert (back.record_latency, back.record_occupancy) == (False, True)
    with pytest.raises(InputError, match=r"record.occupancy: 'no' is not true or false"):
        Scenario.from_dict({**d, "record": {"occupancy": "no"}})
