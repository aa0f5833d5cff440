"""Simulation results, named after the real metrics where one exists.

=============================  ==========================================================
field                          meaning
=============================  ==========================================================
events_total                   apiserver_audit_event_total: events emitted (stages not omitted)
level_total                    apiserver_audit_level_total by level (one per request, None included)
errors.{buffered,webhook,      apiserver_audit_error_total{plugin}: events lost, by where
log,truncate}
requests_rejected              apiserver_audit_requests_rejected_total (blocking-strict only)
requests_timed_out             non-long-running requests still running at ``--request-timeout``
                               (apiserver_request_terminations_total{code="504"}); of them:
requests_timed_out_504         answered 504 by the timeout filter (nothing written yet)
requests_closed_at_timeout     connection closed / stream reset without a complete answer (the
                               response was written, its ResponseComplete audit call still blocking)
requests_rejected_after_timeout  blocking-strict rejections counted after the client already had its 504
rejected_after_timeout_seconds   when (after arrival) those rejections were counted: p50/p90/p99/max/mean
events_not_emitted             events of requests that outlived their apiserver process (sim/shutdown.py)
blocking_calls_at_exit         events whose blocking audit call the process's exit cut off (sim/shutdown.py)
events_refused                 events of requests that arrived while no apiserver accepted them
restart_loss                   events a kill at a restart lost, by cause (sim/shutdown.py)
delivered                      events the receiver acknowledged (webhook) or written (log)
in_flight_at_end               events still buffered or in a batch when the run stopped (0 when drained)
first_drop_seconds             when the first event was lost (any plugin), or null
batches, batch_sizes           dispatched batches and their sizes in dispatch order
delivery_latency_seconds       event creation (ProcessEvents) to successful delivery: p50/p90/p99/max/mean
max_buffer_occupancy           most events ever waiting in the buffered channel
occupancy                      per-interval maximum of the buffer occupancy
max_inflight_batches           most webhook batches being sent (or retried) at once
peak_memory_bytes              most bytes of events held by the backend: buffer + batch being
                               collected + batches in flight (event sizes, not Go heap overhead)
throttle_wait_seconds_total    time the collector spent blocked in the throttle's Accept
attempts, attempts_by_code     webhook POST attempts (rest_client_requests_total by code)
request_added_latency_seconds  latency the audit backends added to requests (blocking modes)
=============================  ==========================================================

Top-level fields describe the *primary* backend (the webhook when enabled, else the log);
``backends`` has both; ``instances`` has the per-apiserver breakdown.
"""
from __future__ import annotations

from array import array
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, NotRequired, TypedDict

import numpy as np

from audit_tune.sim.scenario import Scenario
from audit_tune.sim.stats import Quantiles, SeriesMax
from audit_tune.sim.workload import LEVELS

PLUGINS = ("buffered", "webhook", "log", "truncate")
BATCH_SIZES_LIMIT = 100_000  # keep the full sequence up to this many batches


class BackendStats:
    """Everything one backend of one instance records while a run goes on."""

    @classmethod
    def of(cls, sc: Scenario, name: str) -> BackendStats:
        """Backend ``name`` of scenario ``sc``, keeping the statistics the scenario records."""
        return cls(name, sc.flags.backend(name).mode, sc.interval, sc.record_latency, sc.record_occupancy)

    def __init__(self, name: str, mode: str, interval: float, latency: bool = True, occupancy: bool = True) -> None:
        """``latency``/``occupancy`` False: the delivery latencies or the occupancy series are not kept
        (``Scenario.record_latency``/``record_occupancy``); every count still is."""
        self.name, self.mode = name, mode
        self.errors: Counter[str] = Counter({p: 0 for p in PLUGINS})
        self.delivered = 0
        self.accepted = 0
        self.batch_sizes = array("q")
        self.batches = 0
        self.batch_size_counts: Counter[int] = Counter()
        self.delivery = Quantiles(keep=latency)
        self.occupancy = SeriesMax(interval, keep=occupancy)
        self.max_occupancy = 0
        self.max_inflight = 0
        self.peak_memory = 0
        self.throttle_wait = 0.0
        self.attempts = 0
        self.attempts_by_code: Counter[str] = Counter()
        self.in_flight_at_end = 0
        self.first_drop: float | None = None

    def drop(self, plugin: str, n: int, t: float) -> None:
        self.errors[plugin] += n
        if n and (self.first_drop is None or t < self.first_drop):
            self.first_drop = t

    def batch(self, n: int) -> None:
        self.batches += 1
        self.batch_size_counts[n] += 1
        if len(self.batch_sizes) < BATCH_SIZES_LIMIT:
            self.batch_sizes.append(n)

    def to_dict(self, with_series: bool = True) -> dict[str, Any]:
        d: dict[str, Any] = {
            "mode": self.mode,
            "errors": dict(self.errors),
            "delivered": self.delivered,
            "in_flight_at_end": self.in_flight_at_end,
            "first_drop_seconds": self.first_drop,
            "batches": self.batches,
            "batch_size": _batch_summary(self.batch_size_counts),
            "delivery_latency_seconds": self.delivery.summary(),
            "max_buffer_occupancy": self.max_occupancy,
            "max_inflight_batches": self.max_inflight,
            "peak_memory_bytes": self.peak_memory,
            "throttle_wait_seconds_total": self.throttle_wait,
            "attempts": self.attempts,
            "attempts_by_code": dict(sorted(self.attempts_by_code.items())),
        }
        if with_series:
            d["batch_sizes"] = list(self.batch_sizes) if self.batches <= BATCH_SIZES_LIMIT else None
        return d


class BatchSummary(TypedDict):
    """Batches by size: how many, mean, smallest and largest (None without batches)."""

    count: int
    mean: float | None
    min: int | None
    max: int | None


class OccupancySeries(TypedDict):
    """Buffer occupancy per interval: the largest over the instances' backends."""

    interval_seconds: float
    max: list[float]


class BackendSummary(TypedDict):
    """One backend's figures merged over the apiserver instances (see :meth:`Result.to_dict`)."""

    mode: str | None
    errors: dict[str, int]
    delivered: int
    in_flight_at_end: int
    first_drop_seconds: float | None
    batches: int
    batch_size: BatchSummary
    delivery_latency_seconds: dict[str, float | None]
    max_buffer_occupancy: int
    max_inflight_batches: int
    peak_memory_bytes: int
    throttle_wait_seconds_total: float
    attempts: int
    attempts_by_code: dict[str, int]
    occupancy: NotRequired[OccupancySeries]


def _batch_summary(counts: Counter[int]) -> BatchSummary:
    n = sum(counts.values())
    if not n:
        return {"count": 0, "mean": None, "min": None, "max": None}
    return {"count": n, "mean": sum(k * v for k, v in counts.items()) / n, "min": min(counts), "max": max(counts)}


class InstanceStats:
    def __init__(self, name: str, backends: dict[str, BackendStats]) -> None:
        self.name = name
        self.backends = backends
        self.events_total = 0
        self.requests_total = 0
        self.level_total: Counter[str] = Counter({lv: 0 for lv in LEVELS})
        self.requests_rejected = 0
        self.timed_out_504 = 0
        self.closed_at_timeout = 0
        self.rejected_after_timeout = 0
        self.rejected_after_timeout_at = Quantiles()
        self.added_latency = Quantiles()
        self.end_time = 0.0


@dataclass(frozen=True)
class RunTotals:
    """:meth:`Result.totals`: the same numbers as the ``to_dict`` fields of these names."""

    events_total: int
    errors: dict[str, int]  # every backend's, as ``to_dict()["errors"]``
    peak_memory_bytes: int  # the primary backend's, as the other fields
    max_inflight_batches: int
    max_buffer_occupancy: int
    batches: int
    attempts: int
    simulated_seconds: float


def _merged_quantiles(qs: list[Quantiles]) -> Quantiles:
    """One backend's latencies over the instances: its own when there is one instance; the exact
    samples together while every instance kept them; else the histograms added up."""
    if len(qs) == 1:
        return qs[0]
    q = Quantiles()
    if all(x.exact for x in qs):
        for x in qs:
            for part in x._parts:
                q.add(part)
        return q
    q = Quantiles(exact_cap=0)
    for x in qs:
        if x.exact:
            for part in x._parts:
                q.add(part)
        else:
            q.add(np.empty(0))
            if q._hist is None:
                q._hist = np.zeros_like(x._hist)
            q._hist += x._hist
            q.count += x.count
            q.total += x.total
            q.max = max(q.max, x.max)
    return q


@dataclass
class Result:
    engine: str
    seed: int
    config: dict[str, Any]
    instances: list[InstanceStats]
    primary: str
    simulated_seconds: float
    wall_seconds: float
    interval: float
    extra: dict[str, Any] = field(default_factory=dict)

    # ---- aggregation ----
    def _merged(self, name: str) -> BackendSummary:
        cache: dict[str, BackendSummary] = self.__dict__.setdefault("_merged_cache", {})
        if name not in cache:
            cache[name] = self._merge(name)
        return cache[name]

    def _backend_view(self, name: str, series: bool) -> BackendSummary:
        """A copy of the merged summary for one output (the cached one is never changed), without the
        occupancy series unless ``series``."""
        view = BackendSummary(**self._merged(name))
        if not series:
            view.pop("occupancy", None)
        return view

    def _merge(self, name: str) -> BackendSummary:
        bs = [i.backends[name] for i in self.instances if name in i.backends]
        errors: Counter[str] = Counter({p: 0 for p in PLUGINS})
        codes: Counter[str] = Counter()
        sizes: Counter[int] = Counter()
        for b in bs:
            errors.update(b.errors)
            codes.update(b.attempts_by_code)
            sizes.update(b.batch_size_counts)
        q = self.delivery(name)
        occ = [b.occupancy.series(self.simulated_seconds) for b in bs]
        return {
            "mode": bs[0].mode if bs else None,
            "errors": dict(errors),
            "delivered": sum(b.delivered for b in bs),
            "in_flight_at_end": sum(b.in_flight_at_end for b in bs),
            "first_drop_seconds": min((b.first_drop for b in bs if b.first_drop is not None), default=None),
            "batches": sum(b.batches for b in bs),
            "batch_size": _batch_summary(sizes),
            "delivery_latency_seconds": q.summary(),
            "max_buffer_occupancy": max((b.max_occupancy for b in bs), default=0),
            "max_inflight_batches": max((b.max_inflight for b in bs), default=0),
            "peak_memory_bytes": sum(b.peak_memory for b in bs),
            "throttle_wait_seconds_total": sum(b.throttle_wait for b in bs),
            "attempts": sum(b.attempts for b in bs),
            "attempts_by_code": dict(sorted(codes.items())),
            "occupancy": {"interval_seconds": self.interval,
                          "max": [max(v) for v in zip(*occ)] if occ else []},
        }

    def delivery(self, name: str | None = None) -> Quantiles:
        """The delivery latencies of backend ``name`` (default: the primary) over every instance."""
        name = name or self.primary
        cache: dict[str, Quantiles] = self.__dict__.setdefault("_delivery_cache", {})
        if name not in cache:
            cache[name] = _merged_quantiles([i.backends[name].delivery for i in self.instances if name in i.backends])
        return cache[name]

    def totals(self) -> RunTotals:
        """The counts of :meth:`to_dict` a caller that reads no percentile or series needs, computed
        without them (``to_dict`` computes every percentile of every latency)."""
        bs = [i.backends[self.primary] for i in self.instances if self.primary in i.backends]
        errors: Counter[str] = Counter({p: 0 for p in PLUGINS})
        for inst in self.instances:
            for b in inst.backends.values():
                errors.update(b.errors)
        return RunTotals(sum(i.events_total for i in self.instances), dict(errors),
                         sum(b.peak_memory for b in bs), max((b.max_inflight for b in bs), default=0),
                         max((b.max_occupancy for b in bs), default=0), sum(b.batches for b in bs),
                         sum(b.attempts for b in bs), self.simulated_seconds)

    def to_dict(self, series: bool = True) -> dict[str, Any]:
        prim = self._merged(self.primary)
        totals = self.totals()
        level: Counter[str] = Counter({lv: 0 for lv in LEVELS})
        for inst in self.instances:
            level.update(inst.level_total)
        added = Quantiles()
        for inst in self.instances:
            for part in inst.added_latency._parts:
                added.add(part)
        late = Quantiles()
        for inst in self.instances:
            for part in inst.rejected_after_timeout_at._parts:
                late.add(part)
        d: dict[str, Any] = {
            "engine": self.engine,
            "seed": self.seed,
            "events_total": totals.events_total,
            "requests_total": sum(i.requests_total for i in self.instances),
            "level_total": dict(level),
            "errors": totals.errors,
            "requests_rejected": sum(i.requests_rejected for i in self.instances),
            "requests_timed_out": sum(i.timed_out_504 + i.closed_at_timeout for i in self.instances),
            "requests_timed_out_504": sum(i.timed_out_504 for i in self.instances),
            "requests_closed_at_timeout": sum(i.closed_at_timeout for i in self.instances),
            "requests_rejected_after_timeout": sum(i.rejected_after_timeout for i in self.instances),
            "rejected_after_timeout_seconds": late.summary(),
            "primary_backend": self.primary,
            "delivered": prim["delivered"],
            "in_flight_at_end": prim["in_flight_at_end"],
            "first_drop_seconds": prim["first_drop_seconds"],
            "batches": prim["batches"],
            "batch_size": prim["batch_size"],
            "delivery_latency_seconds": prim["delivery_latency_seconds"],
            "max_buffer_occupancy": prim["max_buffer_occupancy"],
            "max_inflight_batches": prim["max_inflight_batches"],
            "peak_memory_bytes": prim["peak_memory_bytes"],
            "throttle_wait_seconds_total": prim["throttle_wait_seconds_total"],
            "attempts": prim["attempts"],
            "attempts_by_code": prim["attempts_by_code"],
            "request_added_latency_seconds": added.summary(),
            "backends": {name: self._backend_view(name, series) for name in self.instances[0].backends}
            if self.instances else {},
            "instances": [
                {"name": i.name, "events_total": i.events_total, "requests_total": i.requests_total,
                 "requests_rejected": i.requests_rejected,
                 **{k: v for k, v in i.backends[self.primary].to_dict(with_series=series).items()}}
                for i in self.instances
            ],
            "simulated_seconds": self.simulated_seconds,
            "wall_seconds": self.wall_seconds,
            "config": self.config,
        }
        if series:
            d["occupancy"] = prim["occupancy"]
            bsz = [i.backends[self.primary].batch_sizes for i in self.instances]
            d["batch_sizes"] = [list(x) for x in bsz] if len(bsz) > 1 else list(bsz[0])
        d.update(self.extra)
        return d
