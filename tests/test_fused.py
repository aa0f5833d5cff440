"""The fused fast path (``sim/fast/fused.py``, ``sim/fast/arrivals.py``): arrivals drawn inside the compiled collector.

Its arrival stream is ``iter_requests``'s bit for bit, and the engine running on it reproduces the
reference engine exactly (the same comparison as ``tests/test_fast.py``), also with the work cut
into tiny calls and tiny generation chunks so that every boundary is crossed many times.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audit_tune.sim import workload
from audit_tune.sim.fast import arrivals, backend
from audit_tune.sim.latency import Latency
from audit_tune.sim.receiver import LogWriter, Outage, Receiver
from audit_tune.sim.shutdown import ShutdownOptions
from audit_tune.sim.workload import OnOff, RateProfile, RequestClass, iter_events, iter_requests
from tests.simhelp import ONE_EVENT, result, scenario
from tests.test_fast import CLASSES, EXACT, both


def _stream(sc, inst: int) -> np.ndarray:
    return _drawn(sc, inst)[0]


def _drawn(sc, inst: int) -> tuple[np.ndarray, arrivals.Source]:
    src = arrivals.source(sc, inst)
    assert src is not None
    parts = []
    while True:  # in uneven pieces, across the buffer's refills
        part = arrivals.stream(src, 1 + 7 * len(parts) % 1500)
        if not len(part):
            break
        parts.append(part)
    return (np.concatenate(parts) if parts else np.empty(0)), src


# two classes whose events all come at the arrival, of one size: one event, and two or three
TWO = (RequestClass("observed", 0.7, "Metadata", sizes=(900, 900, 900, 900)),
       RequestClass("long-running", 0.3, "Request", long_running=True, sizes=(900, 900, 900, 900)))
STEP = RateProfile((0.0, 4.0, 9.0, 9.5), (10.0, 600.0, 0.0, 90.0), "step")


@pytest.mark.parametrize("rate, duration, seed, instances, chunk", [
    (5000.0, 60.0, 1, 1, workload.CHUNK_REQUESTS), (3.0, 100.0, 7, 1, 2.0), (800.0, 9.5, 2**40 + 3, 3, 100.0),
    (20000.0, 1.0, 0, 2, 999.0), (0.4, 30.0, 5, 1, 1.0)])
def test_stream_is_iter_requests_bit_for_bit(monkeypatch, rate, duration, seed, instances, chunk) -> None:
    monkeypatch.setattr(workload, "CHUNK_REQUESTS", chunk)
    sc = scenario(rate=rate, duration=duration, seed=seed, instances=instances)
    for inst in range(instances):
        want = np.concatenate([rc.t for rc in iter_requests(sc.workload, seed, inst)])
        got = _stream(sc, inst)
        assert got.dtype == want.dtype and len(got) == len(want)
        np.testing.assert_array_equal(got, want)
        assert len(want) == 0 or want[-1] < duration


@pytest.mark.parametrize("kw", [
    dict(profile=STEP, duration=20.0), dict(profile=RateProfile((2.0, 4.0), (300.0, 60.0)), duration=20.0, instances=2),
    dict(profile=RateProfile((0.0,), (0.0,)), duration=5.0), dict(onoff=OnOff(800.0, 10.0, 1.0, 3.0), duration=30.0),
    dict(onoff=OnOff(50.0, 0.0, 100.0, 1.0), duration=10.0), dict(rate=700.0, classes=TWO, duration=20.0, instances=3),
    dict(profile=STEP, classes=TWO, duration=12.0, seed=2**40 + 1),
    dict(rate=300.0, classes=(RequestClass("none", 0.5, "None"), TWO[1]), duration=10.0)])
@pytest.mark.parametrize("chunk", [3.0, 200.0, workload.CHUNK_REQUESTS])
def test_stream_is_iter_events_bit_for_bit(monkeypatch, kw, chunk) -> None:
    """Step profiles (from a later start, with a zero-rate step, on/off bursts) and request mixes:
    the fused stream is the event times of ``iter_events``, and the requests per class are its counts."""
    monkeypatch.setattr(workload, "CHUNK_REQUESTS", chunk)
    sc = scenario(**kw)
    for inst in range(sc.workload.instances):
        chunks = list(iter_events(sc.workload, sc.seed, inst))
        want = np.concatenate([c.t for c in chunks])
        got, src = _drawn(sc, inst)
        np.testing.assert_array_equal(got, want)
        assert src.requests() == np.sum([c.class_counts for c in chunks], axis=0).tolist()


def test_source_only_for_the_fused_shape() -> None:
    for sc in (scenario(rate=10.0), scenario(onoff=OnOff(10.0, 1.0, 1.0, 3.0)),
               scenario(profile=RateProfile((0.0, 4.0), (10.0, 60.0), "step")), scenario(rate=10.0, classes=TWO),
               scenario(rate=10.0, classes=(RequestClass("two", sizes=(800, 800, 800, 800)),))):  # two stages
        assert arrivals.source(sc, 0) is not None, sc
    log = ["--audit-log-mode=batch", "--audit-log-path=/a.log"]
    array_path = [
        scenario(rate=10.0, classes=CLASSES),  # a request mix with stage offsets
        scenario(rate=10.0, classes=(RequestClass("two", level="Request"),)),  # two stages of two sizes
        scenario(trace=[0.0, 0.5, 1.0]),
        scenario(profile=RateProfile((0.0, 4.0), (10.0, 60.0), "linear")),
        scenario(rate=10.0, process="deterministic"),
        scenario(log, rate=10.0, backends=("log",)),
        scenario(log, rate=10.0, backends=("log", "webhook")),
        scenario(["--audit-webhook-batch-max-wait=0s"], rate=10.0),  # Go's random select: per-batch draws
        scenario(["--audit-webhook-truncate-enabled=true", "--audit-webhook-truncate-max-event-size=500"], rate=10.0),
        replace(scenario(rate=10.0), shutdown=ShutdownOptions(restart_at=(20.0,))),
    ]
    for sc in array_path:
        assert arrivals.source(sc, 0) is None, sc


# Measured costs per example: the reference engine spends about 0.1 ms per send attempt, and batches
# of one or two at a receiver failing 90% of sends make ten attempts per event (22-74 s at 600-3,000
# req/s); the fused path spends about 0.11 ms per call of one arrival (8 s at 3,000 req/s x 3
# instances). Those cases draw their rate from the smaller values (the buffers drawn small still
# overflow); the rest take 0.02-2 s.
RATES = [5.0, 80.0, 600.0, 3000.0]


@st.composite
def fused_scenarios(draw, tiny_calls: bool = False):
    max_size = draw(st.sampled_from([1, 2, 7, 50, 400]))
    flags = [f"--audit-webhook-batch-buffer-size={draw(st.integers(1, 3000))}",
             f"--audit-webhook-batch-max-size={max_size}",
             f"--audit-webhook-batch-max-wait={draw(st.sampled_from(['10ms', '250ms', '1s', '30s']))}",
             f"--audit-webhook-batch-throttle-enable={str(draw(st.booleans())).lower()}",
             f"--audit-webhook-batch-throttle-qps={draw(st.sampled_from([0.5, 3, 10, 77.7]))}",
             f"--audit-webhook-batch-throttle-burst={draw(st.integers(1, 20))}",
             "--audit-webhook-initial-backoff=" + draw(st.sampled_from(["50ms", "1s", "10s"]))]
    size = draw(st.sampled_from([1000, 5000]))
    level = draw(st.sampled_from(["Metadata", "RequestResponse"]))
    if draw(st.booleans()):
        flags += ["--audit-webhook-truncate-enabled=true", "--audit-webhook-truncate-max-event-size=2000"]
        if size > 2000:
            level = "RequestResponse"  # shrinks to its metadata (a Metadata event that big: the array path)
    sizes = (size, size, size, size)
    classes = draw(st.sampled_from([
        (RequestClass("one", level=level, omit_stages=frozenset({"RequestReceived"}), sizes=sizes),),
        (RequestClass("two", 0.6, level, sizes=sizes), RequestClass("lr", 0.4, level, long_running=True, sizes=sizes)),
        (RequestClass("none", 0.2, "None"), RequestClass("lr", 0.8, level, long_running=True, sizes=sizes))]))
    lat = draw(st.sampled_from([Latency("fixed", 0.0), Latency("fixed", 0.05), Latency("exp", 0.2),
                                Latency("lognormal", 0.05, 2.0), Latency("empirical", values=(0.01, 0.5, 40.0))]))
    outages = draw(st.sampled_from([(), (Outage(2, 5, "refuse"),), (Outage(1, 3, "status", 503), Outage(6, 7, "hang")),
                                    (Outage(0, 40, "status", 503, retry_after=draw(st.sampled_from([0, 2, 7]))),)]))
    rcv = Receiver(latency=lat, error_rate=draw(st.sampled_from([0.0, 0.1, 0.9])), outages=outages,
                   max_body_bytes=draw(st.sampled_from([0, 0, 20000])), per_kib=draw(st.sampled_from([0.0, 0.001])))
    rate = draw(st.sampled_from(RATES[:2] if max_size <= 2 else RATES[:3] if tiny_calls else RATES))
    shape = draw(st.sampled_from(["constant", "constant", "step", "onoff"]))
    arr = (dict(rate=rate) if shape == "constant" else
           dict(profile=RateProfile((0.0, 1.5, 4.0, 7.0), (rate, 4 * rate, 0.0, rate / 2), "step")) if shape == "step" else
           dict(onoff=OnOff(3 * rate, rate / 10, 0.5, 1.0)))
    sc = scenario(flags, **arr, duration=10.0,
                  instances=draw(st.integers(1, 3)), receiver=rcv, seed=draw(st.integers(0, 10**6)),
                  drain=draw(st.booleans()), classes=classes)
    if sc.drain:
        sd = ShutdownOptions(delay=draw(st.sampled_from([0.0, 0.5, 3.0])))
        sc = replace(sc, shutdown=sd, request_timeout=draw(st.sampled_from([60.0, 1.5]))).validate()
    return sc


@st.composite
def fused_cases(draw):
    call = draw(st.sampled_from([1, 3, 64, backend.FUSED_CALL]))
    chunk = draw(st.sampled_from([7.0, 500.0, workload.CHUNK_REQUESTS]))
    return draw(fused_scenarios(tiny_calls=call <= 3)), call, chunk


@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(case=fused_cases())
def test_fused_matches_reference(monkeypatch, case) -> None:
    """Tiny calls stop the collector between any two arrivals; tiny chunks make the generator
    discard draws often; both must change nothing."""
    sc, call, chunk = case
    assert arrivals.source(sc, 0) is not None  # the fused path is the one under test
    with monkeypatch.context() as m:
        m.setattr(backend, "FUSED_CALL", call)
        m.setattr(workload, "CHUNK_REQUESTS", chunk)
        ref, fast = both(sc)
    assert fast["events_total"] == ref["events_total"]


@pytest.mark.parametrize("max_size, buffer, rate", [(400, 10000, 3000.0), (5, 10000, 800.0), (3, 10000, 300.0),
                                                    (400, 2, 300.0)])
def test_groups_of_equal_times_match_the_reference_with_or_without_occupancy(max_size, buffer, rate) -> None:
    """A request's events arrive at one instant (``TWO``: two or three): the collector's tight loop
    takes such a group whole. Batches of 3 or 5 are filled and straddled by groups, a buffer of 2
    cannot hold a group of 3; keeping the occupancy series or not changes no count."""
    flags = [f"--audit-webhook-batch-max-size={max_size}", "--audit-webhook-batch-max-wait=1s",
             f"--audit-webhook-batch-buffer-size={buffer}"]
    sc = scenario(flags, rate=rate, duration=10.0, classes=TWO, seed=3)
    assert arrivals.source(sc, 0) is not None
    _, fast = both(sc)
    assert fast["max_buffer_occupancy"] >= 2  # groups arrived whole
    bare = result(replace(sc, record_occupancy=False), "fast")
    assert bare["backends"]["webhook"]["occupancy"]["max"] == []
    for k in EXACT:
        if k != "occupancy":
            assert bare[k] == fast[k], k


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("case", ["overload", "under", "max1", "nothrottle", "instances", "no-drain", "delay",
                                  "bursts", "mix"])
def test_fused_fixed_seeds(case, seed) -> None:
    flags, kw = [], dict(rate=3000.0, duration=30.0)
    if case == "overload":
        kw["rate"] = 9000.0
    elif case == "under":
        kw["rate"] = 500.0
    elif case == "max1":
        flags, kw = ["--audit-webhook-batch-max-size=1"], dict(rate=40.0, duration=60.0)
    elif case == "nothrottle":
        flags, kw["rate"] = ["--audit-webhook-batch-throttle-enable=false"], 20000.0
    elif case == "instances":
        kw.update(instances=3, weights=(3, 1, 1), rate=12000.0)
    elif case == "no-drain":
        kw.update(drain=False, rate=6000.0, receiver=Receiver(latency=Latency("fixed", 3.0)))
    elif case == "bursts":  # the recommender's fitted bursts: lognormal steps of 1 s around 3,000 req/s
        g = np.random.default_rng(seed)
        kw = dict(profile=RateProfile(tuple(range(30)), tuple(3000.0 * g.lognormal(-0.5, 1.0, 30)), "step"), duration=30.0)
    classes = TWO if case in ("mix", "bursts") else (ONE_EVENT,)
    sc = scenario(flags, seed=seed, classes=classes, log_writer=LogWriter(), **kw)
    if case == "delay":
        sc = replace(sc, shutdown=ShutdownOptions(delay=2.0), request_timeout=2.5)
    if case == "overload" and seed % 2:
        sc = replace(sc, throttle_initial_tokens=2.5)
    assert arrivals.source(sc, 0) is not None
    both(sc)


def _peak_per_accept(acc_t, lo, hi, size, rel_t, rel_b, acc0, ret0):
    """The memory peak accept by accept: held = accepted bytes - bytes released strictly before."""
    cum = acc0 + size * np.arange(1, hi - lo + 1, dtype=np.int64)
    rel_cum = np.concatenate([[0], np.cumsum(rel_b)])
    k = np.searchsorted(rel_t, acc_t[lo:hi], side="left")
    held = cum - (ret0 + rel_cum[k])
    return int(held.max()), int(cum[-1]), int(k[-1]), int(rel_cum[k[-1]])


@pytest.mark.parametrize("n_rel", [0, 1, 7, 300, 5000, 40000])
@pytest.mark.parametrize("ties", [False, True])
def test_memory_peak_by_runs_matches_every_accept(n_rel, ties) -> None:
    """``fused.memory_peak`` evaluates only the last accept before each release: the same four
    numbers as evaluating every accept, from no releases to many more releases than accepts, with
    accepts at equal times and releases at an accept's time."""
    g = np.random.default_rng(n_rel + 17 * ties)
    acc_t = np.sort(g.uniform(0, 100, 20000))
    if ties:
        acc_t = np.sort(np.round(acc_t, 1))  # groups of accepts at one instant
    rel_t = np.sort(np.concatenate([g.uniform(-5, 110, n_rel), acc_t[:: max(1, 20000 // max(n_rel, 1))][:n_rel // 3]
                                    if ties else np.empty(0)]))
    rel_b = g.integers(1000, 900000, len(rel_t)).astype(np.int64)
    for lo, hi in ((0, 20000), (123, 19000), (5000, 5001)):
        got = backend.fused.memory_peak(acc_t, lo, hi, 1200, rel_t, rel_b, 123456, 7890)
        assert got == _peak_per_accept(acc_t, lo, hi, 1200, rel_t, rel_b, 123456, 7890)
    assert backend.fused.memory_peak(acc_t, 40, 40, 1200, rel_t, rel_b, 5, 0)[1:] == (5, 0, 0)
