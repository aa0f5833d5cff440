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

Modules: :mod:`loadgen.verify_inputs` (the run's evidence), :mod:`loadgen.quiet` (quiet pipeline,
accounting), :mod:`loadgen.verify_result` (the typed result and its table); this module replays
and decides.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from audit_tune.loadgen.faults import FaultConfig
from audit_tune.loadgen.kubetarget import Target
from audit_tune.loadgen.quiet import (
    Accounting,
    AuditTotals,
    accounting,
    quiet_window,
    scrape_totals,
    sink_failed_attempts,
    wait_quiet,
)
from audit_tune.loadgen.sink import fetch_stats
from audit_tune.loadgen.sink_stats import SinkStats
from audit_tune.loadgen.verify_inputs import (
    DEFAULT_USER,
    StoreView,
    TraceRows,
    bucket_at_start,
    event_times,
    read_store,
    realized_error_rate,
    receiver_faults,
    receiver_latency,
)
from audit_tune.loadgen.verify_result import ReplayInputs, VerifyReport, VerifyRow, fmt_value, render_verify
from audit_tune.sim.api import run as sim_run
from audit_tune.sim.config import AuditFlags, parse_flags
from audit_tune.sim.receiver import Receiver
from audit_tune.sim.scenario import Scenario
from audit_tune.sim.workload import Arrivals, RequestClass, Workload

__all__ = ["COUNT_REL", "LAT_ABS", "LAT_REL", "RANDOM_SEEDS", "ReplayOptions", "SinkEvidence", "StoreView",
           "TraceRows", "VerifyReport", "accounting", "event_times", "quiet_window", "read_store", "render",
           "scrape_totals", "sink_failed_attempts", "verify_live", "verify_run", "wait_quiet"]

COUNT_REL = 0.05  # count tolerance: 5% of observed events_total ...
# ... plus one batch (max-batch-size events); see docs/verification.md.
LAT_REL = 0.5  # latency tolerance: 50% of the larger value ...
LAT_ABS = 0.25  # ... plus 250 ms
RANDOM_SEEDS = 15  # simulated draws when the sink has random faults (an error rate)

#: The side-by-side table of a :class:`VerifyReport` (its registered ``table`` format).
render = render_verify


@dataclass(frozen=True)
class SinkEvidence:
    """What the sink measured for the run: its store file, handling latencies (s), configured faults,
    start time (unix s) and stats before and after the run."""

    store: str | Path | None = None
    samples: np.ndarray | None = None
    faults: FaultConfig | None = None
    started_unix: float | None = None
    stats: tuple[SinkStats, SinkStats] | None = None


@dataclass(frozen=True)
class ReplayOptions:
    """How the replay decides: drops allowed, simulator engine, simulated draws (None: by the faults)."""

    max_drops: float = 0
    engine: str = "fast"
    seeds: int | None = None


NO_SINK = SinkEvidence()
DEFAULT_REPLAY = ReplayOptions()


def _pct(x: np.ndarray, q: float) -> float | None:
    return float(np.percentile(x, q)) if len(x) else None


def verify_run(record: dict[str, Any], trace: TraceRows | dict[str, Any] | str | Path, *,
               flags: AuditFlags | None = None, policy: str | None = None, sink: SinkEvidence = NO_SINK,
               quiet: Accounting | None = None, options: ReplayOptions = DEFAULT_REPLAY) -> VerifyReport:
    """Replay the run through the simulator and compare; returns the :class:`VerifyReport`.
    ``quiet`` is :func:`loadgen.quiet.accounting` over the whole run, if measured."""
    store, sink_samples, faults = sink.store, sink.samples, sink.faults
    sink_started_unix, sink_stats = sink.started_unix, sink.stats
    max_drops, engine, seeds = options.max_drops, options.engine, options.seeds

    if isinstance(trace, TraceRows):
        tr = trace
    else:
        tr = TraceRows.from_csv(trace) if isinstance(trace, (str, Path)) else TraceRows.of(trace)
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
    per_kind: list[tuple[str, int]] = []
    if kinds:
        uniq, counts = np.unique(np.array(kinds, dtype=str), return_counts=True)
        per_kind = list(zip(uniq.tolist(), counts.tolist()))
    for k, c in per_kind:
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
        draws = seeds if seeds is not None else (RANDOM_SEEDS if err_rate > 0 else 1)
        runs = []
        for j in range(max(1, draws)):
            sc = Scenario(flags=flags, receiver=receiver, seed=seed0 + j, workload=wl,
                          throttle_initial_tokens=tokens0)
            d = sim_run(sc, engine=engine).to_dict(series=False)
            dl = d.get("delivery_latency_seconds") or {}
            runs.append({"events_total": d["events_total"], "buffered": d["errors"]["buffered"],
                         "webhook": d["errors"]["webhook"], "delivered": d["delivered"],
                         "p50": dl.get("p50"), "p99": dl.get("p99"), "in_flight_at_end": d.get("in_flight_at_end"),
                         "max_inflight_batches": d.get("max_inflight_batches"),
                         "peak_memory_bytes": d.get("peak_memory_bytes")})
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
    rows: list[VerifyRow] = []
    failures: list[str] = []
    for key, label in (("events_total", "events_total"), ("buffered", "buffered drops"),
                       ("webhook", "webhook drops"), ("delivered", "delivered")):
        o, p = obs.get(key), pred.get(key)
        t = tol + spread.get(key, 0.0)
        ok = o is not None and p is not None and abs(float(o) - float(p)) <= t
        rows.append(VerifyRow(label, o, p, None if o is None or p is None else float(o) - float(p), t, ok))
        if not ok:
            failures.append(f"{label}: observed {fmt_value(o)} vs predicted {fmt_value(p)} (tolerance {t:.0f})")
    for key, label in (("p50", "delivery latency p50 (s)"), ("p99", "delivery latency p99 (s)")):
        o, p = obs.get(key), pred.get(key)
        if o is None or p is None:
            rows.append(VerifyRow(label, o, p, None, None, None))
            continue
        lt = LAT_REL * max(o, p) + LAT_ABS
        ok = abs(o - p) <= lt
        rows.append(VerifyRow(label, o, p, o - p, lt, ok))
        if not ok:
            failures.append(f"{label}: observed {o:.3f} s vs predicted {p:.3f} s (tolerance {lt:.3f} s)")
    if sink_stats:
        # informational: the sink's most concurrent requests (its whole life) vs the simulated most batches in
        # flight. Comparable without retries only: a batch sleeping in its backoff is in flight for the
        # simulator (its goroutine lives) but not at the sink.
        obs["max_inflight_batches"] = sink_stats[1].get("max_inflight")
        rows.append(VerifyRow("max in flight (info)", obs["max_inflight_batches"], pred.get("max_inflight_batches"),
                              None, None, None))
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
    inputs = ReplayInputs(method, detail, list(user[:1]) + [list(user[1])], size_src,
                          {k: round(v or 0) for k, v in sizes.items()}, lat_src, err_rate,
                          [[round(o.start, 3), round(o.end, 3), o.kind] for o in outages],
                          flags.to_flags(only_changed=True), webhook_src, deliv_src, res_d.get("engine", engine))
    return VerifyReport(failures, rows,
                        f"{100 * COUNT_REL:g}% of observed events_total + one batch ({batch}) = {tol:.0f}",
                        f"{100 * LAT_REL:g}% of the larger + {1000 * LAT_ABS:g} ms",
                        quiet, inputs, pred, obs, notes, tokens0)


def verify_live(record: dict[str, Any], trace: TraceRows | dict[str, Any], target: Target, sink_url: str,
                baseline: tuple[AuditTotals, SinkStats], *,
                sink_ca: str | None = None, policy: str | None = None, faults: FaultConfig | None = None,
                max_drops: float = 0, quiet_timeout: float = 120.0) -> VerifyReport:
    """The CLI path: wait for the pipeline to go quiet, read the counters again (``a0``/``s0`` were
    read before the run's setup, ``baseline``), fetch the sink's latencies and store, and :func:`verify_run`."""
    a0, s0 = baseline
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
    evidence = SinkEvidence(store, np.asarray(s1.get("latency_samples_s") or [], dtype=float), faults,
                            s1.get("started_unix"), (s0, s1))
    return verify_run(record, trace, flags=flags, policy=policy, sink=evidence, quiet=acc,
                      options=ReplayOptions(max_drops=max_drops))
