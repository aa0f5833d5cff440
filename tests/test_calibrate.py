"""Calibration math without Prometheus: synthetic snapshots from a *known* load.

``analysis.calibrate.synthetic_snapshot`` records a known rate curve, lognormal sub-step bursts,
event size, webhook latency and failures the way Prometheus would; calibration must get them back.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from audit_tune.analysis.calibrate import (
    DEFAULT_EVENT_SIZE,
    SyntheticWebhook,
    calibrate,
    data_problems,
    failure_rate,
    fit_burst,
    latency_from_histogram,
    load_snapshot,
    synthetic_snapshot,
    validate,
)
from audit_tune.basics.errors import InputError, NotEnoughData
from audit_tune.sim.config import AuditFlags, parse_flags
from audit_tune.sim.latency import Latency

RATES = [300.0 + 200.0 * np.sin(i / 8.0) ** 2 for i in range(60)]  # 30 min at 30 s steps


def snap(**kw):
    kw.setdefault("rates", {"apiserver-0": RATES})
    return synthetic_snapshot(**kw)


def test_rate_curve_recovered_within_a_few_percent():
    s = snap(sigma=0.4)
    m = calibrate(s, "apiserver-0")
    true_mean = float(np.mean(RATES))
    assert m.mean_rate == pytest.approx(true_mean, rel=0.03)
    assert m.step == 30 and len(m.rates) == len(RATES)
    # the replayed workload (the simulator's own event count) matches the observed counter
    v = validate(m, AuditFlags(), seed=3)
    assert v.rate_error < 0.03
    assert v.predicted_errors["buffered"] == 0 and v.confidence == "high"


@pytest.mark.parametrize("sigma", [0.0, 0.3, 0.6])
def test_burst_fit_recovers_sigma(sigma):
    m = calibrate(snap(sigma=sigma, seed=11), "apiserver-0")
    b = m.burst
    assert b.method == "peak-ratio" and b.per_step == 3 and b.window == 10
    assert abs(b.sigma - sigma) < 0.15, b
    # the fitted model reproduces the observed peak/mean ratios it was fitted to
    assert b.model_ratio_p50 == pytest.approx(b.observed_ratio_p50, rel=0.08)
    assert b.model_ratio_p90 >= b.observed_ratio_p90 * 0.95


def test_burst_fit_is_monotone_and_bounded():
    fits = [calibrate(snap(sigma=s, seed=5), "apiserver-0").burst.sigma for s in (0.1, 0.4, 0.9)]
    assert fits[0] < fits[1] < fits[2] <= 2.5


def test_without_peak_series_sigma_from_step_spread_and_said_so():
    s = snap(sigma=0.4)
    s["instances"]["apiserver-0"]["event_rate_peak"] = None
    m = calibrate(s, "apiserver-0")
    assert m.burst.method == "step-variance" and "less certain" in m.burst.note
    assert 0 <= m.burst.sigma <= 2.5


def test_step_not_longer_than_burst_window_means_no_substep_model():
    rates = np.asarray(RATES) * 0 + 100.0
    r = fit_burst(rates, rates * 1.1, step=10.0, window=10.0)
    assert r.method == "none" and r.sigma == 0


def test_event_size_latency_and_failures_recovered():
    s = snap(event_size=1400, webhook=SyntheticWebhook(Latency("lognormal", 0.08, 0.5), failure_rate=0.05, batch_events=250))
    m = calibrate(s, "apiserver-0")
    assert m.event_size == pytest.approx(1400, rel=0.03)
    assert m.latency.kind == "empirical" and len(m.latency.values) == 40
    assert 0.04 < float(np.median(m.latency.values)) < 0.16  # median 80 ms, read from buckets .025/.1/.25
    assert m.failure_rate == pytest.approx(0.05, abs=0.01)
    assert m.epr == pytest.approx(2.0, rel=0.01)


def test_defaults_when_webhook_data_is_missing_are_stated():
    s = snap()
    s["instances"]["apiserver-0"]["webhook"] = None
    m = calibrate(s, "apiserver-0")
    assert m.event_size == DEFAULT_EVENT_SIZE
    assert "default" in m.sources["event_size"] and "default" in m.sources["webhook_latency"]
    assert any("850 B" in w for w in m.warnings)


def test_events_per_request_from_levels_sets_the_request_mix():
    m = calibrate(snap(epr=1.0), "apiserver-0")
    assert m.epr == pytest.approx(1.0, rel=0.01)
    classes, omit = m.classes()
    assert omit == frozenset({"RequestReceived"})
    m3 = calibrate(snap(epr=2.5), "apiserver-0")
    classes, omit = m3.classes()
    assert len(classes) == 2 and classes[1].long_running


def test_histogram_quantiles_interpolate_like_promql():
    lat = latency_from_histogram([0.1, 0.2, "+Inf"], [50, 100, 100], points=4)
    # quantiles .125 .375 .625 .875 of uniform(0, .1) then uniform(.1, .2)
    assert lat.values == pytest.approx((0.025, 0.075, 0.125, 0.175))
    assert latency_from_histogram([0.1, "+Inf"], [0, 0]) is None
    p, n = failure_rate({"200": 90, "503": 5, "<error>": 5}, None)
    assert p == pytest.approx(0.10) and n == 100


def test_validation_predicts_drops_above_default_capacity():
    # 6,000 events/s against the default 10 x 400 = 4,000/s: the model must predict buffered drops
    s = snap(rates={"a": [6000.0] * 6}, sigma=0.0)
    m = calibrate(s, "a")
    v = validate(m, AuditFlags(), seed=1)
    assert v.predicted_errors["buffered"] > 0
    assert v.confidence == "low" and "may not be the ones in force" in v.why  # none observed in the snapshot
    # the same window with enough capacity predicts none
    v2 = validate(m, parse_flags(["--audit-webhook-batch-throttle-qps=30"]), seed=1)
    assert v2.predicted_errors["buffered"] == 0 and v2.confidence == "high"


def test_not_enough_data_reasons_per_item():
    s = snap()
    s["instances"]["apiserver-0"]["event_rate"] = {"t": [], "v": []}
    assert "is --audit-policy-file set" in data_problems(s, "apiserver-0")[0]
    with pytest.raises(NotEnoughData, match="apiserver-0"):
        calibrate(s, "apiserver-0")
    s2 = snap(rates={"a": [0.0] * 10})
    with pytest.raises(NotEnoughData, match="did not increase"):
        calibrate(s2, "a")


def test_snapshot_files_load_through_the_shared_loader(tmp_path):
    p = tmp_path / "snap.json"
    p.write_text(json.dumps(snap()))
    d = load_snapshot(p)
    assert calibrate(d, "apiserver-0").mean_rate > 0
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "something-else"}')
    with pytest.raises(InputError):
        load_snapshot(bad)
    with pytest.raises(InputError):
        load_snapshot(tmp_path / "missing.json")
