"""Snapshot assembly: run the named queries (:mod:`audit_tune.analysis.promql`) for the whole
window and turn their answers into one :class:`InstanceData` per apiserver, with a
:class:`Missing` entry (what is missing, why, how to fix it) for every quantity that is not there.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from audit_tune.analysis.prom_client import PromClient
from audit_tune.analysis.prom_settings import LOOPBACK_RE
from audit_tune.analysis.promql import Queries
from audit_tune.analysis.snapshot import (
    ERROR_PLUGINS,
    LEVELS,
    Errors,
    Histogram,
    InstanceData,
    Missing,
    PeakSeries,
    Series,
    Webhook,
)
from audit_tune.sim.units import format_duration

Key = tuple[str, str]   # (cluster label value, instance)
Values = dict[Key, dict[str, float]]


def key_of(labels: dict[str, str], cl: str | None) -> Key:
    return (labels.get(cl, "") if cl else "", labels.get("instance", ""))


def human_duration(seconds: float) -> str:
    """7d, 36h, 90m, 45s: the largest unit that divides evenly (else Go's format)."""
    for unit, n in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= n and abs(seconds / n - round(seconds / n)) < 1e-9:
            return f"{round(seconds / n)}{unit}"
    return format_duration(seconds)


@dataclass
class Window:
    start: float
    end: float
    history: float
    step: float
    scrape: float
    rate_range: float


@dataclass
class Collected:
    """Every answer of one snapshot, by instance key."""

    event_rate: dict[Key, Series] = field(default_factory=dict)
    peak: dict[Key, Series] = field(default_factory=dict)
    events: Values = field(default_factory=dict)
    resets: Values = field(default_factory=dict)
    errors: Values = field(default_factory=dict)
    levels: Values = field(default_factory=dict)
    rejected: Values = field(default_factory=dict)
    request_rate: dict[Key, Series] = field(default_factory=dict)
    verbs: Values = field(default_factory=dict)
    hosts: Values = field(default_factory=dict)
    filter_b: Values = field(default_factory=dict)
    filter_sc: dict[str, Values] = field(default_factory=dict)
    memory: dict[Key, Series] = field(default_factory=dict)
    webhook: dict[str, Any] = field(default_factory=dict)
    host_of: dict[Key, str] = field(default_factory=dict)


def collect(client: PromClient, q: Queries, w: Window, log: Callable[[str], None]) -> Collected:
    cl = q.cluster_label

    def rng(promql: str, what: str) -> dict[Key, Series]:
        return {key_of(lbl, cl): ser for lbl, ser in client.query_range(promql, w.start, w.end, w.step, what)}

    def inst(promql: str, what: str, by: str = "") -> Values:
        out: Values = {}
        for lbl, v in client.query_over(promql, w.end, w.history, what, log):
            out.setdefault(key_of(lbl, cl), {})[lbl.get(by, "") if by else ""] = v
        return out

    c = Collected()
    c.event_rate = rng(q.event_rate(w.rate_range), "the audit event rate query")
    if w.scrape:
        c.peak = rng(q.event_peak(w.scrape, w.step), "the audit peak rate query")
    c.events = inst(q.events_increase(), "the audit event increase")
    c.resets = inst(q.event_resets(), "the counter reset query")
    c.errors = inst(q.errors_increase(), "the audit error increase", by="plugin")
    c.levels = inst(q.levels_increase(), "the audit level increase", by="level")
    c.rejected = inst(q.rejected_increase(), "the rejected requests increase")
    c.request_rate = rng(q.request_rate(w.rate_range), "the request rate query")
    c.verbs = inst(q.requests_by_verb(), "the requests by verb increase", by="verb")
    c.hosts = inst(q.post_hosts(), "the webhook host detection", by="host")
    c.filter_b = inst(q.filter_latency_buckets(), "the audit filter latency query", by="le")
    c.filter_sc = ({n: inst(q.filter_latency(n), f"the audit filter latency {n}") for n in ("sum", "count")}
                   if c.filter_b else {"sum": {}, "count": {}})
    c.memory = rng(q.memory(), "the memory query")
    return c


def pick_webhook_hosts(c: Collected, audit_keys: list[Key], webhook_host: str | None, missing: list[Missing]) -> None:
    """The audit webhook's host:port per instance: ``--webhook-host``, else the busiest non-loopback
    POST target of the apiserver's rest client (admission webhooks POST too; that is said)."""
    for k in audit_keys:
        hs = c.hosts.get(k, {})
        if webhook_host:
            if webhook_host in hs:
                c.host_of[k] = webhook_host
            continue
        cands = {h: v for h, v in hs.items() if h and not LOOPBACK_RE.match(h)}
        if not cands:
            continue
        best = max(sorted(cands), key=lambda h: cands[h])
        c.host_of[k] = best
        if len(cands) > 1:
            others = ", ".join(f"{h} ({cands[h]:.0f} POSTs)" for h in sorted(cands) if h != best)
            missing.append(Missing(k[1], "webhook host",
                                   f"instance {k[1]} POSTs to several non-loopback hosts; took the busiest, "
                                   f"{best} ({cands[best]:.0f} POSTs), as the audit webhook; others: {others} "
                                   "(admission webhooks?)",
                                   "pass --webhook-host HOST:PORT (the server in the audit webhook kubeconfig)"))


def collect_webhook(client: PromClient, q: Queries, w: Window, c: Collected, log: Callable[[str], None]) -> None:
    if not c.host_of:
        return
    hosts = sorted(set(c.host_of.values()))
    cl = q.cluster_label

    def by_host(promql: str, what: str, sub: str = "") -> dict[Key, dict[str, Any]]:
        out: dict[Key, dict[str, Any]] = {}
        for lbl, v in client.query_over(promql, w.end, w.history, what, log):
            per_host = out.setdefault(key_of(lbl, cl), {})
            if sub:
                per_host.setdefault(lbl.get("host", ""), {})[lbl.get(sub, "")] = v
            else:
                per_host[lbl.get("host", "")] = v
        return out

    wh = c.webhook
    wh["dur_b"] = by_host(q.webhook_latency_buckets(hosts), "the webhook le query", "le")
    for n in ("sum", "count"):
        wh[f"dur_{n}"] = by_host(q.webhook_latency(hosts, n), f"the webhook latency {n}")
        wh[f"size_{n}"] = by_host(q.webhook_size(hosts, n), f"the webhook size {n}")
    wh["size_b"] = by_host(q.webhook_size_buckets(hosts), "the webhook le query", "le")
    wh["codes"] = by_host(q.webhook_codes(hosts), "the webhook code query", "code")
    wh["retries"] = by_host(q.webhook_retries(hosts), "the webhook retries query", "code")


def hist(buckets: dict[str, float], s: float, c: float) -> Histogram:
    items: list[tuple[float, float]] = []
    for le_text, v in buckets.items():
        try:
            items.append((math.inf if le_text in ("+Inf", "Inf") else float(le_text), v))
        except ValueError:
            continue
    items.sort()
    merged: list[tuple[float, float]] = []   # duplicate bounds ("1" and "1.0" from different exporters)
    for le, v in items:
        if merged and merged[-1][0] == le:
            merged[-1] = (le, merged[-1][1] + v)
        else:
            merged.append((le, v))
    cum, run = [], 0.0   # increase() extrapolation can make cumulative counts slightly non-monotonic
    for _, v in merged:
        run = max(run, v)
        cum.append(run)
    return Histogram([le for le, _ in merged], cum, s, c)


def instance(k: Key, c: Collected, w: Window, webhook_host: str | None, missing: list[Missing]) -> InstanceData | None:
    """The snapshot entry of one apiserver, or None when it has no audit event rate at all."""
    cluster, inst = k
    hist_txt = human_duration(w.history)
    ser = c.event_rate.get(k, Series())
    if len(ser) == 0:
        missing.append(Missing(inst, "apiserver_audit_event_total",
                               f"apiserver_audit_event_total for instance {inst} has too few samples for a rate "
                               f"over {human_duration(w.rate_range)} in the last {hist_txt}",
                               "lower --step or check the scrape job"))
        return None
    d = InstanceData(cluster=cluster, event_rate=ser)
    covered = ser.t[-1] - ser.t[0] + w.step
    if covered < 0.9 * w.history:
        first = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ser.t[0]))
        missing.append(Missing(inst, "apiserver_audit_event_total",
                               f"apiserver_audit_event_total for instance {inst} covers only "
                               f"{human_duration(covered)} of the {hist_txt} window (from {first}): "
                               "the recommendation rests on that",
                               "record a longer history once the instance has been scraped longer"))
    if len(c.peak.get(k, Series())):
        d.event_rate_peak = PeakSeries(c.peak[k].t, c.peak[k].v, human_duration(w.scrape))
    else:
        why = ("no irate() answer over the scrape interval" if w.scrape
               else "the scrape interval could not be measured (fewer than 2 samples)")
        missing.append(Missing(inst, "event_rate_peak", f"no sub-step peak rate for instance {inst}: {why}",
                               "scrape kube-apiserver more often (e.g. scrape_interval: 10s) or use a larger --step"))
    d.events_increase = c.events.get(k, {}).get("", 0.0)
    e = c.errors.get(k, {})
    d.errors_increase = Errors(**{p: e.get(p, 0.0) for p in ERROR_PLUGINS})
    lv = c.levels.get(k)
    if lv is None:
        missing.append(Missing(inst, "apiserver_audit_level_total",
                               f"no apiserver_audit_level_total for instance {inst}: level split unknown",
                               "check that metric_relabel_configs do not drop apiserver_audit_* series"))
    d.level_increase = {x: (lv or {}).get(x, 0.0) for x in LEVELS}
    d.requests_rejected_increase = c.rejected.get(k, {}).get("", 0.0)
    n_res = c.resets.get(k, {}).get("", 0.0)
    if n_res > 0:
        missing.append(Missing(inst, "apiserver_audit_event_total resets",
                               f"apiserver_audit_event_total of instance {inst} reset {n_res:g} time(s) in the "
                               "window (apiserver restarts); increases account for them, but events buffered at "
                               "a restart are not counted", ""))
    if len(c.request_rate.get(k, Series())):
        d.request_rate = c.request_rate[k]
        d.requests_by_verb = dict(sorted(c.verbs.get(k, {}).items()))
    else:
        missing.append(Missing(inst, "apiserver_request_total",
                               f"no apiserver_request_total for instance {inst} in the last {hist_txt}: "
                               "request rate and long-running share unknown",
                               "scrape kube-apiserver's /metrics in full (metric_relabel_configs may drop it)"))
    _webhook(k, d, c, webhook_host, missing)
    fb = c.filter_b.get(k)
    if fb:
        d.audit_filter_latency = hist(fb, c.filter_sc["sum"].get(k, {}).get("", 0.0),
                                      c.filter_sc["count"].get(k, {}).get("", 0.0))
    else:
        missing.append(Missing(inst, "apiserver_request_filter_duration_seconds",
                               f"no apiserver_request_filter_duration_seconds{{filter=\"audit\"}} for instance "
                               f"{inst}: audit filter latency unknown",
                               "Kubernetes >= 1.20 exposes it; check metric_relabel_configs"))
    if len(c.memory.get(k, Series())):
        d.memory_bytes = c.memory[k]
    else:
        missing.append(Missing(inst, "process_resident_memory_bytes",
                               f"no process_resident_memory_bytes for instance {inst}: memory headroom unknown",
                               "scrape kube-apiserver's /metrics in full"))
    return d


def _webhook(k: Key, d: InstanceData, c: Collected, webhook_host: str | None, missing: list[Missing]) -> None:
    inst = k[1]
    h = c.host_of.get(k)
    if h is None:
        seen = sorted(c.hosts.get(k, {}))
        if webhook_host:
            why = (f"no rest_client_requests_total{{method=\"POST\",host=\"{webhook_host}\"}} for instance "
                   f"{inst}" + (f" (POST hosts seen: {', '.join(seen)})" if seen else ""))
            fix = "check --webhook-host (host:port as in the webhook kubeconfig)"
        else:
            why = (f"no audit webhook traffic from instance {inst}: no rest_client_requests_total{{method=\"POST\"}} "
                   f"to a non-loopback host" + (f" (only {', '.join(seen)})" if seen else "")
                   + ": is --audit-webhook-config-file set?")
            fix = "set --audit-webhook-config-file, or pass --webhook-host HOST:PORT if the webhook is on loopback"
        missing.append(Missing(inst, "rest_client_request_duration_seconds", why, fix))
        return
    wh = c.webhook

    def val(name: str) -> float:
        return float(wh[name].get(k, {}).get(h, 0.0))

    db = wh["dur_b"].get(k, {}).get(h, {})
    if not db:
        missing.append(Missing(inst, "rest_client_request_duration_seconds",
                               f"no rest_client_request_duration_seconds{{verb=\"POST\",host=\"{h}\"}} for "
                               f"instance {inst}: webhook latency unknown", "scrape kube-apiserver's /metrics in full"))
        return
    dur = hist(db, val("dur_sum"), val("dur_count"))
    sb = wh["size_b"].get(k, {}).get(h, {})
    size = hist(sb, val("size_sum"), val("size_count")) if sb else None
    if size is None:
        missing.append(Missing(inst, "rest_client_request_size_bytes",
                               f"no rest_client_request_size_bytes{{verb=\"POST\",host=\"{h}\"}} for "
                               f"instance {inst}: batch body sizes unknown (Kubernetes < 1.27?)",
                               "the recommender falls back to --event-size"))
    retries = wh.get("retries", {}).get(k, {}).get(h)
    d.webhook = Webhook(h, dur, dict(sorted(wh["codes"].get(k, {}).get(h, {}).items())), size,
                        dict(sorted(retries.items())) if retries is not None else None)
