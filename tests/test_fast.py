"""Differential test: the fast engine reproduces the reference engine.

Hypothesis runs derandomized so CI sees the same 100 scenarios every time; to explore new ones
locally: ``pytest tests/test_fast.py --hypothesis-seed=N`` with ``derandomize`` removed.

Exact: counts, every error count, delivered, batches, the batch-size sequence, max occupancy,
max in flight, peak memory, attempts by code, the occupancy series, first drop time, requests
timed out (504 or closed) and rejected after the timeout, with when.
To 1e-9 (float sums in a different order): delivery latency summary, throttle wait total,
simulated seconds.
"""
from __future__ import annotations

import math
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audit_tune.sim.latency import Latency
from audit_tune.sim.receiver import LogWriter, Outage, Receiver
from audit_tune.sim.shutdown import ShutdownOptions
from audit_tune.sim.workload import OnOff, RateProfile, RequestClass
from tests.simhelp import result, scenario

EXACT = ["events_not_emitted", "blocking_calls_at_exit", "events_refused", "restart_loss", "lifetimes", "events_total", "requests_total", "level_total", "errors", "requests_rejected", "delivered", "in_flight_at_end",
         "batches", "batch_sizes", "batch_size", "max_buffer_occupancy", "max_inflight_batches", "peak_memory_bytes",
         "attempts", "attempts_by_code", "first_drop_seconds", "occupancy", "requests_timed_out",
         "requests_timed_out_504", "requests_closed_at_timeout", "requests_rejected_after_timeout",
         "rejected_after_timeout_seconds"]
CLOSE = ["throttle_wait_seconds_total", "simulated_seconds"]


def assert_same(ref: dict, fast: dict) -> None:
    for k in EXACT:
        assert ref.get(k) == fast.get(k), f"{k}: reference {str(ref[k])[:300]} != fast {str(fast[k])[:300]}"
    for k in CLOSE:
        assert math.isclose(ref[k], fast[k], rel_tol=1e-9, abs_tol=1e-9), k
    for k, v in ref["delivery_latency_seconds"].items():
        w = fast["delivery_latency_seconds"][k]
        assert (v is None and w is None) or math.isclose(v, w, rel_tol=1e-9, abs_tol=1e-9), k
    for a, b in zip(ref["instances"], fast["instances"]):
        assert a["errors"] == b["errors"] and a["delivered"] == b["delivered"] and a["batch_sizes"] == b["batch_sizes"]


def both(sc):
    ref, fast = result(sc, "reference"), result(sc, "fast")
    assert fast["engine"].startswith("fast")
    assert_same(ref, fast)
    return ref, fast


CLASSES = (RequestClass("get", weight=0.8, level="Metadata", duration=0.01, sizes=(650, 650, 850, 850)),
           RequestClass("create", weight=0.15, level="RequestResponse", duration=0.03),
           RequestClass("watch", weight=0.05, level="Metadata", long_running=True, duration=4.0, first_byte=0.001))


@st.composite
def scenarios(draw):
    backend = draw(st.sampled_from(["webhook", "webhook", "webhook", "log"]))
    b = backend
    max_size = draw(st.sampled_from([1, 2, 7, 50, 400]))
    flags = [f"--audit-{b}-mode={draw(st.sampled_from(['batch', 'batch', 'batch', 'blocking', 'blocking-strict']))}",
             f"--audit-{b}-batch-buffer-size={draw(st.integers(1, 3000))}",
             f"--audit-{b}-batch-max-size={max_size}",
             f"--audit-{b}-batch-max-wait={draw(st.sampled_from(['0s', '10ms', '250ms', '1s', '30s']))}",
             f"--audit-{b}-batch-throttle-enable={str(draw(st.booleans())).lower()}",
             f"--audit-{b}-batch-throttle-qps={draw(st.sampled_from([0.5, 3, 10, 77.7]))}",
             f"--audit-{b}-batch-throttle-burst={draw(st.integers(1, 20))}",
             "--audit-webhook-initial-backoff=" + draw(st.sampled_from(["50ms", "1s", "10s"]))]
    if backend == "log":
        flags.append("--audit-log-path=/var/log/a.log")
    if draw(st.booleans()):
        flags += [f"--audit-{b}-truncate-enabled=true", f"--audit-{b}-truncate-max-event-size=2000"]
    kind = draw(st.sampled_from(["poisson", "deterministic", "onoff", "step", "trace"]))
    rate = draw(st.sampled_from([5.0, 80.0, 600.0]))
    kw = {}
    if kind == "onoff":
        kw["onoff"] = OnOff(rate * 5, rate / 5, 1.0, 3.0)
    elif kind == "step":
        kw["profile"] = RateProfile((0.0, 4.0, 8.0), (rate, rate * 6, rate), "step")
    elif kind == "trace":
        n = draw(st.integers(1, 400))
        gaps = draw(st.lists(st.sampled_from([0.0, 0.001, 0.01, 0.25]), min_size=n, max_size=n))
        t, tr = 0.0, []
        for g in gaps:
            t += g
            tr.append(round(t, 3))
        kw["trace"] = tr
    else:
        kw["rate"] = rate
        kw["process"] = kind
    lat = draw(st.sampled_from([Latency("fixed", 0.0), Latency("fixed", 0.05), Latency("exp", 0.2),
                                Latency("lognormal", 0.05, 2.0), Latency("empirical", values=(0.01, 0.5, 40.0))]))
    outages = draw(st.sampled_from([(), (Outage(2, 5, "refuse"),), (Outage(1, 3, "status", 503), Outage(6, 7, "hang")),
                                    (Outage(1, 6, "status", 429, retry_after=1), Outage(6.5, 7, "refuse")),
                                    (Outage(0, 40, "status", 503, retry_after=draw(st.sampled_from([0, 2, 7]))),)]))
    rcv = Receiver(latency=lat, error_rate=draw(st.sampled_from([0.0, 0.1, 0.9])), outages=outages,
                   max_body_bytes=draw(st.sampled_from([0, 0, 20000])), per_kib=draw(st.sampled_from([0.0, 0.001])))
    lw = LogWriter(per_event=draw(st.sampled_from([Latency("fixed", 0.0), Latency("fixed", 0.002), Latency("exp", 0.004)])),
                   per_batch=draw(st.sampled_from([0.0, 0.05])), error_rate=draw(st.sampled_from([0.0, 0.2])))
    sc = scenario(flags, duration=10.0, instances=draw(st.integers(1, 3)), receiver=rcv, log_writer=lw,
                  backends=(backend,), seed=draw(st.integers(0, 10**6)), drain=draw(st.booleans()),
                  classes=draw(st.sampled_from([CLASSES, (CLASSES[0],)])), **kw)
    if sc.drain:
        sd = ShutdownOptions(delay=draw(st.sampled_from([0.0, 0.0, 0.5, 3.0])),
                             watch_grace=draw(st.sampled_from([0.0, 0.0, 1.0, 10.0])),
                             restart_at=draw(st.sampled_from([(), (), (4.0,), (2.0, 6.5)])),
                             kill_after=draw(st.sampled_from([0.3, 2.0, 30.0])),
                             restart_gap=draw(st.sampled_from([0.0, 0.7])))
        sc = replace(sc, shutdown=sd, request_timeout=draw(st.sampled_from([60.0, 1.5]))).validate()
    return sc


@settings(max_examples=100, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(scenarios())
def test_fast_matches_reference(sc):
    both(sc)


@pytest.mark.parametrize("seed", [1, 2, 3, 42])
@pytest.mark.parametrize("case", ["overload", "under", "max1", "nothrottle", "slow-webhook", "outage", "retry-after",
                                  "sync-log", "instances", "both-backends", "no-drain", "restart-retrying",
                                  "restart-sync-log", "watches-shutdown"])
def test_fixed_seeds(case, seed):
    flags, kw = [], dict(rate=3000.0, duration=30.0)
    if case == "overload":
        kw["rate"] = 6000.0
    elif case == "max1":
        flags, kw = ["--audit-webhook-batch-max-size=1"], dict(rate=40.0, duration=60.0)
    elif case == "nothrottle":
        flags, kw["rate"] = ["--audit-webhook-batch-throttle-enable=false"], 20000.0
    elif case == "slow-webhook":
        kw["receiver"] = Receiver(latency=Latency("lognormal", 1.0, 20.0), error_rate=0.2)
        flags = ["--audit-webhook-initial-backoff=1s"]
    elif case == "outage":
        kw["receiver"] = Receiver(outages=(Outage(5, 15, "refuse"),))
        flags = ["--audit-webhook-initial-backoff=2s"]
    elif case == "retry-after":
        kw["receiver"] = Receiver(latency=Latency("exp", 0.1), outages=(Outage(5, 40, "status", 503, retry_after=3),))
        flags = ["--audit-webhook-initial-backoff=2s"]
    elif case == "sync-log":
        flags = ["--audit-log-mode=batch", "--audit-log-batch-max-size=100", "--audit-log-batch-max-wait=1s",
                 "--audit-log-path=/a.log"]
        kw.update(backends=("log",), log_writer=LogWriter(per_event=Latency("exp", 0.0004)), rate=3000.0)
    elif case == "instances":
        kw.update(instances=3, weights=(3, 1, 1), rate=12000.0)
    elif case == "both-backends":
        flags = ["--audit-log-mode=batch", "--audit-log-batch-max-size=50", "--audit-log-batch-max-wait=200ms",
                 "--audit-log-path=/a.log"]
        kw.update(backends=("log", "webhook"), rate=2000.0, log_writer=LogWriter(per_event=Latency("fixed", 0.0004)))
    elif case == "no-drain":
        kw.update(drain=False, rate=6000.0, receiver=Receiver(latency=Latency("fixed", 3.0)))
    elif case == "restart-retrying":
        kw["receiver"] = Receiver(latency=Latency("lognormal", 0.5, 5.0), error_rate=0.3)
        flags = ["--audit-webhook-initial-backoff=2s"]
    elif case == "restart-sync-log":
        flags = ["--audit-log-mode=batch", "--audit-log-batch-max-size=100", "--audit-log-batch-max-wait=1s",
                 "--audit-log-path=/a.log", "--audit-log-batch-throttle-enable", "--audit-log-batch-throttle-qps=5",
                 "--audit-log-batch-throttle-burst=2"]
        kw.update(backends=("log",), log_writer=LogWriter(per_event=Latency("exp", 0.0004)), rate=3000.0)
    sc = scenario(flags, seed=seed, classes=CLASSES, **kw)
    if case.startswith("restart"):
        sc = replace(sc, shutdown=ShutdownOptions(delay=1.0, restart_at=(10.0, 20.0), kill_after=3.0))
    elif case == "watches-shutdown":
        sc = replace(sc, shutdown=ShutdownOptions(delay=2.0, watch_grace=1.5), request_timeout=2.5)
    if case == "overload" and seed % 2:
        sc = replace(sc, throttle_initial_tokens=2.5)  # a replay starting with a partly empty bucket
    both(sc)


def test_blocking_scenarios_use_the_reference_model_and_say_so():
    sc = scenario(["--audit-webhook-mode=blocking"], rate=20, duration=5)
    assert result(sc, "fast")["engine"] == "fast (reference model: a backend in blocking mode)"


# ---- the compiled post-collector kernels, bit for bit against the numpy they replaced ----------

def test_interval_runs_match_series_max() -> None:
    import numpy as np

    from audit_tune.sim.fast.collector import interval_runs
    from audit_tune.sim.stats import SeriesMax

    g = np.random.default_rng(3)
    # times near interval edges (0.1 is not exact in binary: floor division decides the edge)
    t = np.sort(np.concatenate([g.uniform(0, 50, 20000), np.arange(0, 50, 0.1), np.arange(0, 50, 0.1) - 1e-15]))
    t = t[t >= 0]
    v = g.integers(0, 500, len(t)).astype(float)
    for interval in (0.1, 1.0, 7.3):
        a, b = SeriesMax(interval), SeriesMax(interval)
        a.observe_many(t, v)
        b.observe_runs(*interval_runs(t, v, interval))
        assert a.maxes == b.maxes and a.lasts == b.lasts
        assert len(a.maxes) == int(t[-1] // interval) + 1


def test_memory_peak_matches_numpy() -> None:
    import numpy as np

    from audit_tune.sim.fast.collector import memory_peak

    g = np.random.default_rng(4)
    at_all = np.sort(g.uniform(0, 100, 8000))
    asz_all = g.integers(100, 5000, 8000).astype(np.int64)
    idx = np.sort(g.choice(8000, 5000, replace=False)).astype(np.int64)  # the accepted ones
    acc_t, acc_sz = at_all[idx], asz_all[idx]
    rel_t = np.sort(np.concatenate([g.uniform(0, 120, 800), acc_t[::50]]))  # ties: released at an accept
    rel_b = g.integers(1000, 90000, len(rel_t)).astype(np.int64)
    acc0, ret0 = 123456, 7890
    cum = acc0 + np.cumsum(acc_sz)
    rel_cum = np.concatenate([[0], np.cumsum(rel_b)])
    k = np.searchsorted(rel_t, acc_t, side="left")
    held = cum - (ret0 + rel_cum[k])
    peak, acc_bytes, kk, rel_bytes = memory_peak(at_all, asz_all, idx, rel_t, rel_b, acc0, ret0)
    assert (peak, acc_bytes, kk, rel_bytes) == (held.max(), cum[-1], k[-1], rel_cum[k[-1]])


def test_batch_bytes_and_latencies_match_numpy() -> None:
    import numpy as np

    from audit_tune.sim.fast.collector import batch_bytes, ok_latencies

    g = np.random.default_rng(5)
    asz = g.integers(100, 9000, 3000).astype(np.int64)
    acc = np.sort(g.choice(3000, 2000, replace=False)).astype(np.int64)
    n = g.integers(1, 20, 150).astype(np.int64)
    n = n[np.cumsum(n) <= len(acc)]
    a = np.concatenate([[0], np.cumsum(n)[:-1]]).astype(np.int64) + 5
    n[-1] = min(n[-1], len(acc) - a[-1])
    pref = np.concatenate([[0], np.cumsum(asz[acc])])
    np.testing.assert_array_equal(batch_bytes(asz, acc, a, n), pref[a + n] - pref[a])
    end = g.uniform(10, 20, len(n))
    ok = g.uniform(size=len(n)) < 0.7
    ev_t = g.uniform(0, 10, int(n.sum()))
    want = (np.repeat(end, n) - ev_t)[np.repeat(ok, n)]
    np.testing.assert_array_equal(ok_latencies(end, ok, n, ev_t), want)


@pytest.mark.parametrize("case", ["both-backends", "restart", "truncated to one size"])
def test_the_one_size_shortcut_gives_the_per_event_sums(case, monkeypatch):
    """On the array path, events all of one size have their batch bytes and held memory from that size
    (``arrivals.uniform_size``); the result is the one the per-event sums give."""
    from audit_tune.sim.fast import arrivals
    flags = ["--audit-webhook-batch-max-size=50", "--audit-webhook-batch-throttle-qps=20",
             "--audit-webhook-batch-buffer-size=800"]
    kw = dict(rate=1500.0, duration=12.0, latency=0.2)
    classes = (RequestClass("one", level="Metadata", omit_stages=frozenset({"RequestReceived"}), sizes=(1000,) * 4),)
    if case == "both-backends":
        flags += ["--audit-log-path=/var/log/a.log", "--audit-log-mode=batch"]
        kw["backends"] = ("log", "webhook")
    if case == "truncated to one size":
        # a RequestResponse class of 5,000-byte events, truncated to its metadata
        classes = (RequestClass("big", level="RequestResponse", omit_stages=frozenset({"RequestReceived"}),
                                sizes=(5000,) * 4),)
        flags += ["--audit-webhook-truncate-enabled=true", "--audit-webhook-truncate-max-event-size=2000"]
        kw["process"] = "deterministic"  # the array path (the fused one takes Poisson arrivals only)
    sc = scenario(flags, classes=classes, **kw)
    if case == "restart":
        sc = replace(sc, shutdown=ShutdownOptions(restart_at=(5.0,), kill_after=2.0)).validate()
    assert not arrivals.fusable(sc)
    name = sc.enabled[-1]
    assert arrivals.uniform_size(sc, name) is not None
    shortcut = result(sc, "fast")
    monkeypatch.setattr(arrivals, "uniform_size", lambda sc, backend: None)
    per_event = result(sc, "fast")
    assert shortcut["peak_memory_bytes"] > 0 and shortcut["errors"]["buffered"] > 0
    assert {k: v for k, v in shortcut.items() if k != "wall_seconds"} == \
           {k: v for k, v in per_event.items() if k != "wall_seconds"}


def test_uniform_size_is_none_for_several_sizes_or_a_dropped_event() -> None:
    from audit_tune.sim.fast import arrivals
    mixed = scenario([], rate=10.0, duration=1.0, classes=CLASSES)
    assert arrivals.uniform_size(mixed, "webhook") is None
    one = RequestClass("one", level="Metadata", sizes=(900,) * 4)
    assert arrivals.uniform_size(scenario([], rate=10.0, duration=1.0, classes=(one,)), "webhook") == 900
    trunc = ["--audit-webhook-truncate-enabled=true", "--audit-webhook-truncate-max-event-size=500"]
    # a Metadata event over the limit is dropped, not shrunk
    assert arrivals.uniform_size(scenario(trunc, rate=10.0, duration=1.0, classes=(one,)), "webhook") is None
