"""Several flag sets over one pass of generated events (``sim.fast.shared.run_many``): each result is
exactly the one ``run`` gives the scenario alone (every field and series but the wall time), the
events are generated once per apiserver for a group, and what cannot share runs on its own."""
from __future__ import annotations

from dataclasses import replace

import pytest

from audit_tune.sim import api
from audit_tune.sim.config import parse_flags
from audit_tune.sim.fast import arrivals, engine
from audit_tune.sim.fast import shared as sim_shared
from audit_tune.sim.fast.shared import run_many, same_events, shareable
from audit_tune.sim.latency import Latency
from audit_tune.sim.receiver import LogWriter, Outage, Receiver
from audit_tune.sim.scenario import Scenario
from audit_tune.sim.shutdown import ShutdownOptions
from audit_tune.sim.workload import RateProfile, RequestClass
from tests.simhelp import result, scenario
from tests.test_fast import assert_same
from tests.test_fused import TWO

CLASSES = (RequestClass("get", weight=0.8, level="Metadata", duration=0.01, sizes=(650, 650, 850, 850)),
           RequestClass("create", weight=0.15, level="RequestResponse", duration=0.03, sizes=(700, 700, 9000, 3000)),
           RequestClass("watch", weight=0.05, level="Metadata", long_running=True, duration=4.0, first_byte=0.001))
STEPS = RateProfile((0.0, 4.0, 9.0), (900.0, 5000.0, 1500.0), "step")


def alone(sc: Scenario) -> dict:
    d = engine.run(sc).to_dict(series=True)
    d.pop("wall_seconds")
    return d


def shared(scs: list[Scenario]) -> list[dict]:
    out = [r.to_dict(series=True) for r in run_many(scs)]
    for d in out:
        d.pop("wall_seconds")
    return out


def flagsets(*extra: list[str]) -> list[list[str]]:
    """Flag sets from tight (drops) to roomy, each with ``extra`` appended."""
    base = [["--audit-webhook-batch-buffer-size=300", "--audit-webhook-batch-max-size=50",
             "--audit-webhook-batch-throttle-qps=20", "--audit-webhook-batch-throttle-burst=3"],
            ["--audit-webhook-batch-buffer-size=4000", "--audit-webhook-batch-max-size=200",
             "--audit-webhook-batch-max-wait=250ms", "--audit-webhook-batch-throttle-qps=40"],
            ["--audit-webhook-batch-buffer-size=20000", "--audit-webhook-batch-max-size=400", "--audit-webhook-batch-max-wait=0s",
             "--audit-webhook-batch-throttle-enable=false", "--audit-webhook-initial-backoff=1s"]]
    return [b + [f for e in extra for f in e] for b in base]


def group(flag_lists: list[list[str]], **kw) -> list[Scenario]:
    first = scenario(flag_lists[0], classes=CLASSES, profile=STEPS, duration=14.0, **kw)
    return [first.with_flags(parse_flags(f)).validate() for f in flag_lists]


def check_same(scs: list[Scenario]) -> list[dict]:
    got = shared(scs)
    assert len(got) == len(scs)
    for sc, d in zip(scs, got):
        assert d == alone(sc)
    return got


CASES = {
    "drops": dict(),
    "retries-and-failures": dict(receiver=Receiver(latency=Latency("lognormal", 0.2, 3.0), error_rate=0.3,
                                                   outages=(Outage(3, 6, "status", 503), Outage(8, 9, "refuse")))),
    "instances": dict(instances=3, weights=(3, 1, 1)),
    "no-drain": dict(drain=False, receiver=Receiver(latency=Latency("fixed", 2.0))),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("seed", [1, 7])
def test_each_result_is_the_run_alone(case, seed):
    got = check_same(group(flagsets(), seed=seed, **CASES[case]))
    if case == "drops":
        assert got[0]["errors"]["buffered"] > got[1]["errors"]["buffered"] > got[2]["errors"]["buffered"]
    if case == "retries-and-failures":
        assert all(d["attempts"] > d["batches"] and d["errors"]["webhook"] > 0 for d in got)
    if case == "instances":
        assert all(len(d["instances"]) == 3 for d in got)


def test_truncation_and_the_log_backend_share_a_pass():
    log = ["--audit-log-path=/a.log", "--audit-log-mode=batch", "--audit-log-batch-max-size=40",
           "--audit-log-batch-max-wait=100ms", "--audit-log-batch-buffer-size=2000"]
    trunc = ["--audit-webhook-truncate-enabled=true", "--audit-webhook-truncate-max-event-size=800"]
    lists = flagsets(log, trunc)
    scs = group(lists, backends=("log", "webhook"), log_writer=LogWriter(per_event=Latency("exp", 0.0004), error_rate=0.1))
    # a lane that only has the webhook, and one with another request timeout and shutdown delay
    scs += [replace(scs[1], backends=("webhook",)).validate(),
            replace(scs[2], request_timeout=2.0, shutdown=ShutdownOptions(delay=1.5, watch_grace=1.0)).validate()]
    assert all(shareable(s) and same_events(scs[0], s) for s in scs)
    got = check_same(scs)
    assert got[0]["backends"]["webhook"]["errors"]["truncate"] > 0
    assert got[0]["backends"]["log"]["errors"]["log"] > 0 and got[0]["backends"]["log"]["delivered"] > 0


def test_a_group_generates_its_events_once_per_apiserver(monkeypatch):
    calls: list[tuple[int, int]] = []
    real = engine.iter_events

    def counted(w, seed, inst):
        calls.append((seed, inst))
        return real(w, seed, inst)

    monkeypatch.setattr(engine, "iter_events", counted)
    scs = group(flagsets(), instances=2, drain=False)
    run_many(scs)
    assert sorted(calls) == [(1, 0), (1, 1)]
    calls.clear()
    for sc in scs:
        engine.run(sc)
    assert len(calls) == 2 * len(scs)


def test_what_cannot_share_runs_alone_in_order():
    scs = group(flagsets())
    fused = scenario(["--audit-webhook-batch-max-size=20"], rate=3000.0, duration=10.0)  # constant-rate Poisson
    blocking = scs[0].with_flags(parse_flags(["--audit-webhook-mode=blocking"]))
    restart = replace(scs[1], shutdown=ShutdownOptions(delay=1.0, restart_at=(5.0,), kill_after=2.0))
    other_seed = replace(scs[2], seed=2)
    other_load = replace(scs[0], workload=replace(scs[0].workload, duration=12.0))
    assert not shareable(blocking) and not shareable(restart)
    assert not same_events(scs[0], other_seed) and not same_events(scs[0], other_load)
    mix = [fused, scs[0], blocking, other_seed, scs[1], restart, other_load, scs[2]]
    got = shared(mix)
    assert got == [alone(sc) for sc in mix]
    assert got[2]["engine"] == "fast (reference model: a backend in blocking mode)"
    assert got[5]["restart_loss"] is not None and len(got[5]["lifetimes"][0]) == 2


def test_fusable_runs_share_one_compiled_stream_in_company_and_run_fused_alone(monkeypatch):
    """A fusable scenario alone runs fused; several of them (other flags, same events) share one pass
    whose events the compiled generator draws once per apiserver (``arrivals.source``; numpy's
    ``iter_events`` never runs), fed to every flag set block by block; the results are the same
    either way."""
    one = scenario(["--audit-webhook-batch-max-size=20"], rate=3000.0, duration=10.0)
    two = one.with_flags(parse_flags(["--audit-webhook-batch-max-size=400", "--audit-webhook-batch-buffer-size=500"]))
    assert arrivals.fusable(one) and arrivals.fusable(two) and shareable(one) and same_events(one, two)
    seen = []
    real = engine.run_lanes
    monkeypatch.setattr(engine, "run_lanes", lambda scs, progress=None: seen.append(len(scs)) or real(scs, progress))
    monkeypatch.setattr(sim_shared, "run_lanes", engine.run_lanes)
    fused_src = []
    real_source = arrivals.source
    monkeypatch.setattr(arrivals, "source", lambda sc, i: fused_src.append(sc) or real_source(sc, i))
    numpy_gen = []
    real_iter = engine.iter_events
    monkeypatch.setattr(engine, "iter_events", lambda w, seed, i: numpy_gen.append(i) or real_iter(w, seed, i))
    got = [r.to_dict() for r in sim_shared.run_many([one, two])]
    assert seen == [2] and len(fused_src) == 1 and numpy_gen == []  # one shared pass, one stream
    want = [r.to_dict() for r in sim_shared.run_many([one])] + [r.to_dict() for r in sim_shared.run_many([two])]
    assert seen[1:] == [1, 1] and len(fused_src) == 3  # alone: fused
    for g, w in zip(got, want):
        g.pop("wall_seconds", None), w.pop("wall_seconds", None)
        assert g == w


def _without_sums(d: dict) -> dict:
    """``d`` with its float sums (throttle wait, latency means) rounded to 12 digits: the stream's blocks
    and the array path's chunks add them in other groups, which moves their last bits."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out[k] = _without_sums(v)
        elif isinstance(v, list):
            out[k] = [_without_sums(x) if isinstance(x, dict) else x for x in v]
        elif k in ("mean", "throttle_wait_seconds_total") and isinstance(v, float):
            out[k] = float(f"{v:.12g}")
        else:
            out[k] = v
    return out


@pytest.mark.parametrize("drain", [True, False])
def test_a_shared_stream_of_several_blocks_gives_each_run_alone(monkeypatch, drain):
    """Blocks of 5,000 events (the stream is cut inside the recommender's step profiles), three
    apiservers, a truncating flag set and one without, drops in one: every result is the array
    path's for that scenario alone."""
    monkeypatch.setattr(engine, "STREAM_BLOCK", 5000)
    big = RequestClass("big", level="RequestResponse", omit_stages=frozenset({"RequestReceived"}), sizes=(3000,) * 4)
    base = scenario(["--audit-webhook-batch-max-size=100", "--audit-webhook-batch-throttle-qps=10",
                     "--audit-webhook-batch-buffer-size=500"], profile=STEPS, duration=14.0, instances=3,
                    classes=(big,), drain=drain)
    lists = [["--audit-webhook-batch-max-size=100", "--audit-webhook-batch-throttle-qps=10",
              "--audit-webhook-batch-buffer-size=500"],
             ["--audit-webhook-batch-max-size=400", "--audit-webhook-batch-throttle-qps=40",
              "--audit-webhook-truncate-enabled=true", "--audit-webhook-truncate-max-event-size=2500"]]
    scs = [base.with_flags(parse_flags(f)).validate() for f in lists]
    assert all(arrivals.fusable(s) for s in scs)
    assert arrivals.uniform_size(scs[0], "webhook") == 3000 > arrivals.uniform_size(scs[1], "webhook")  # truncated
    got = shared(scs)
    monkeypatch.setattr(arrivals, "fusable", lambda sc: False)  # alone, on the array path
    monkeypatch.setattr(arrivals, "source", lambda sc, i: None)
    for sc, d in zip(scs, got):
        assert _without_sums(d) == _without_sums(alone(sc))
    assert got[0]["errors"]["buffered"] > 0 == got[1]["errors"]["buffered"]
    assert got[0]["events_total"] > 3 * 5000


def test_the_api_runs_many_with_every_engine():
    scs = group(flagsets())[:2]
    ref = [d for d in (r.to_dict() for r in api.run_many(scs, engine="reference"))]
    assert [d["events_total"] for d in ref] == [api.run(sc).to_dict()["events_total"] for sc in scs]
    assert [r.to_dict()["errors"] for r in api.run_many(scs, engine="fast")] == [d["errors"] for d in ref]


@pytest.mark.parametrize("rate", [300.0, 3000.0])
def test_lanes_without_occupancy_take_groups_whole_as_the_reference_does(rate):
    """The array path's tight loops (``collector.run_collector``) with no occupancy series kept, as
    the recommender runs: groups of equal times (a request's two or three events) filling and
    straddling batches of 3 and 5, a buffer of 2 under groups of 3, a throttled collector whose
    full buffer drops; every lane of one shared pass counts what the reference engine counts."""
    flags = [["--audit-webhook-batch-max-size=3", "--audit-webhook-batch-max-wait=1s"],
             ["--audit-webhook-batch-max-size=5", "--audit-webhook-batch-max-wait=1s"],
             ["--audit-webhook-batch-max-size=400", "--audit-webhook-batch-max-wait=1s",
              "--audit-webhook-batch-buffer-size=2"],
             ["--audit-webhook-batch-max-size=40", "--audit-webhook-batch-max-wait=1s",
              "--audit-webhook-batch-buffer-size=300", "--audit-webhook-batch-throttle-qps=5",
              "--audit-webhook-batch-throttle-burst=2"],
             ["--audit-webhook-batch-max-size=400", "--audit-webhook-batch-max-wait=1s",
              "--audit-webhook-batch-throttle-enable=false"]]  # never blocked: only groups fill the buffer
    first = replace(scenario(flags[0], rate=rate, duration=10.0, classes=TWO, seed=3), record_occupancy=False)
    scs = [first.with_flags(parse_flags(f)).validate() for f in flags]
    assert all(arrivals.fusable(sc) for sc in scs)  # so the shared pass feeds blocks of times to each lane
    got = [r.to_dict(series=True) for r in run_many(scs)]
    for sc, d in zip(scs, got):
        assert_same(result(sc, "reference"), d)
    assert got[4]["max_buffer_occupancy"] == 3  # groups of three arrived whole, into an empty buffer
    assert got[2]["errors"]["buffered"] > 0 and got[3]["errors"]["buffered"] > 0
