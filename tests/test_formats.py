"""The output-format registry (audit_tune/basics/formats.py): every registered result type renders in
each of its formats, json/yaml are its ``to_dict``, and an unknown format is a one-line input error."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from audit_tune.analysis.calibrate import synthetic_snapshot
from audit_tune.analysis.fleet import FleetResult, recommend_fleet
from audit_tune.analysis.impact_result import PolicyImpact
from audit_tune.analysis.policy import load_policy
from audit_tune.analysis.policy_impact import impact_report
from audit_tune.analysis.recommend import Objective, build_report
from audit_tune.analysis.recommendation import RecommendationReport
from audit_tune.analysis.render import fleet as _fleet_formats  # noqa: F401 - registers the formatters
from audit_tune.analysis.render import policy_impact as _impact_formats  # noqa: F401
from audit_tune.analysis.render import recommend as _recommend_formats  # noqa: F401
from audit_tune.analysis.report import CapacityReport
from audit_tune.analysis.report.data import assemble, recommendation
from audit_tune.basics.errors import InputError
from audit_tune.basics.formats import formats_of, registered_types, render
from audit_tune.loadgen.local import DEFAULT_POLICY
from audit_tune.loadgen.verify import TraceRows, verify_run
from audit_tune.loadgen.verify_result import VerifyReport
from audit_tune.sim.config import AuditFlags

OBJ = Objective(seeds=1, jobs=1, peak_window="1m")
REPO = Path(__file__).resolve().parents[1]
POLICIES = REPO / "tests" / "fixtures" / "policies"


@pytest.fixture(scope="module")
def samples() -> dict[type, object]:
    """One real result of each registered type, built by the code that builds it for the CLI."""
    one = synthetic_snapshot(rates={"a": [300.0, 900.0, 400.0] * 3}, sigma=0.3)
    two = synthetic_snapshot(rates={"a": [300.0] * 6, "b": [200.0] * 6}, sigma=0.2)
    two["instances"]["a"]["cluster"], two["instances"]["b"]["cluster"] = "east", "west"
    capacity = assemble(one, recommendation(one, AuditFlags(), "defaults", OBJ, 2, {}, lambda m: None), AuditFlags(),
                        OBJ, 2, "formats")
    return {
        CapacityReport: capacity,
        RecommendationReport: build_report(one, AuditFlags(), "defaults", OBJ, seed=2),
        FleetResult: recommend_fleet(two, AuditFlags(), "defaults", OBJ, seed=2),
        PolicyImpact: impact_report(json.loads((POLICIES / "impact-snapshot-local-default.json").read_text()),
                                    load_policy(POLICIES / "gce-style-policy.yaml"),
                                    load_policy(REPO / "loadgen" / "policies" / "default.yaml")),
        VerifyReport: verify_run(_run_record(), _trace(), policy=str(DEFAULT_POLICY)),
    }


def _trace(n: int = 600) -> TraceRows:
    """Gets of configmaps at 60/s, each answered in 4 ms."""
    return TraceRows(send=np.arange(n) / 60.0, latency=np.full(n, 0.004), status=np.full(n, 200),
                     verb=["get"] * n, resource=["configmaps"] * n)


def _run_record() -> dict:
    """A load-test record of the trace above: 601 events (the trace plus the window's scrape)."""
    return {"window": {"start_unix": 1000.0, "end_unix": 1010.0, "duration_s": 10.0, "elapsed_s": 10.0},
            "audit": {"event_total": 601.0, "error_total_by_plugin": {"buffered": 0.0}},
            "flags": {"args": ["--audit-webhook-batch-max-wait=1s"]}, "config": {"seed": 1}, "load": {"kept_up": True},
            "cleanup": {}, "sink": {"delta": {"events_stored": 601, "events_received": 601, "bytes_received": 601 * 900}}}


def test_every_registered_type_renders_in_each_of_its_formats(samples):
    types = registered_types()
    assert set(types) == set(samples), "a result type registered formatters but has no sample here"
    for t in types:
        result = samples[t]
        fmts = formats_of(t)
        assert {"json", "yaml"} <= set(fmts) and len(fmts) > 2, t
        for fmt in fmts:
            text = render(result, fmt)
            assert isinstance(text, str) and text.strip(), (t.__name__, fmt)
        doc = json.loads(render(result, "json"))
        assert doc == json.loads(json.dumps(result.to_dict()))
        assert yaml.safe_load(render(result, "yaml")) == doc


def test_fleet_summary_is_one_row_per_cluster(samples):
    fleet = samples[FleetResult]
    assert [r.cluster for r in fleet.summary] == ["east", "west"]
    assert [r.instances for r in fleet.summary] == [1, 1]
    assert set(fleet.clusters) == {"east", "west"}
    assert "east" in render(fleet, "table") and "west" in render(fleet, "table")


def test_capacity_report_is_its_document(samples):
    report = samples[CapacityReport]
    doc = report.to_dict()
    assert CapacityReport.from_doc(doc) == report
    assert report.summary.verdict in ("ok", "change", "no-solution")
    assert report.title in render(report, "markdown") and "<!DOCTYPE html>" in render(report, "html")


def test_unknown_format_names_the_formats_of_that_type(samples):
    with pytest.raises(InputError, match="--format xml: unknown format; use one of .*json.*table.*yaml"):
        render(samples[FleetResult], "xml")
