"""Property tests: monotonicity of drops in capacity flags, and conservation of events."""
from __future__ import annotations

from dataclasses import replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audit_tune.sim.latency import Latency
from audit_tune.sim.receiver import Outage, Receiver
from audit_tune.sim.workload import OnOff, RequestClass
from tests.simhelp import lost, result, scenario

FAST = settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])

flagsets = st.fixed_dictionaries({
    "buffer": st.integers(5, 400),
    "max_size": st.integers(1, 50),
    "wait_ms": st.integers(1, 2000),
    "qps": st.integers(1, 40),
    "burst": st.integers(1, 20),
})


def _flags(f: dict) -> list[str]:
    return [f"--audit-webhook-batch-buffer-size={f['buffer']}", f"--audit-webhook-batch-max-size={f['max_size']}",
            f"--audit-webhook-batch-max-wait={f['wait_ms']}ms", f"--audit-webhook-batch-throttle-qps={f['qps']}",
            f"--audit-webhook-batch-throttle-burst={f['burst']}"]


def _drops(f: dict, seed: int, rate: float) -> int:
    sc = scenario(_flags(f), onoff=OnOff(rate * 4, rate / 4, 2.0, 4.0), duration=30, seed=seed, latency=0.02)
    return result(sc)["errors"]["buffered"]


@FAST
@given(flagsets, st.sampled_from(["buffer", "qps", "burst"]), st.integers(1, 4), st.integers(0, 3),
       st.sampled_from([50.0, 200.0, 800.0]))
def test_drops_never_increase_when_capacity_grows(f, knob, factor, seed, rate):
    bigger = dict(f)
    bigger[knob] = f[knob] * (factor + 1)
    assert _drops(bigger, seed, rate) <= _drops(f, seed, rate)


@FAST
@given(flagsets, st.integers(0, 3), st.sampled_from([50.0, 200.0, 800.0]))
def test_drops_never_increase_when_max_size_grows_with_throttle_binding(f, seed, rate):
    # the window is then the only thing max-size changes besides capacity; keep it short
    f = dict(f, wait_ms=min(f["wait_ms"], 100))
    bigger = dict(f, max_size=f["max_size"] * 2)
    assert _drops(bigger, seed, rate) <= _drops(f, seed, rate) + f["max_size"]


@FAST
@given(flagsets, st.integers(0, 5), st.floats(0, 0.6), st.booleans(), st.sampled_from(["batch", "blocking", "blocking-strict"]))
def test_conservation(f, seed, fail, drain, mode):
    rcv = Receiver(latency=Latency("exp", 0.3), error_rate=fail, outages=(Outage(3, 6, "refuse"),))
    flags = _flags(f) + [f"--audit-webhook-mode={mode}", "--audit-webhook-initial-backoff=50ms"]
    d = result(scenario(flags, rate=100 if mode != "batch" else 300, duration=10, seed=seed, receiver=rcv, drain=drain))
    # a blocking call still running at the process's exit is cut off there: neither delivered nor an error
    assert d["events_total"] == d["delivered"] + lost(d) + d["in_flight_at_end"] + d.get("blocking_calls_at_exit", 0)
    if drain:
        assert d["in_flight_at_end"] == 0


@FAST
@given(st.integers(0, 5), st.sampled_from([0.3, 0.9]), st.sampled_from([0.5, 2.0, 60.0]),
       st.sampled_from(["blocking", "blocking-strict"]), st.booleans(), st.sampled_from(["100ms", "1s"]))
def test_timed_out_requests_are_a_504_or_a_closed_connection(seed, fail, timeout, mode, omit_rr, backoff):
    """Every request past --request-timeout is answered 504 (nothing written yet) or has its
    connection closed (answer written, ResponseComplete blocking); only a 504 can precede a rejection."""
    omit = frozenset({"RequestReceived"}) if omit_rr else frozenset()
    get = RequestClass("get", level="Metadata", duration=0.2, omit_stages=omit)
    sc = scenario([f"--audit-webhook-mode={mode}", f"--audit-webhook-initial-backoff={backoff}"], rate=5, duration=10,
                  seed=seed, receiver=Receiver(latency=Latency("exp", 0.1), error_rate=fail), classes=(get,))
    d = result(replace(sc, request_timeout=timeout).validate())
    assert d["requests_timed_out"] == d["requests_timed_out_504"] + d["requests_closed_at_timeout"]
    assert d["requests_rejected_after_timeout"] <= min(d["requests_timed_out_504"], d["requests_rejected"])
    late = d["rejected_after_timeout_seconds"]
    assert (late["max"] is None) == (d["requests_rejected_after_timeout"] == 0)
    assert late["max"] is None or late["p50"] > timeout
    if mode == "blocking" or omit_rr:
        assert d["requests_rejected"] == 0
    if omit_rr:  # the handler (0.2 s) always writes its answer before the deadline
        assert d["requests_timed_out_504"] == 0
    if timeout == 60.0:
        assert d["requests_timed_out"] == 0
