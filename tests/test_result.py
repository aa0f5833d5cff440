"""The simulation result's dictionary form (``sim/result.py``)."""
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
