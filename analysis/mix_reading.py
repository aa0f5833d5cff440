"""Reading the request mix: from Prometheus into a snapshot's ``request_mix`` key
(:func:`add_request_mix`, format ``audit-tune-request-mix/v1``, ``docs/policy.md``), or from two
scrapes of an apiserver's ``/metrics`` (:func:`mix_from_metrics`).
"""
from __future__ import annotations

import math

from audit_tune.analysis.prom_client import PromClient
from audit_tune.analysis.request_mix import MIX_FORMAT, InstanceMix, MixEntry
from audit_tune.basics.errors import InputError
from audit_tune.basics.jsondata import JsonObject, JsonValue, as_float, as_list, as_object
from audit_tune.loadgen.metrics_text import Metrics
from audit_tune.sim.policy.model import LEVELS

_LABELS = ("verb", "group", "resource", "subresource", "scope", "component")


def add_request_mix(snapshot: JsonObject, client: PromClient, *, end: float | None = None,
                    history: float | None = None, selector: str | None = None) -> JsonObject:
    """Query ``apiserver_request_total`` (and ``apiserver_longrunning_requests``) over the snapshot's
    window and store it under ``snapshot["request_mix"]`` (format ``audit-tune-request-mix/v1``,
    ``docs/policy.md``). ``client`` is an :class:`analysis.prom.PromClient`. Returns the snapshot.

    Counts are ``value(end) - value(start)`` per series, a series absent at the start counting from 0
    (kube-apiserver creates a series at its first increment, so ``increase()`` would miss what a
    series counted before its first scrape); ``increase()`` is used for series that reset (restarts).
    The start is moved to the first scrape of the instance when the window begins earlier. The audit
    counters are read the same way into ``observed``, so the check compares like with like.
    """
    src = as_object(snapshot.get("source") or {}, "snapshot.source")
    w = as_object(src.get("window") or {}, "snapshot.source.window")
    if ((end is None or history is None) and w.get("end") is None) or (history is None and w.get("start") is None):
        raise InputError("the snapshot has no source.window (start and end): read the request mix with an "
                         "explicit window end and history")
    w_end = end if end is not None else as_float(w["end"], "snapshot.source.window.end")
    end = float(w_end)
    history = float(history if history is not None
                    else w_end - as_float(w["start"], "snapshot.source.window.start"))
    start = end - history
    sel = selector if selector is not None else str(src.get("selector") or "")
    cl_label = src.get("cluster_label")
    cl = str(cl_label) if cl_label else None
    S = "{" + sel + "}" if sel else ""
    G = "instance" + (f", {cl}" if cl else "")
    by = f"{G}, {', '.join(_LABELS)}"
    snap_instances = as_object(snapshot.get("instances") or {}, "snapshot.instances")
    names = set(snap_instances.keys())

    def key(lbl: dict[str, str]) -> str:
        inst = lbl.get("instance", "")
        if cl and f"{lbl.get(cl, '')}/{inst}" in names:
            return f"{lbl.get(cl, '')}/{inst}"
        return inst

    # Effective start per instance: the first point of its event_rate series (Prometheus may have
    # started scraping after the window began).
    eff: dict[str, float] = {}
    for n, inst in snap_instances.items():
        rate = as_object(inst or {}, f"snapshot.instances.{n}").get("event_rate")
        ts = as_list(as_object(rate or {}, f"snapshot.instances.{n}.event_rate").get("t") or [],
                     f"snapshot.instances.{n}.event_rate.t")
        step = as_float(w.get("step") or 0.0, "snapshot.source.window.step")
        eff[n] = max(start, as_float(ts[0], f"snapshot.instances.{n}.event_rate.t[0]") - step) if ts else start

    def values(promql: str, at: float, what: str, labels: tuple[str, ...]) -> dict[str, dict[tuple[str, ...], float]]:
        out: dict[str, dict[tuple[str, ...], float]] = {}
        for lbl, v in client.query(promql, at, what):
            k = tuple(lbl.get(x, "") for x in labels)
            d = out.setdefault(key(lbl), {})
            d[k] = d.get(k, 0.0) + v
        return out

    def deltas(metric: str, labels: tuple[str, ...], what: str) -> tuple[dict[str, dict[tuple[str, ...], float]], float]:
        byl = f"{G}" + (f", {', '.join(labels)}" if labels else "")
        res: dict[str, dict[tuple[str, ...], float]] = {}
        starts_at = sorted(set(eff.values()) or {start})
        at_end = values(f"sum by ({byl}) ({metric}{S})", end, what, labels)
        resets = values(f"sum by ({byl}) (resets({metric}{S}[{int(math.ceil(history))}s]))", end, what, labels)
        incr = values(f"sum by ({byl}) (increase({metric}{S}[{int(math.ceil(history))}s]))", end, what, labels)
        at_start: dict[float, dict[str, dict[tuple[str, ...], float]]] = {
            t0: values(f"sum by ({byl}) ({metric}{S})", t0, what, labels) for t0 in starts_at}
        for inst, series in at_end.items():
            t0 = eff.get(inst, start)
            s0 = at_start.get(t0, {}).get(inst, {})
            for k, v in series.items():
                if resets.get(inst, {}).get(k, 0.0) > 0:
                    res.setdefault(inst, {})[k] = incr.get(inst, {}).get(k, 0.0)
                else:
                    res.setdefault(inst, {})[k] = max(0.0, v - s0.get(k, 0.0))
        return res, len(starts_at)

    totals, _ = deltas("apiserver_request_total", _LABELS, "the request mix query (apiserver_request_total)")
    ev, _ = deltas("apiserver_audit_event_total", (), "the audit event query")
    lv, _ = deltas("apiserver_audit_level_total", ("level",), "the audit level query")
    # This Prometheus' own scrapes of /metrics are audited too but are not in apiserver_request_total.
    scrapes: dict[str, float] = {}
    for lbl, v in client.query(f"sum by ({G}) (count_over_time(up{S}[{int(math.ceil(history))}s]))", end,
                               "the scrape count query (up)"):
        scrapes[key(lbl)] = scrapes.get(key(lbl), 0.0) + v
    q_lr = f"sum by ({by}) (apiserver_longrunning_requests{S})"
    lr_end = values(q_lr, end, "the long-running requests query (apiserver_longrunning_requests)", _LABELS)
    lr_start_by_t = {t0: values(q_lr, t0, "the long-running requests query", _LABELS) for t0 in sorted(set(eff.values()) or {start})}
    missing: list[JsonValue] = []
    instances: JsonObject = {}
    for inst in sorted(set(totals) | names):
        t = totals.get(inst)
        if not t:
            missing.append({"instance": inst, "item": "apiserver_request_total",
                            "why": f"no apiserver_request_total for instance {inst} in the window: request mix unknown",
                            "fix": "scrape kube-apiserver's /metrics in full (metric_relabel_configs may drop it)"})
            continue
        t0 = eff.get(inst, start)
        lr_start = lr_start_by_t.get(t0, {})
        have_lr = inst in lr_end and inst in lr_start
        if not have_lr:
            missing.append({"instance": inst, "item": "apiserver_longrunning_requests",
                            "why": f"no apiserver_longrunning_requests at both ends of the window for instance {inst}: "
                                   "long-running requests that started are taken as those that ended",
                            "fix": "keep apiserver_longrunning_requests in the scrape"})
        classes: list[JsonValue] = []
        for ck, v in sorted(t.items()):
            d = dict(zip(_LABELS, ck))
            starts = None
            if have_lr and d["verb"].upper() in ("WATCH", "CONNECT", "WATCHLIST"):
                starts = max(0.0, v + lr_end[inst].get(ck, 0.0) - lr_start[inst].get(ck, 0.0))
            if v > 0 or starts:
                classes.append({**d, "count": round(v, 6), "starts": None if starts is None else round(starts, 6)})
        if scrapes.get(inst):
            span = (end - t0) / history if history > 0 else 1.0
            classes.append({"verb": "GET", "group": "", "resource": "", "subresource": "/metrics", "scope": "",
                            "component": "", "count": round(scrapes[inst] * min(span, 1.0), 6), "starts": None,
                            "origin": "this Prometheus' scrapes (count_over_time(up)); not in apiserver_request_total"})
        entry: JsonObject = {"seconds": end - t0, "classes": classes}
        if inst in ev:
            entry["observed"] = {"events": ev[inst].get((), 0.0),
                                 "levels": {lvl: lv.get(inst, {}).get((lvl,), 0.0) for lvl in LEVELS}}
        instances[inst] = entry
    snapshot["request_mix"] = {"format": MIX_FORMAT,
                               "window": {"start": start, "end": end, "seconds": history},
                               "query": f"sum by ({by}) (apiserver_request_total{S}) at the end minus at the start",
                               "instances": instances, "missing": missing}
    return snapshot


def mix_from_metrics(before: Metrics, after: Metrics, seconds: float) -> InstanceMix:
    """The request mix between two scrapes of one apiserver's ``/metrics`` (:mod:`loadgen.metrics_text`)."""
    def collect(m: Metrics, name: str) -> dict[tuple[str, ...], float]:
        out: dict[tuple[str, ...], float] = {}
        for s in m.select(name):
            k = tuple(s.label(x) or "" for x in _LABELS)
            out[k] = out.get(k, 0.0) + float(s.value)
        return out

    t0, t1 = collect(before, "apiserver_request_total"), collect(after, "apiserver_request_total")
    g0, g1 = collect(before, "apiserver_longrunning_requests"), collect(after, "apiserver_longrunning_requests")
    entries = []
    for k in sorted(set(t1) | set(g1) | set(g0)):
        n = t1.get(k, 0.0) - t0.get(k, 0.0)
        d = dict(zip(_LABELS, k))
        starts = None
        if d["verb"].upper() in ("WATCH", "CONNECT", "WATCHLIST"):
            starts = n + g1.get(k, 0.0) - g0.get(k, 0.0)
        if n > 0 or (starts or 0) > 0:
            entries.append(MixEntry(verb=d["verb"], group=d["group"], resource=d["resource"],
                                    subresource=d["subresource"], scope=d["scope"], component=d["component"],
                                    count=n, starts=starts))
    return InstanceMix(entries, seconds)
