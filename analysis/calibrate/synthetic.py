"""Synthetic snapshots from a *known* load, recorded as Prometheus would (tests, docs, and a
stand-in sample): calibration (``analysis.calibrate.fit``) must get the load back from them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from audit_tune.analysis.calibrate.fit import ENVELOPE_BYTES, attempts_per_batch
from audit_tune.analysis.snapshot import FORMAT
from audit_tune.analysis.snapshot_doc import InstanceDoc, SnapshotDoc
from audit_tune.sim.latency import Latency
from audit_tune.sim.units import format_duration

DURATION_BUCKETS = (0.005, 0.025, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60)
SIZE_BUCKETS = tuple(float(64 * 4 ** k) for k in range(10))


SYNTHETIC_LATENCY = Latency("lognormal", 0.05, 0.4)


@dataclass(frozen=True)
class SyntheticWebhook:
    """The audit webhook a synthetic snapshot records: per-attempt ``latency``, the probability
    ``failure_rate`` that an attempt fails (retried as the apiserver does), and full batches of
    ``batch_events`` events."""

    latency: Latency = SYNTHETIC_LATENCY
    failure_rate: float = 0.0
    batch_events: float = 400.0


DEFAULT_WEBHOOK = SyntheticWebhook()


def synthetic_snapshot(rates: dict[str, list[float]] | None = None, step: float = 30.0, sigma: float = 0.4,
                       window: float = 10.0, event_size: int = 900, epr: float = 2.0,
                       webhook: SyntheticWebhook = DEFAULT_WEBHOOK,
                       errors: dict[str, dict[str, float]] | None = None,
                       seed: int = 1, start: float = 1_780_000_000.0) -> SnapshotDoc:
    """An ``audit-tune-snapshot/v1`` document generated from a *known* load, as Prometheus would
    record it: per step, ``n = step / window`` windows with rate ``rate x X_k`` (the same lognormal
    model :func:`fit_burst` fits), Poisson counts, ``event_rate`` = count / step, ``event_rate_peak``
    = busiest window / window; webhook histograms from ``webhook`` (latency, failures, full batches of
    events of ``event_size`` bytes)."""
    rates = rates or {"apiserver-0": [200.0 + 150.0 * math.sin(i / 12.0) ** 2 for i in range(120)]}
    g = np.random.default_rng(seed)
    n = max(int(round(step / window)), 1)
    latency, failure_rate, batch_events = webhook.latency, webhook.failure_rate, webhook.batch_events
    insts: dict[str, InstanceDoc] = {}
    for name, rs in rates.items():
        r = np.asarray(rs, dtype=float)
        x = np.exp(sigma * g.standard_normal((len(r), n)) - sigma * sigma / 2)
        x /= x.mean(axis=1, keepdims=True)
        counts = g.poisson(r[:, None] * x * (step / n))
        ev_rate = counts.sum(axis=1) / step
        peak = counts.max(axis=1) / (step / n)
        events = float(counts.sum())
        err = {k: 0.0 for k in ("buffered", "webhook", "log", "truncate")}
        err.update((errors or {}).get(name, {}))
        sent = events - err["buffered"]
        batches = max(sent / batch_events, 1.0)
        attempts = batches * attempts_per_batch(failure_rate)
        lat = latency.sample_array(g.random(max(int(attempts), 1)))
        cum: list[float] = [*(int(np.sum(lat <= b)) for b in DURATION_BUCKETS), len(lat)]
        body = batch_events * event_size + ENVELOPE_BYTES
        t = (start + step * (np.arange(len(r)) + 1)).tolist()
        n_fail = int(round(attempts * failure_rate))
        codes = {"200": float(int(round(attempts)) - n_fail)}
        if n_fail:
            codes["500"] = float(n_fail)
        insts[name] = {
            "cluster": "synthetic",
            "event_rate": {"t": t, "v": ev_rate.tolist()},
            "event_rate_peak": {"window": format_duration(step / n), "t": t, "v": peak.tolist()},
            "events_increase": events,
            "errors_increase": err,
            "level_increase": {"None": float(round(events / epr * 0.1)), "Metadata": events / epr, "Request": 0.0, "RequestResponse": 0.0},
            "requests_rejected_increase": 0.0,
            "request_rate": None,
            "requests_by_verb": None,
            "webhook": {
                "host": "siem.example:8443",
                "duration_buckets": {"le": [*DURATION_BUCKETS, "+Inf"], "cum": cum},
                "duration_sum": float(lat.sum()), "duration_count": float(len(lat)),
                "requests_by_code": codes,
                "size_buckets": {"le": [*SIZE_BUCKETS, "+Inf"],
                                 "cum": [*(int(round(attempts)) if body <= b else 0 for b in SIZE_BUCKETS), int(round(attempts))]},
                "size_sum": float(body * round(attempts)), "size_count": float(round(attempts)),
            },
            "audit_filter_latency": None,
            "memory_bytes": None,
        }
    end = start + step * max(len(v) for v in rates.values())
    return {
        "format": FORMAT, "tool_version": "synthetic", "recorded_at": float(end),
        "source": {"prometheus_url": "", "window": {"start": start, "end": end, "step": float(step)},
                   "cluster_label": None, "selector": 'job="apiserver"'},
        "instances": insts,
        "missing": [],
    }
