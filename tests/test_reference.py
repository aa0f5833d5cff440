"""The reference engine against theory: fluid limits, token bucket, timer windows, retry timings."""
from __future__ import annotations

import numpy as np
import pytest

from audit_tune.sim.latency import Latency
from audit_tune.sim.receiver import LogWriter, Outage, Receiver
from audit_tune.sim.throttle import TokenBucket
from audit_tune.sim.workload import RequestClass
from tests.simhelp import lost, result, scenario


def test_overload_drops_converge_to_fluid_limit():
    """Past the buffer and the initial burst, drops grow at rate - qps x max_size per second."""
    rate = 6000.0
    d60 = result(scenario(rate=rate, duration=60, process="deterministic"))
    d120 = result(scenario(rate=rate, duration=120, process="deterministic"))
    slope = (d120["errors"]["buffered"] - d60["errors"]["buffered"]) / 60.0
    assert slope == pytest.approx(rate - 10 * 400, rel=0.002)
    # absolute: everything beyond burst (15 batches) + qps x T batches + the buffer left at shutdown is lost
    expected = rate * 120 - (15 + 10 * 120) * 400 - 10000
    assert d120["errors"]["buffered"] == pytest.approx(expected, rel=0.005)
    assert d120["errors"]["webhook"] == 0
    # time to the first drop: (buffer + burst) / net growth
    assert d120["first_drop_seconds"] == pytest.approx((10000 + 6000) / (rate - 4000), rel=0.01)


def test_no_drops_under_capacity():
    d = result(scenario(rate=3000, duration=120))
    assert lost(d) == 0
    assert d["delivered"] == d["events_total"]
    # size-triggered batches: 400 events fill in ~0.13 s, well under the 30 s window
    assert d["batch_size"]["mean"] > 390


def test_lone_event_waits_uniform_over_max_wait():
    """Sparse events wait Uniform(0, MaxBatchWait): the window opens when collection starts."""
    sc = scenario(rate=1 / 97.0, duration=97.0 * 1500, latency=0.0)
    d = result(sc)
    lat = d["delivery_latency_seconds"]
    assert d["batch_size"]["mean"] < 1.5  # mostly alone
    assert lat["mean"] == pytest.approx(15.0, rel=0.05)
    assert lat["max"] <= 30.0 + 1e-9
    assert lat["p50"] == pytest.approx(15.0, rel=0.08)


def test_token_bucket_burst_then_steady_rate():
    tb = TokenBucket(10, 15)
    waits = [tb.reserve(0.0) for _ in range(16)]
    assert waits[:15] == [0.0] * 15 and waits[15] == pytest.approx(0.1)
    # after the 16th token's wait, one token per 0.1 s
    assert tb.reserve(0.1) == pytest.approx(0.1)
    tb2 = TokenBucket(10, 15)
    tb2.reserve(0.0)
    assert tb2.reserve(100.0) == 0.0  # refilled, capped at burst
    # through the engine: 20,000 events at once drain as 15 batches at t=0, then 10 per second
    d = result(scenario(["--audit-webhook-batch-buffer-size=100000"], trace=[0.0] * 20000, duration=1.0, latency=0.0))
    assert d["batches"] == 50 and lost(d) == 0
    assert d["simulated_seconds"] == pytest.approx((50 - 15) / 10, abs=1e-6)
    assert d["throttle_wait_seconds_total"] == pytest.approx(35 * 0.1, rel=1e-6)  # each later batch waits 1/qps


def test_sync_delegate_slower_than_arrivals_fills_buffer_on_time():
    """Log in batch mode: writes run on the collector, so the buffer grows at rate - 1/write cost."""
    flags = ["--audit-log-mode=batch", "--audit-log-batch-max-size=100", "--audit-log-batch-max-wait=1s",
             "--audit-log-batch-buffer-size=5000", "--audit-log-path=/var/log/audit.log"]
    rate, per_event = 1000.0, 0.002  # drains 500 events/s
    sc = scenario(flags, rate=rate, duration=30, process="deterministic", backends=("log",),
                  log_writer=LogWriter(per_event=Latency("fixed", per_event)))
    d = result(sc)
    assert d["first_drop_seconds"] == pytest.approx(5000 / (rate - 1 / per_event), rel=0.03)
    assert d["errors"]["buffered"] == pytest.approx((rate - 500) * (30 - 10), rel=0.03)
    assert d["max_inflight_batches"] == 1


@pytest.mark.parametrize("kind,total_lo,total_hi", [("refuse", 81.255, 97.505), ("hang", 231.25, 247.5)])
def test_failing_batch_retry_timing(kind, total_lo, total_hi):
    """5 attempts, sleeps 10/15/22.5/33.75 s x U[1, 1.2), then the batch is dropped."""
    spans = []
    for seed in range(40):
        rcv = Receiver(latency=Latency("fixed", 0.0), outages=(Outage(0, 1e9, kind),))
        d = result(scenario(["--audit-webhook-batch-max-size=1"], trace=[0.0], duration=1.0, receiver=rcv, seed=seed))
        assert d["errors"]["webhook"] == 1 and d["attempts"] == 5 and d["delivered"] == 0
        spans.append(d["simulated_seconds"])
    lo, hi = 81.25, 97.5
    fixed = 5 * (0.001 if kind == "refuse" else 30.0)
    sleeps = np.array(spans) - fixed
    assert sleeps.min() >= lo - 1e-9 and sleeps.max() < hi
    assert sleeps.max() - sleeps.min() > 0.5 * (hi - lo)  # the jitter really spreads
    assert total_lo - 1e-9 <= min(spans) and max(spans) < total_hi


def test_async_slow_webhook_piles_up_in_flight_without_drops():
    d = result(scenario(["--audit-webhook-batch-max-size=100", "--audit-webhook-batch-throttle-qps=50",
                         "--audit-webhook-batch-throttle-burst=50"], rate=2000, duration=30, latency=2.0))
    assert lost(d) == 0
    # 20 batches/s each in flight for 2 s
    assert 38 <= d["max_inflight_batches"] <= 42
    assert d["peak_memory_bytes"] >= 40 * 100 * 1000


def test_webhook_outage_then_recovery_retries_succeed():
    rcv = Receiver(latency=Latency("fixed", 0.01), outages=(Outage(5, 20, "status", 503),))
    d = result(scenario(["--audit-webhook-initial-backoff=5s"], rate=500, duration=40, receiver=rcv))
    assert lost(d) == 0
    assert d["attempts_by_code"].get("503", 0) > 0
    assert d["delivery_latency_seconds"]["max"] > 10


def test_max_size_one_has_no_timer_and_is_capped_by_throttle():
    d = result(scenario(["--audit-webhook-batch-max-size=1", "--audit-webhook-batch-buffer-size=500"], rate=50,
                        duration=60, process="deterministic"))
    assert d["batch_size"]["max"] == 1
    # drain capped at qps x 1 = 10 events/s after the burst of 15; once the buffer of 500 is full the
    # rest of the 50/s is lost; what is buffered at the end is drained: delivered = 15 + 10 x 60 + 500
    assert d["errors"]["buffered"] == pytest.approx(50 * 60 - 15 - 10 * 60 - 500, abs=2)
    assert d["first_drop_seconds"] == pytest.approx((500 + 15) / (50 - 10), abs=0.1)


def test_max_size_one_sync_log_writer_is_an_mm1k_queue():
    """Log backend in batch mode with max-size 1 and exponential write times: the collector takes
    one event off the buffer and writes it synchronously before it takes the next, so events in the
    system = buffer + the one being written, K = buffer-size + 1, one exponential server. Poisson
    arrivals see the time average (PASTA), so the share of events dropped is M/M/1/K's blocking
    probability (1 - rho) rho^K / (1 - rho^(K+1)), rho = rate x mean write time.

    Sampling error: drops are correlated in time, so the spread is measured, not assumed: one
    drop fraction per seed (8 independent runs of 10,000 events), their standard error s/sqrt(8),
    and a bound of 5 standard errors (Student t with 7 degrees of freedom: a correct simulator
    falls outside it with probability 0.16 %). 40 runs of 100,000 events each agreed with the
    formula within 0.4 standard errors; K = buffer-size alone would be ~18 standard errors off."""
    rate, mean_write, buffer = 100.0, 0.009, 4
    flags = ["--audit-log-mode=batch", "--audit-log-batch-max-size=1", f"--audit-log-batch-buffer-size={buffer}",
             "--audit-log-path=/var/log/audit.log"]
    writer = LogWriter(per_event=Latency("exp", mean_write))
    fractions = []
    for seed in range(1, 9):
        d = result(scenario(flags, rate=rate, duration=100, backends=("log",), log_writer=writer, seed=seed))
        assert d["batch_size"]["max"] == 1 and d["max_inflight_batches"] == 1
        fractions.append(d["errors"]["buffered"] / d["events_total"])
    rho, k = rate * mean_write, buffer + 1
    blocking = (1 - rho) * rho**k / (1 - rho ** (k + 1))
    f = np.array(fractions)
    stderr = f.std(ddof=1) / np.sqrt(len(f))
    assert abs(f.mean() - blocking) <= 5 * stderr, (f.mean(), blocking, stderr)
    assert stderr < 0.03 * blocking  # the bound is tight enough to tell K = buffer + 1 from K = buffer


def test_throttle_disabled_never_drops_at_high_rate():
    d = result(scenario(["--audit-webhook-batch-throttle-enable=false"], rate=20000, duration=10))
    assert lost(d) == 0 and d["throttle_wait_seconds_total"] == 0


def test_blocking_webhook_adds_latency_to_requests_and_strict_rejects():
    rcv = Receiver(latency=Latency("fixed", 0.2), outages=(Outage(10, 20, "refuse"),))
    base = ["--audit-webhook-initial-backoff=100ms"]
    d = result(scenario(base + ["--audit-webhook-mode=blocking"], rate=20, duration=30, receiver=rcv))
    assert d["requests_rejected"] == 0
    assert d["request_added_latency_seconds"]["p50"] == pytest.approx(0.2, rel=0.01)
    assert d["errors"]["webhook"] > 0
    with_rr = (RequestClass("rr", level="Metadata", sizes=(1000,) * 4),)
    s = result(scenario(base + ["--audit-webhook-mode=blocking-strict"], rate=20, duration=30, receiver=rcv, classes=with_rr))
    assert s["requests_rejected"] > 0
    # only a failed RequestReceived rejects; failed ResponseComplete events are lost but not rejected
    assert s["errors"]["webhook"] >= s["requests_rejected"]
    # with RequestReceived omitted, nothing can be rejected
    s2 = result(scenario(base + ["--audit-webhook-mode=blocking-strict"], rate=20, duration=30, receiver=rcv))
    assert s2["requests_rejected"] == 0 and s2["errors"]["webhook"] > 0


def test_truncate_drops_events_too_big_even_after_stripping():
    from audit_tune.sim.workload import RequestClass

    big = RequestClass("big", level="Metadata", omit_stages=frozenset({"RequestReceived"}), sizes=(200_000,) * 4)
    body = RequestClass("body", level="RequestResponse", omit_stages=frozenset({"RequestReceived"}), sizes=(200_000,) * 4)
    flags = ["--audit-webhook-truncate-enabled"]
    d = result(scenario(flags, rate=100, duration=10, classes=(big,)))
    assert d["errors"]["truncate"] == d["events_total"] and d["delivered"] == 0
    d = result(scenario(flags, rate=100, duration=10, classes=(body,)))
    assert d["errors"]["truncate"] == 0 and d["delivered"] == d["events_total"]


def test_no_drain_counts_in_flight_and_conserves():
    d = result(scenario(rate=6000, duration=30, drain=False, latency=1.0))
    assert d["in_flight_at_end"] > 0
    assert d["events_total"] == d["delivered"] + lost(d) + d["in_flight_at_end"]


def test_several_instances_have_their_own_buffers():
    one = result(scenario(rate=6000, duration=60, seed=3))
    three = result(scenario(rate=6000, duration=60, instances=3, seed=3))
    assert lost(one) > 0 and lost(three) == 0
    skew = result(scenario(rate=9000, duration=60, instances=3, weights=(4, 1, 1), seed=3))
    per = {i["name"]: i["errors"]["buffered"] for i in skew["instances"]}
    assert per["apiserver-0"] > 0 and per["apiserver-1"] == 0 and per["apiserver-2"] == 0


def test_deterministic_for_a_seed():
    a = result(scenario(rate=5000, duration=30, seed=7))
    b = result(scenario(rate=5000, duration=30, seed=7))
    for k in ("events_total", "errors", "delivered", "batch_sizes", "delivery_latency_seconds"):
        assert a[k] == b[k]


def test_docs_worked_example_sync_vs_async():
    """kubernetes.io 'Parameter tuning': 100 req/s -> 200 events/s, batches of 100, qps 2, buffer 1000,
    a backend that takes 5 s. Right for neither delegate: behind a synchronous 5 s write the collector
    drains 100 events per 5 s and most events are lost; behind the async webhook nothing is lost, the
    buffer stays nearly empty and the cost is batches in flight (memory)."""
    from audit_tune.sim.receiver import LogWriter

    rrrc = (RequestClass("get", level="Metadata", sizes=(650, 650, 850, 850)),)
    common = ["--audit-{b}-batch-max-size=100", "--audit-{b}-batch-buffer-size=1000",
              "--audit-{b}-batch-throttle-enable=true", "--audit-{b}-batch-throttle-qps=2",
              "--audit-{b}-batch-throttle-burst=15"]
    sync = result(scenario([c.format(b="log") for c in common] + ["--audit-log-mode=batch", "--audit-log-path=/a.log"],
                           rate=100, duration=300, classes=rrrc, backends=("log",), log_writer=LogWriter(per_batch=5.0)))
    asy = result(scenario([c.format(b="webhook") for c in common], rate=100, duration=300, classes=rrrc, latency=5.0))
    assert sync["events_total"] == pytest.approx(200 * 300, rel=0.03)
    assert sync["errors"]["buffered"] / sync["events_total"] > 0.8  # drains 20 events/s
    assert sync["first_drop_seconds"] < 10
    assert lost(asy) == 0
    assert asy["max_buffer_occupancy"] < 100  # the 1000-event buffer is not what protects it
    assert asy["max_inflight_batches"] >= 10  # 2 batches/s x 5 s in flight


def test_zero_max_wait_batches_are_geometric_like_gos_select():
    """max-wait 0 with max-size > 1: the timer has always fired, Go's select picks at random between
    it and a ready event, so sizes are Geometric(1/2) (the oracle measured 0.50 / 0.24 / 0.12 for 1/2/3)."""
    d = result(scenario(["--audit-webhook-batch-max-wait=0s", "--audit-webhook-batch-throttle-qps=200",
                         "--audit-webhook-batch-throttle-burst=1"], rate=2000, duration=20))
    bs = np.array(d["batch_sizes"])
    share = np.bincount(bs, minlength=4)[1:4] / len(bs)
    assert share == pytest.approx([0.5, 0.25, 0.125], abs=0.02)


def test_partly_empty_bucket_at_start():
    """A replay of a window that starts mid-run can begin with fewer tokens than the burst."""
    flags = ["--audit-webhook-batch-buffer-size=100000", "--audit-webhook-batch-throttle-burst=15"]
    full = result(scenario(flags, trace=[0.0] * 8000, duration=0.01, latency=0.0))
    from dataclasses import replace

    empty = result(replace(scenario(flags, trace=[0.0] * 8000, duration=0.01, latency=0.0), throttle_initial_tokens=0.0))
    # 20 batches: with a full bucket 15 leave at t=0 and 5 more at 0.1 s steps; with an empty one every batch waits
    assert full["simulated_seconds"] == pytest.approx(0.5, abs=1e-6)
    assert empty["simulated_seconds"] == pytest.approx(2.0, abs=1e-6)
