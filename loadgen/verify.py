"""Verify a load-test run against the simulator: replay what was sent, compare with what happened.

``tune loadtest --verify`` (and :func:`verify_run` from Python) takes one real run (the
``audit-tune-loadtest/v1`` record and its per-request trace, the sink's store and measured
handling latencies, the sink's configured faults) and replays it through the simulator
(:func:`sim.api.run`) with the same ``--audit-*`` flags:

* **events**: for every traced request that reached the apiserver, the audit policy in force
  (:mod:`analysis.policy`: ``evaluate`` on the request's user, verb, namespace and resource,
  then ``stages_emitted``) gives its level and stages; RequestReceived (and ResponseStarted for
  a watch) is placed at the request's send time, ResponseComplete at send + latency. The
  before-window ``/metrics`` scrape (a non-resource GET, counted in the window because its
  ResponseComplete comes after its value was read) is added at t = 0. If the policy cannot be
  loaded, the measured ``events_total / requests`` ratio is used instead (the report says which).
  The simulator gets these *event* times as a trace of one-event requests, so the event stream
  it buffers is the run's own, not a re-draw.
* **event sizes**: the mean bytes per level of the sink's stored events (compact JSON), else
  the sink's ``bytes_received / events_received``;
* **receiver**: an empirical latency distribution made of the sink's own measured handling
  latencies for this run (``Sink.latency_samples()`` / ``/stats?samples=1``), plus the sink's
  configured error rate and outage windows, moved from sink-start time to run time.

It then prints observed and predicted side by side (events_total, buffered drops, webhook drops,
delivered, delivery latency p50/p99) and decides:

* observed drops above ``max_drops``: a failure;
* observed and predicted apart by more than the tolerance (counts: 5% of events_total plus one
  batch, see ``docs/verification.md``; latency: see :data:`LAT_REL`): a failure;
* the accounting check ``events_total = delivered + drops (+ in flight)`` over the whole run
  (absolute counters read when the pipeline is quiet): events missing from both sides are
  **lost**, a failure.

Any failure makes the CLI exit 3.
"""
from __future__ import annotations

import json
import math
import ssl
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

import numpy as np

from audit_tune.loadgen import metrics_text as mt
from audit_tune.loadgen.mix import RESOURCES, VERBS
from audit_tune.loadgen.record import ST_CANCELLED, ST_TIMEOUT, TRACE_COLUMNS

COUNT_REL = 0.05  # count tolerance: 5% of observed events_total ...
# ... plus one batch (max-batch-size events); see docs/verification.md.
LAT_REL = 0.5  # latency tolerance: 50% of the larger value ...
LAT_ABS = 0.25  # ... plus 250 ms
RANDOM_SEEDS = 15  # simulated draws when the sink has random faults (an error rate)
MAX_LATENCY_VALUES = 2000  # the empirical receiver latency keeps at most this many quantiles
DEFAULT_USER = ("audit-tune-loadgen", ("system:masters", "system:authenticated"))


# ----------------------------------------------------------------------------- inputs

@dataclass
class TraceRows:
    """The per-request trace as arrays (from a :class:`loadgen.record.Trace` or a record's rows)."""

    send: np.ndarray
    latency: np.ndarray
    status: np.ndarray  # int: HTTP code, 0 error, -1 unsent, -2 timeout, -3 cancelled
    verb: list[str]
    resource: list[str]

    @classmethod
    def of(cls, trace: Any) -> "TraceRows":
        if hasattr(trace, "view"):
            v = trace.view()
            return cls(v["send"].astype(float), v["latency"].astype(float), v["status"].astype(int),
                       [VERBS[i] for i in v["verb"].tolist()], [RESOURCES[i] for i in v["resource"].tolist()])
        rows = trace["rows"] if isinstance(trace, dict) else trace
        cols = trace.get("columns", TRACE_COLUMNS) if isinstance(trace, dict) else TRACE_COLUMNS
        ix = {c: i for i, c in enumerate(cols)}
        names = {"unsent": -1, "error": 0, "timeout": ST_TIMEOUT, "cancelled": ST_CANCELLED}

        def num(x: Any) -> float:
            return float("nan") if x is None or x == "" else float(x)

        return cls(np.array([num(r[ix["send_offset"]]) for r in rows]),
                   np.array([num(r[ix["latency"]]) for r in rows]),
                   np.array([names.get(str(r[ix["status"]]), None) if str(r[ix["status"]]) in names
                             else int(r[ix["status"]]) for r in rows], dtype=int),
                   [str(r[ix["verb"]]) for r in rows], [str(r[ix["resource"]]) for r in rows])

    @classmethod
    def from_csv(cls, path: str | Path) -> "TraceRows":
        import csv

        with open(path, newline="") as f:
            rd = csv.reader(f)
            cols = next(rd)
            return cls.of({"columns": cols, "rows": list(rd)})


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


def _ts(s: Any) -> float:
    if not isinstance(s, str) or not s:
        return float("nan")
    try:
        return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return float("nan")


def read_store(path: str | Path, namespaces: tuple[str, ...] = ()) -> StoreView:
    """Sizes per (level, stage), and every event's ``stageTimestamp`` and ``received`` time."""
    sv = StoreView()
    st, rc = [], []
    batches: dict[int, float] = {}
    with open(path, "rb") as f:
        for raw in f:
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


# ----------------------------------------------------------------------------- apiserver counters

def scrape_totals(target: Any, timeout: float = 30.0) -> dict[str, Any]:
    """Absolute ``apiserver_audit_event_total`` and ``apiserver_audit_error_total`` by plugin."""
    ctx = target.ssl_context()
    req = urllib.request.Request(target.server.rstrip("/") + "/metrics", headers=target.headers())
    kw: dict[str, Any] = {"timeout": timeout}
    if isinstance(ctx, ssl.SSLContext):
        kw["context"] = ctx
    with urllib.request.urlopen(req, **kw) as r:  # noqa: S310 - the user's apiserver
        m = mt.parse(r.read().decode(errors="replace"))
    errs = m.by_label("apiserver_audit_error_total", "plugin") if m.has("apiserver_audit_error_total") else {}
    return {"event_total": m.total("apiserver_audit_event_total"), "errors": {k: float(v) for k, v in errs.items()},
            "at": time.time()}


def quiet_window(flags: Any, retries: bool = True, refill: bool = False) -> float:
    """How long nothing may reach the sink before the pipeline is taken as quiet: a partial batch
    waits up to max-wait; with ``retries`` (the sink failed some attempts, or has faults configured)
    a failing batch may also be sleeping up to ``1.2 x initial x 1.5^3`` before its next attempt.
    With ``refill`` also until the throttle's token bucket is full again (``burst / qps``): the
    replay starts with a full bucket, as the apiserver does at start-up."""
    b = flags.webhook.batch
    w = max(2.0, b.max_batch_wait + 1.0)
    if retries:
        w = max(w, 1.2 * flags.webhook_initial_backoff * 1.5 ** 3 + 1.0)
    if refill and b.throttle_enable and b.effective_qps > 0:
        w = max(w, b.throttle_burst / b.effective_qps + 0.5)
    return w


def sink_failed_attempts(s0: dict, s1: dict) -> int:
    """Responses other than 200 (including ``dropped`` connections) the sink gave between two stats."""
    r0, r1 = s0.get("responses") or {}, s1.get("responses") or {}
    return int(sum(v - r0.get(k, 0) for k, v in r1.items() if k != "200"))


def wait_quiet(read_sink: Callable[[], dict], flags: Any, timeout: float = 120.0, poll: float = 0.5,
               retries: bool | None = None, since: dict | None = None, refill: bool = False) -> tuple[dict, bool]:
    """Poll the sink (not the apiserver: each scrape is itself an audit event) until nothing has
    reached it for :func:`quiet_window` seconds; returns (last stats, quiet reached). ``retries``
    None: decided from the sink's failed responses since ``since``."""
    deadline = time.monotonic() + timeout
    last = read_sink()
    t_last = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(poll)
        s = read_sink()
        if (s.get("requests"), s.get("events_stored")) != (last.get("requests"), last.get("events_stored")) \
                or s.get("inflight"):
            t_last = time.monotonic()
        last = s
        r = retries if retries is not None else sink_failed_attempts(since or {}, s) > 0
        if time.monotonic() - t_last >= quiet_window(flags, r, refill):
            return last, True
    return last, False


def accounting(a0: dict, a1: dict, s0: dict, s1: dict) -> dict[str, Any]:
    """``events_total = delivered + drops (+ in flight)`` over [a0, a1] (apiserver) and [s0, s1] (sink).

    ``s1`` is read after ``a1`` once the pipeline is quiet, so every event counted in ``a1`` has had
    its chance to be delivered or dropped: a positive residual is events **lost** (neither stored nor
    counted as dropped). A negative residual is events that were already in the pipeline at ``a0``
    (counted before it, delivered after ``s0``), or generated after ``a1`` (this scrape's own event,
    apiserver background traffic) and delivered before ``s1``."""
    ev = a1["event_total"] - a0["event_total"]
    plugins = set(a0["errors"]) | set(a1["errors"])
    drops = {p: a1["errors"].get(p, 0.0) - a0["errors"].get(p, 0.0) for p in sorted(plugins)}
    stored = s1["events_stored"] - s0["events_stored"]
    residual = ev - stored - sum(drops.values())
    return {"events_total": ev, "delivered": stored, "drops_by_plugin": drops, "residual": residual,
            "lost": max(0.0, residual)}


# ----------------------------------------------------------------------------- the replay

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
            from audit_tune.sim.policy import load_policy

            policy = load_policy(policy_path)
        except Exception as e:  # noqa: BLE001 - any failure falls back to the measured ratio
            why = f"{type(e).__name__}: {e}"
    if policy is not None:
        from audit_tune.sim.policy import RequestAttributes, evaluate, stages_emitted

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


def receiver_latency(samples: np.ndarray | None, stats: dict | None) -> tuple[Any, str]:
    from audit_tune.sim.latency import Latency

    x = np.asarray(samples if samples is not None else [], dtype=float)
    x = x[np.isfinite(x) & (x >= 0)]
    if len(x):
        if len(x) > MAX_LATENCY_VALUES:
            q = (np.arange(MAX_LATENCY_VALUES) + 0.5) / MAX_LATENCY_VALUES
            x = np.quantile(x, q)
        vals = tuple(float(v) for v in np.sort(x))
        return Latency("empirical", values=vals), f"empirical, {len(samples)} sink handling latencies " \
                                                  f"(p50 {1000 * np.median(x):.1f} ms, max {1000 * x.max():.1f} ms)"
    p50 = ((stats or {}).get("latency_s") or {}).get("p50")
    if p50:
        return Latency("fixed", float(p50)), f"fixed {1000 * p50:.1f} ms (sink stats p50; no samples)"
    return Latency("fixed", 0.005), "fixed 5 ms (no sink measurements)"


def receiver_faults(faults: Any, offset: float) -> tuple[float, int, tuple, int, list[str]]:
    """The sink's :class:`loadgen.faults.FaultConfig` in simulator terms; ``offset`` = sink start -
    window start (s), so a sink-relative outage ``[a, b)`` is ``[a + offset, b + offset)`` in the run."""
    from audit_tune.sim.receiver import Outage

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


def realized_error_rate(s0: dict, s1: dict, min_attempts: int = 20) -> tuple[float, int] | None:
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


def bucket_at_start(sv: StoreView, start: float, flags: Any) -> float | None:
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

def _pct(x: np.ndarray, q: float) -> float | None:
    return float(np.percentile(x, q)) if len(x) else None


def verify_run(record: dict[str, Any], trace: Any, *, flags: Any = None, policy: str | None = None,
               store: str | Path | None = None, sink_samples: np.ndarray | None = None,
               faults: Any = None, sink_started_unix: float | None = None,
               quiet: dict[str, Any] | None = None, max_drops: float = 0, engine: str = "fast",
               seeds: int | None = None, sink_stats: tuple[dict, dict] | None = None) -> dict[str, Any]:
    """Replay the run through the simulator and compare; returns the report (``ok``, ``failures``,
    ``rows``, ``exit_code``). ``quiet`` is :func:`accounting` over the whole run, if measured."""
    from audit_tune.sim.api import run as sim_run
    from audit_tune.sim.config import parse_flags
    from audit_tune.sim.receiver import Receiver
    from audit_tune.sim.scenario import Scenario
    from audit_tune.sim.workload import Arrivals, RequestClass, Workload

    tr = trace if isinstance(trace, TraceRows) else TraceRows.of(trace)
    if flags is None:
        args = (record.get("flags") or {}).get("args") or []
        flags = parse_flags(list(args))
    notes: list[str] = []
    win = record["window"]
    start, end = float(win["start_unix"]), float(win["end_unix"])
    audit = record.get("audit") or {}
    ns = tuple((record.get("cleanup") or {}).get("namespaces_deleted") or ())
    sv = read_store(store, ns) if store and Path(store).is_file() else None
    user = next(iter(sv.users.values())) if sv and sv.users else DEFAULT_USER

    # ---- the simulated scenario
    times, levels, stages, method, detail = event_times(tr, policy, user, ns[0] if ns else "",
                                                        audit.get("event_total"))
    kinds = [f"{lv}/{sg}" for lv, sg in zip(levels.tolist(), stages.tolist())]
    if sv is not None and sv.events:
        size_src = "mean bytes per level and stage of the sink's stored events"
        sizes = {}
        for k in set(kinds):
            lv, sg = k.split("/")
            n = sv.count_by_level_stage.get((lv, sg), 0)
            sizes[k] = sv.size_by_level_stage[(lv, sg)] / n if n else (sv.mean_size(lv) or sv.mean_size())
    else:
        sk = (record.get("sink") or {}).get("delta") or {}
        wh = audit.get("webhook") or {}
        sent = (audit.get("event_total") or 0) - ((audit.get("error_total_by_plugin") or {}).get("buffered") or 0)
        codes = wh.get("requests_by_code") or {}
        if sk.get("events_received"):
            mean, size_src = sk["bytes_received"] / sk["events_received"], "sink bytes_received / events_received"
        elif wh.get("request_bytes") and sent > 0 and set(codes) <= {"200"}:
            # no retries: every event crossed the wire once
            mean = wh["request_bytes"] / sent
            size_src = "rest_client_request_size_bytes / events sent (no retries)"
        else:
            mean, size_src = 800.0, "800 B (nothing measured)"
        sizes = {k: mean for k in set(kinds)}
    sink_rec = record.get("sink") or {}
    samples = sink_samples
    if samples is not None and sink_rec.get("before") and sink_rec.get("after") and "error" not in sink_rec["before"]:
        n0, n1 = int(sink_rec["before"].get("requests", 0)), int(sink_rec["after"].get("requests", 0))
        if len(samples) >= n1 > n0:
            samples = np.asarray(samples)[n0:n1]
    lat, lat_src = receiver_latency(samples, sink_rec.get("after"))
    offset = (sink_started_unix - start) if sink_started_unix is not None else 0.0
    err_rate, err_status, outages, max_body, fnotes = receiver_faults(faults, offset)
    notes += fnotes
    realized = realized_error_rate(sink_stats[0], sink_stats[1]) if sink_stats and err_rate > 0 else None
    if realized is not None:
        # the sink's seeded draws are one sample: use the fraction of attempts it really failed
        notes.append(f"error rate: configured {err_rate:g}, realized {realized[0]:.4f} over {realized[1]} attempts "
                     "(used)")
        err_rate = realized[0]
    classes = []
    # one class per (level, stage), each request of it one event: the simulator draws a class per
    # request by weight, so the sizes are right on average (they matter only for truncation and memory)
    uniq, counts = np.unique(np.array(kinds, dtype=str), return_counts=True) if kinds else ([], [])
    for k, c in zip(list(uniq), list(counts)):
        sz = int(round(sizes.get(k) or 800))
        classes.append(RequestClass(name=f"event-{k}", weight=float(c), level=k.split("/")[0], duration=0.0,
                                    omit_stages=frozenset({"RequestReceived"}), sizes=(sz, sz, sz, sz)))
    horizon = max(float(win.get("elapsed_s") or win["duration_s"]), float(times[-1]) if len(times) else 0.0) + 1e-3
    receiver = Receiver(latency=lat, error_rate=err_rate, error_status=err_status, outages=outages,
                        max_body_bytes=max_body)
    # the throttle's bucket when the window started (the run may begin right after the apiserver's
    # start-up burst emptied it): the replay starts from that level instead of a full bucket
    tokens0 = bucket_at_start(sv, start, flags) if sv is not None else None
    pred: dict[str, Any] = {"events_total": 0, "buffered": 0, "webhook": 0, "delivered": 0, "p50": None, "p99": None}
    spread: dict[str, float] = {}
    res_d: dict[str, Any] = {}
    if classes:
        seed0 = int((record.get("config") or {}).get("seed", 1))
        wl = Workload(arrivals=Arrivals("trace", trace=tuple(times.tolist())), duration=horizon, classes=tuple(classes))
        # With random faults (an error rate) one simulated draw is one outcome among many, like the
        # real run: replay RANDOM_SEEDS draws, predict their median, and widen the count tolerance by
        # the draws' spread (the larger distance from the median to the min or the max).
        k = seeds if seeds is not None else (RANDOM_SEEDS if err_rate > 0 else 1)
        runs = []
        for j in range(max(1, k)):
            sc = Scenario(flags=flags, receiver=receiver, seed=seed0 + j, workload=wl,
                          throttle_initial_tokens=tokens0)
            d = sim_run(sc, engine=engine).to_dict(series=False)
            dl = d.get("delivery_latency_seconds") or {}
            runs.append({"events_total": d["events_total"], "buffered": d["errors"]["buffered"],
                         "webhook": d["errors"]["webhook"], "delivered": d["delivered"],
                         "p50": dl.get("p50"), "p99": dl.get("p99"), "in_flight_at_end": d.get("in_flight_at_end"),
                         "max_inflight_batches": d.get("max_inflight_batches")})
            res_d = res_d or d
        if len(runs) == 1:
            pred = runs[0]
        else:
            for key in runs[0]:
                vals = [r[key] for r in runs if r[key] is not None]
                if not vals:
                    pred[key] = None
                    continue
                med = float(np.median(vals))
                pred[key] = med if key in ("p50", "p99") else int(round(med))
                spread[key] = max(max(vals) - med, med - min(vals))
            notes.append(f"random sink faults: prediction is the median of {len(runs)} simulated draws "
                         f"(seeds {seed0}..{seed0 + len(runs) - 1}); count tolerance widened by their spread")

    # ---- observed
    errs = audit.get("error_total_by_plugin") or {}
    obs: dict[str, Any] = {"events_total": audit.get("event_total"), "buffered": errs.get("buffered", 0.0),
                           "webhook": errs.get("webhook", 0.0)}
    webhook_src = "apiserver_audit_error_total{plugin=webhook}, window delta"
    if quiet is not None:
        # a batch is dropped only after all its retries: that can come after the window's last scrape
        obs["webhook"] = max(obs["webhook"], quiet["drops_by_plugin"].get("webhook", 0.0))
        webhook_src = "apiserver_audit_error_total{plugin=webhook}, whole run read when quiet"
    if sv is not None:
        m = (sv.stage_unix >= start) & (sv.stage_unix <= end)
        d = (sv.received_unix - sv.stage_unix)[m]
        obs.update(delivered=int(m.sum()), p50=_pct(d, 50), p99=_pct(d, 99))
        deliv_src = "stored events with stageTimestamp in the window; latency = received - stageTimestamp"
    else:
        obs.update(delivered=(sink_rec.get("delta") or {}).get("events_stored"), p50=None, p99=None)
        deliv_src = "sink events_stored delta (no store to read)"

    b_opts = flags.webhook.batch
    if tokens0 is not None and tokens0 < b_opts.throttle_burst - 1:
        notes.append(f"throttle bucket at the window start: about {tokens0:.1f} of {b_opts.throttle_burst} tokens "
                     "(estimated from the sink's batch arrivals before the window); the replay starts from that level")

    # ---- compare
    batch = flags.webhook.batch.max_batch_size
    ev_obs = float(obs["events_total"] or 0.0)
    tol = COUNT_REL * ev_obs + batch
    rows = []
    failures: list[str] = []
    for key, label in (("events_total", "events_total"), ("buffered", "buffered drops"),
                       ("webhook", "webhook drops"), ("delivered", "delivered")):
        o, p = obs.get(key), pred.get(key)
        t = tol + spread.get(key, 0.0)
        ok = o is not None and p is not None and abs(float(o) - float(p)) <= t
        rows.append({"metric": label, "observed": o, "predicted": p,
                     "diff": None if o is None or p is None else float(o) - float(p), "tolerance": t, "ok": ok})
        if not ok:
            failures.append(f"{label}: observed {_fmt(o)} vs predicted {_fmt(p)} (tolerance {t:.0f})")
    for key, label in (("p50", "delivery latency p50 (s)"), ("p99", "delivery latency p99 (s)")):
        o, p = obs.get(key), pred.get(key)
        if o is None or p is None:
            rows.append({"metric": label, "observed": o, "predicted": p, "diff": None, "tolerance": None,
                         "ok": None})
            continue
        lt = LAT_REL * max(o, p) + LAT_ABS
        ok = abs(o - p) <= lt
        rows.append({"metric": label, "observed": o, "predicted": p, "diff": o - p, "tolerance": lt, "ok": ok})
        if not ok:
            failures.append(f"{label}: observed {o:.3f} s vs predicted {p:.3f} s (tolerance {lt:.3f} s)")
    if sink_stats:
        # informational: the sink's most concurrent requests (its whole life) vs the simulated most batches in
        # flight. Comparable without retries only: a batch sleeping in its backoff is in flight for the
        # simulator (its goroutine lives) but not at the sink.
        obs["max_inflight_batches"] = sink_stats[1].get("max_inflight")
        rows.append({"metric": "max in flight (info)", "observed": obs["max_inflight_batches"],
                     "predicted": pred.get("max_inflight_batches"), "diff": None, "tolerance": None, "ok": None})
    drops_obs = float(obs["buffered"] or 0) + float(obs["webhook"] or 0)
    if drops_obs > max_drops:
        failures.append(f"observed drops {drops_obs:.0f} > --max-drops {max_drops:g} "
                        f"(buffered {obs['buffered']:.0f}, webhook {obs['webhook']:.0f})")
    if quiet is not None:
        if not quiet.get("quiet_reached", True):
            notes.append("the pipeline was not quiet before the final scrape; the residual may be in flight")
        if quiet["lost"] > 0:
            failures.append(f"lost events: apiserver counted {quiet['events_total']:.0f} events, the sink stored "
                            f"{quiet['delivered']:.0f} and {sum(quiet['drops_by_plugin'].values()):.0f} were counted "
                            f"as dropped: {quiet['lost']:.0f} unaccounted for")
    if (record.get("load") or {}).get("kept_up") is False:
        notes.append(f"the generator did not keep up: {record['load'].get('behind_reason')}")
    return {
        "ok": not failures, "exit_code": 3 if failures else 0, "failures": failures, "rows": rows,
        "tolerance": {"counts": f"{100 * COUNT_REL:g}% of observed events_total + one batch ({batch}) = {tol:.0f}",
                      "latency": f"{100 * LAT_REL:g}% of the larger + {1000 * LAT_ABS:g} ms"},
        "accounting": quiet,
        "inputs": {"events": method, "requests_by_kind": detail, "user": list(user[:1]) + [list(user[1])],
                   "event_sizes": {"source": size_src, "bytes": {k: round(v or 0) for k, v in sizes.items()}},
                   "receiver_latency": lat_src, "error_rate": err_rate,
                   "outages_run_relative": [[round(o.start, 3), round(o.end, 3), o.kind] for o in outages],
                   "flags": flags.to_flags(only_changed=True), "webhook_drops": webhook_src,
                   "delivered": deliv_src, "engine": res_d.get("engine", engine)},
        "predicted": pred, "observed": obs, "notes": notes, "bucket_tokens_at_start": tokens0,
    }


def _fmt(x: Any) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, float) and not x.is_integer():
        return f"{x:.3f}"
    return f"{x:.0f}" if isinstance(x, (int, float)) else str(x)


def render(report: dict[str, Any]) -> str:
    """The side-by-side table (plain text)."""
    out = [f"{'metric':<28}{'observed':>12}{'predicted':>12}{'diff':>10}{'tolerance':>11}  ok"]
    for r in report["rows"]:
        ok = "-" if r["ok"] is None else ("yes" if r["ok"] else "NO")
        tol = "" if r["tolerance"] is None else _fmt(float(r["tolerance"]))
        out.append(f"{r['metric']:<28}{_fmt(r['observed']):>12}{_fmt(r['predicted']):>12}"
                   f"{_fmt(r['diff']):>10}{tol:>11}  {ok}")
    a = report.get("accounting")
    if a:
        out.append(f"accounting (whole run, quiet): events_total {a['events_total']:.0f} = delivered "
                   f"{a['delivered']:.0f} + dropped {sum(a['drops_by_plugin'].values()):.0f} "
                   f"(residual {a['residual']:+.0f}, lost {a['lost']:.0f})")
    i = report["inputs"]
    out.append(f"events from: {i['events']}")
    out.append(f"receiver: {i['receiver_latency']}; error rate {i['error_rate']:g}; outages {i['outages_run_relative']}")
    for n in report["notes"]:
        out.append(f"note: {n}")
    out.append("verdict: " + ("ok" if report["ok"] else "FAIL: " + "; ".join(report["failures"])))
    return "\n".join(out) + "\n"


def verify_live(record: dict[str, Any], trace: Any, target: Any, sink_url: str, a0: dict, s0: dict, *,
                sink_ca: str | None = None, policy: str | None = None, faults: Any = None,
                max_drops: float = 0, quiet_timeout: float = 120.0) -> dict[str, Any]:
    """The CLI path: wait for the pipeline to go quiet, read the counters again (``a0``/``s0`` were
    read before the run's setup), fetch the sink's latencies and store, and :func:`verify_run`."""
    from audit_tune.loadgen.sink import fetch_stats
    from audit_tune.sim.config import parse_flags

    flags = parse_flags(list((record.get("flags") or {}).get("args") or []))
    retries = True if faults is not None and (faults.error_rate or faults.outages or faults.hang_rate) else None
    s_mid, reached = wait_quiet(lambda: fetch_stats(sink_url, ca=sink_ca), flags, quiet_timeout,
                                retries=retries, since=s0)
    a1 = scrape_totals(target)
    # every event counted in a1 (e.g. apiserver background traffic just before it) may still be in a
    # partial batch (max-wait) or on its way to a slow sink: be quiet once more before reading s1
    _, reached2 = wait_quiet(lambda: fetch_stats(sink_url, ca=sink_ca), flags, quiet_timeout,
                             retries=retries, since=s0)
    s1 = fetch_stats(sink_url, samples=True, ca=sink_ca)
    acc = accounting(a0, a1, s0, s1)
    acc["quiet_reached"] = reached and reached2
    store = s1.get("store")
    return verify_run(record, trace, flags=flags, policy=policy, store=store,
                      sink_samples=np.asarray(s1.get("latency_samples_s") or [], dtype=float), faults=faults,
                      sink_started_unix=s1.get("started_unix"), quiet=acc, max_drops=max_drops,
                      sink_stats=(s0, s1))
