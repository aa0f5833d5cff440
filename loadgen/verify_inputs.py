"""The evidence of one load-test run, as the replay reads it (``docs/verification.md``): the
per-request trace, the sink's store, the audit events the policy in force makes of each request
(``sim.policy``: level and stages), the sink's measured latencies and configured faults, and the
throttle's bucket when the window started.
"""
from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from audit_tune.basics.errors import InputError
from audit_tune.basics.jsondata import JsonObject, JsonValue, as_list
from audit_tune.loadgen.faults import FaultConfig
from audit_tune.loadgen.mix import RESOURCES, VERBS
from audit_tune.loadgen.record import ST_CANCELLED, ST_TIMEOUT, TRACE_COLUMNS, Trace
from audit_tune.loadgen.sink_stats import SinkStats
from audit_tune.loadgen.store_scan import read_head
from audit_tune.sim.config import AuditFlags
from audit_tune.sim.latency import Latency
from audit_tune.sim.policy import RequestAttributes, evaluate, load_policy, stages_emitted
from audit_tune.sim.receiver import Outage

MAX_LATENCY_VALUES = 2000  # the empirical receiver latency keeps at most this many quantiles
DEFAULT_USER = ("audit-tune-loadgen", ("system:masters", "system:authenticated"))


@dataclass
class TraceRows:
    """The per-request trace as arrays (from a :class:`loadgen.record.Trace` or a record's rows)."""

    send: np.ndarray
    latency: np.ndarray
    status: np.ndarray  # int: HTTP code, 0 error, -1 unsent, -2 timeout, -3 cancelled
    verb: list[str]
    resource: list[str]

    @classmethod
    def of(cls, trace: Trace | JsonObject | list[JsonValue]) -> TraceRows:
        """From a run's :class:`~loadgen.record.Trace`, or the record's inline ``trace`` (``{"columns",
        "rows"}``, or its rows alone in :data:`TRACE_COLUMNS` order)."""
        if isinstance(trace, Trace):
            v = trace.view()
            return cls(v["send"].astype(float), v["latency"].astype(float), v["status"].astype(int),
                       [VERBS[i] for i in v["verb"].tolist()], [RESOURCES[i] for i in v["resource"].tolist()])
        given = trace.get("columns") if isinstance(trace, dict) else None
        cols = [str(c) for c in as_list(given, "trace columns")] if given is not None else TRACE_COLUMNS
        rows = [as_list(r, f"trace row {i + 1}")
                for i, r in enumerate(as_list(trace["rows"] if isinstance(trace, dict) else trace, "trace rows"))]
        ix = {c: i for i, c in enumerate(cols)}
        names = {"unsent": -1, "error": 0, "timeout": ST_TIMEOUT, "cancelled": ST_CANCELLED}

        def num(x: JsonValue) -> float:
            if x is None or x == "":
                return float("nan")
            if isinstance(x, (int, float, str)):
                return float(x)
            raise InputError(f"trace: {x!r} is not a number")

        def status(x: JsonValue) -> int:
            return names[str(x)] if str(x) in names else int(num(x))

        return cls(np.array([num(r[ix["send_offset"]]) for r in rows]),
                   np.array([num(r[ix["latency"]]) for r in rows]),
                   np.array([status(r[ix["status"]]) for r in rows], dtype=int),
                   [str(r[ix["verb"]]) for r in rows], [str(r[ix["resource"]]) for r in rows])

    @classmethod
    def from_csv(cls, path: str | Path) -> TraceRows:
        with open(path, newline="") as f:
            rd = csv.reader(f)
            cols = next(rd)
            return cls.of({"columns": list(cols), "rows": [list(r) for r in rd]})


@dataclass
class StoreView:
    """What the verification needs from the sink's hash-chained store."""

    events: int = 0
    size_by_level_stage: dict[tuple[str, str], float] = field(default_factory=dict)
    count_by_level_stage: dict[tuple[str, str], int] = field(default_factory=dict)
    stage_unix: np.ndarray = field(default_factory=lambda: np.zeros(0))
    received_unix: np.ndarray = field(default_factory=lambda: np.zeros(0))
    users: dict[str, tuple[str, tuple[str, ...]]] = field(default_factory=dict)  # namespace -> user
    batch_first_received: np.ndarray = field(default_factory=lambda: np.zeros(0))  # one per batch

    def mean_size(self, level: str | None = None) -> float | None:
        keys = [k for k in self.count_by_level_stage if level is None or k[0] == level]
        n = sum(self.count_by_level_stage[k] for k in keys)
        if not n:
            return None
        return sum(self.size_by_level_stage[k] for k in keys) / n


def _ts(s: object) -> float:
    if not isinstance(s, str) or not s:
        return float("nan")
    try:
        return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return float("nan")


def read_store(path: str | Path, namespaces: tuple[str, ...] = ()) -> StoreView:
    """Sizes per (level, stage), and every event's ``stageTimestamp`` and ``received`` time.

    Only what the sink acknowledged counts: the records up to the head's offset (a batch written
    after it was never answered 200), and never a torn last line left by a crash."""
    real = Path(path).resolve()
    head = read_head(real)
    end = head.offset if head is not None and head.offset is not None else None
    sv = StoreView()
    st, rc = [], []
    batches: dict[int, float] = {}
    with open(real, "rb") as f:
        pos = 0
        for raw in f:
            pos += len(raw)
            if (end is not None and pos > end) or not raw.endswith(b"\n"):
                break
            rec = json.loads(raw)
            ev = rec.get("event") or {}
            key = (str(ev.get("level", "")), str(ev.get("stage", "")))
            size = len(json.dumps(ev, separators=(",", ":"), ensure_ascii=False).encode())
            sv.size_by_level_stage[key] = sv.size_by_level_stage.get(key, 0.0) + size
            sv.count_by_level_stage[key] = sv.count_by_level_stage.get(key, 0) + 1
            st.append(_ts(ev.get("stageTimestamp")))
            rc.append(float(rec.get("received", float("nan"))))
            bno = int(rec.get("batch", -1))
            batches[bno] = min(batches.get(bno, math.inf), rc[-1])
            ns = (ev.get("objectRef") or {}).get("namespace")
            if ns in namespaces and ns not in sv.users:
                u = ev.get("user") or {}
                sv.users[ns] = (str(u.get("username", "")), tuple(u.get("groups") or ()))
            sv.events += 1
    sv.stage_unix, sv.received_unix = np.array(st, dtype=float), np.array(rc, dtype=float)
    sv.batch_first_received = np.array(sorted(batches.values()), dtype=float)
    return sv


K8S_VERB = {"create": "create", "get": "get", "list": "list", "update": "update", "patch": "patch",
            "delete": "delete", "watch": "watch"}


def _reached(status: np.ndarray) -> np.ndarray:
    """Requests that reached the apiserver: an HTTP answer, a client timeout or a cancel mid-flight.
    Transport errors (connection refused/reset) and unsent requests made no events."""
    return (status > 0) | (status == ST_TIMEOUT) | (status == ST_CANCELLED)


def event_times(tr: TraceRows, policy_path: str | None, user: tuple[str, tuple[str, ...]],
                namespace: str, events_total_obs: float | None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, str, dict]:
    """(event times in run seconds, level and stage per event, method, per-request-kind detail)."""
    ok = _reached(tr.status) & np.isfinite(tr.send)
    lat = np.where(np.isfinite(tr.latency), tr.latency, 0.0)
    times: list[np.ndarray] = []
    levels: list[np.ndarray] = []
    stages_l: list[np.ndarray] = []
    detail: dict[str, Any] = {}
    policy = None
    why = ""
    if policy_path:
        try:
            policy = load_policy(policy_path)
        except Exception as e:  # noqa: BLE001 - any failure falls back to the measured ratio
            why = f"{type(e).__name__}: {e}"
    if policy is not None:
        verbs = np.array(tr.verb)
        ress = np.array(tr.resource)
        for v in sorted(set(tr.verb)):
            for r in sorted(set(tr.resource)):
                m = ok & (verbs == v) & (ress == r)
                if not m.any():
                    continue
                attrs = RequestAttributes(user=user[0], groups=user[1], verb=K8S_VERB.get(v, v),
                                          namespace=namespace, resource=r, api_group="")
                level, omit, rule = evaluate(policy, attrs)
                stages = stages_emitted(level, omit, attrs.long_running)
                detail[f"{v} {r}"] = {"requests": int(m.sum()), "level": level, "stages": list(stages), "rule": rule}
                for s in stages:
                    t = tr.send[m] + (lat[m] if s == "ResponseComplete" else 0.0)
                    times.append(t)
                    levels.append(np.full(len(t), level, dtype=object))
                    stages_l.append(np.full(len(t), s, dtype=object))
        # the before-window /metrics scrape: its ResponseComplete is counted in the window
        attrs = RequestAttributes(user=user[0], groups=user[1], verb="get", path="/metrics",
                                  is_resource_request=False)
        level, omit, _ = evaluate(policy, attrs)
        st = [s for s in stages_emitted(level, omit, False) if s != "RequestReceived"]
        detail["scrape /metrics (before the window)"] = {"requests": 1, "level": level, "stages": st}
        for _ in st:
            times.append(np.array([0.0]))
            levels.append(np.array([level], dtype=object))
            stages_l.append(np.array(["ResponseComplete"], dtype=object))
        method = f"policy {policy_path}"
    else:
        n = int(ok.sum())
        ratio = (events_total_obs or 0.0) / n if n else 0.0
        k = np.floor(np.cumsum(np.full(n, ratio)) + 1e-9)
        per = np.diff(np.concatenate([[0.0], k])).astype(int)
        t = np.repeat((tr.send + lat)[ok], per)
        times.append(t)
        levels.append(np.full(len(t), "Metadata", dtype=object))
        stages_l.append(np.full(len(t), "ResponseComplete", dtype=object))
        method = (f"measured ratio events_total/requests = {ratio:.4f} (policy not usable: {why or 'none given'}); "
                  "events placed at each request's completion")
    if not times:
        return np.zeros(0), np.zeros(0, dtype=object), np.zeros(0, dtype=object), method, detail
    t = np.concatenate(times)
    lv = np.concatenate(levels)
    sg = np.concatenate(stages_l)
    order = np.argsort(t, kind="stable")
    return np.maximum(t[order], 0.0), lv[order], sg[order], method, detail


def receiver_latency(samples: np.ndarray | None, stats: dict | None) -> tuple[Latency, str]:
    n_samples = 0 if samples is None else len(samples)
    x = np.asarray(samples if samples is not None else [], dtype=float)
    x = x[np.isfinite(x) & (x >= 0)]
    if len(x):
        if len(x) > MAX_LATENCY_VALUES:
            q = (np.arange(MAX_LATENCY_VALUES) + 0.5) / MAX_LATENCY_VALUES
            x = np.quantile(x, q)
        vals = tuple(float(v) for v in np.sort(x))
        return Latency("empirical", values=vals), f"empirical, {n_samples} sink handling latencies " \
                                                  f"(p50 {1000 * np.median(x):.1f} ms, max {1000 * x.max():.1f} ms)"
    p50 = ((stats or {}).get("latency_s") or {}).get("p50")
    if p50:
        return Latency("fixed", float(p50)), f"fixed {1000 * p50:.1f} ms (sink stats p50; no samples)"
    return Latency("fixed", 0.005), "fixed 5 ms (no sink measurements)"


def receiver_faults(faults: FaultConfig | None, offset: float) -> tuple[float, int, tuple, int, list[str]]:
    """The sink's :class:`loadgen.faults.FaultConfig` in simulator terms; ``offset`` = sink start -
    window start (s), so a sink-relative outage ``[a, b)`` is ``[a + offset, b + offset)`` in the run."""
    notes: list[str] = []
    if faults is None:
        return 0.0, 500, (), 0, notes
    outs = []
    for o in faults.outages:
        kind = "refuse" if o.mode == "refuse" else "hang" if o.mode == "hang" else "status"
        if kind == "hang":
            notes.append(f"outage {o.describe()}: the sink holds requests until the window ends; the simulator's "
                         "'hang' lets each attempt time out at 30 s")
        outs.append(Outage(o.start + offset, o.end + offset, kind, o.status or 503))
    if faults.hang_rate:
        notes.append(f"--hang-rate {faults.hang_rate} not modelled")
    if faults.latency_per_inflight:
        notes.append("--latency-per-inflight is in the measured latencies, not modelled per in-flight")
    if faults.max_concurrency:
        notes.append(f"--max-concurrency {faults.max_concurrency} not modelled")
    return faults.error_rate, faults.error_status, tuple(outs), int(faults.max_body_bytes or 0), notes


def realized_error_rate(s0: SinkStats, s1: SinkStats, min_attempts: int = 20) -> tuple[float, int] | None:
    """The fraction of attempts the sink failed on purpose (``--error-rate``) between two stats, among
    the attempts that got as far as that draw (not cut short by an outage, a hang or a limit)."""
    f0, f1 = s0.get("faults_applied") or {}, s1.get("faults_applied") or {}
    n = int(s1.get("requests", 0)) - int(s0.get("requests", 0))
    other = sum(int(v) - int(f0.get(k, 0)) for k, v in f1.items() if k != "error-rate")
    errs = int(f1.get("error-rate", 0)) - int(f0.get("error-rate", 0))
    n -= other
    if n < min_attempts:
        return None
    return errs / n, n


def bucket_at_start(sv: StoreView, start: float, flags: AuditFlags) -> float | None:
    """Estimated tokens in the webhook throttle's bucket when the window started, from the batches
    the sink received before it (a batch's arrival stands for its dispatch). The bucket is taken as
    full after the last idle gap of at least ``burst / qps``; None when the throttle is off."""
    b = flags.webhook.batch
    if not b.throttle_enable or b.effective_qps <= 0:
        return None
    qps, burst = b.effective_qps, float(b.throttle_burst)
    if not len(sv.batch_first_received):
        return burst
    t = np.sort(sv.batch_first_received[sv.batch_first_received < start])
    if not len(t):
        return burst
    gaps = np.diff(np.concatenate([[-np.inf], t]))
    i = int(np.nonzero(gaps >= burst / qps)[0][-1])
    tokens, last = burst, t[i]
    for x in t[i:]:
        tokens = min(burst, tokens + qps * (x - last)) - 1.0
        last = x
    return max(0.0, min(burst, tokens + qps * (start - last)))


# ----------------------------------------------------------------------------- verify
