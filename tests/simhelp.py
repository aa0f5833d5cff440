"""Small builders for simulator tests."""
from __future__ import annotations

from audit_tune.sim.api import run
from audit_tune.sim.config import parse_flags
from audit_tune.sim.latency import Latency
from audit_tune.sim.receiver import LogWriter, Receiver
from audit_tune.sim.scenario import Scenario
from audit_tune.sim.workload import Arrivals, RateProfile, RequestClass, Workload

ONE_EVENT = RequestClass("one", level="Metadata", omit_stages=frozenset({"RequestReceived"}), sizes=(1000, 1000, 1000, 1000))


def scenario(flags=(), *, rate=None, duration=60.0, process="poisson", trace=None, instances=1, weights=(),
             latency=0.05, receiver=None, log_writer=None, backends=("webhook",), seed=1, drain=True,
             classes=(ONE_EVENT,), profile=None, onoff=None) -> Scenario:
    """``rate`` is events/s; by default each request emits exactly one 1000-byte event."""
    if trace is not None:
        arr = Arrivals("trace", trace=tuple(trace))
    elif onoff is not None:
        arr = Arrivals("poisson", onoff=onoff)
    elif profile is not None:
        arr = Arrivals(process, profile)
    else:
        arr = Arrivals(process, RateProfile.constant(rate))
    w = Workload(arr, duration, tuple(classes), instances=instances, weights=tuple(weights))
    return Scenario(flags=parse_flags(list(flags)), workload=w,
                    receiver=receiver or Receiver(latency=Latency("fixed", latency)),
                    log_writer=log_writer or LogWriter(), backends=tuple(backends), seed=seed, drain=drain).validate()


def result(sc: Scenario, engine: str = "reference") -> dict:
    return run(sc, engine=engine).to_dict(series=True)


def lost(d: dict) -> int:
    return sum(d["errors"].values())
