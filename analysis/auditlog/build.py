"""From audit log files to an ``audit-tune-snapshot/v1`` document (``docs/audit-log.md``).

:func:`read_logs` scans every file (``scan``), merges them per instance, picks the busiest
stretches (``series.stretches``) and reads those again to keep their exact arrival times.
:func:`to_snapshot` turns that into the snapshot the recommender already reads, with the
quantities a log gives (``event_rate`` per step, ``event_rate_peak`` over 1 s, ``events_increase``,
``level_increase``, ``requests_by_verb``, the top-level ``request_mix``) and, optionally, those
only Prometheus has (drops by plugin, webhook latency and failures, audit filter latency, memory)
from a Prometheus snapshot of the same window. The top-level ``audit_log`` key records, per
instance, the files, skipped lines, completeness, bursts, sizes, the exact trace, and for every
quantity which source it came from.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from audit_tune.analysis.auditlog.completeness import Completeness, assess
from audit_tune.analysis.auditlog.mix import MixStats
from audit_tune.analysis.auditlog.reader import discover
from audit_tune.analysis.auditlog.scan import FileResult, scan_files
from audit_tune.analysis.auditlog.series import TRACE_MAX_EVENTS, Bins, bursts, choose_step, step_series, stretches
from audit_tune.analysis.auditlog.sizes import SizeStats
from audit_tune.analysis.auditlog.skips import Skips
from audit_tune.basics.errors import InputError, NotEnoughData
from audit_tune.basics.jsondata import JsonObject, JsonValue, as_float, as_list, as_object, as_str

FORMAT = "audit-tune-snapshot/v1"
LOG_FORMAT = "audit-tune-audit-log/v1"
MIX_FORMAT = "audit-tune-request-mix/v1"
TRACE_RESOLUTION = 0.001  # seconds: exact trace times are kept to the millisecond
MIN_POINTS = 3
FROM_LOG = ("event_rate", "event_rate_peak", "events_increase", "level_increase", "requests_by_verb",
            "request_mix", "event_size", "bursts")
FROM_PROM = ("errors_increase", "requests_rejected_increase", "request_rate", "webhook", "audit_filter_latency",
             "memory_bytes")


@dataclass
class InstanceLog:
    name: str
    fmt: str
    files: list[str] = field(default_factory=list)
    events: int = 0
    bins: Bins = field(default_factory=Bins)
    sizes: SizeStats = field(default_factory=SizeStats)
    mix: MixStats = field(default_factory=MixStats)
    skips: list[Skips] = field(default_factory=list)
    trace: list[tuple[float, float, np.ndarray]] = field(default_factory=list)

    @property
    def span(self) -> float:
        return self.bins.t1 - self.bins.t0 if self.bins.counts is not None else 0.0


@dataclass
class LogRead:
    instances: dict[str, InstanceLog]
    files: list[FileResult]
    seconds: float = 0.0
    lines: int = 0

    def skip_messages(self) -> list[str]:
        return [m for r in self.files if r.skips is not None and (m := r.skips.message())]


def read_logs(specs: list[str], jobs: int | None = None, progress: Callable[[int, int, int], None] | None = None,
              keep_trace: bool = True, flag: str = "--audit-log", trace_max_events: float | None = None) -> LogRead:
    """Read every file the specs name, on ``jobs`` processes (default: the cores available).
    InputError (exit 1) when no line of any file is usable.
    ``trace_max_events``: keep the whole log exactly up to this many events per instance (default
    ``series.TRACE_MAX_EVENTS``; inf for a replay of everything)."""
    t0 = time.monotonic()
    files = discover(specs, flag)
    cap = trace_max_events or TRACE_MAX_EVENTS
    results = scan_files(files, jobs, progress=progress, keep_upto=cap if keep_trace else 0)
    by: dict[str, InstanceLog] = {}
    order = sorted(range(len(files)), key=lambda i: (files[i].instance, results[i].first or 0.0))
    for i in order:
        r = results[i]
        il = by.setdefault(r.file.instance, InstanceLog(r.file.instance, r.fmt))
        if r.fmt != il.fmt:
            il.fmt = "mixed" if {r.fmt, il.fmt} != {"json", "store"} else "store"
        il.files.append(r.file.path)
        il.events += r.events
        il.bins.merge(r.bins)
        il.sizes.merge(r.sizes)
        il.mix.merge(r.mix)
        if r.skips is not None:
            il.skips.append(r.skips)
    lines = sum(r.skips.lines for r in results if r.skips is not None)
    read = LogRead({k: v for k, v in by.items()}, results, 0.0, lines)
    usable = {k: v for k, v in by.items() if v.events > 0}
    if not usable:
        why = "; ".join(read.skip_messages()) or "the files are empty"
        raise InputError(f"{flag}: no usable audit event in {len(files)} file(s): {why}")
    if keep_trace:
        for k, v in list(usable.items()):  # kept whole by the first pass: no second one
            mine = [r for r in results if r.file.instance == k]
            if v.events <= cap and all(r.collected is not None for r in mine):
                allt = np.sort(np.concatenate([r.collected for r in mine if r.collected is not None]))
                v.trace.append((v.bins.t0, v.bins.t1, allt))
        want = {k: stretches(v.bins, max_events=cap) for k, v in usable.items() if not v.trace}
        sel = [i for i, f in enumerate(files) if f.instance in want and results[i].first is not None
               and any(a <= (results[i].last or 0) and (results[i].first or 0) <= b for a, b in want[f.instance])]
        again = scan_files([files[i] for i in sel], jobs, collect={k: v for k, v in want.items()}) if sel else []
        for k, ranges in want.items():
            got = [r.collected for r in again if r.file.instance == k and r.collected is not None and len(r.collected)]
            allt = np.sort(np.concatenate(got)) if got else np.zeros(0)
            for a, b in ranges:
                usable[k].trace.append((a, b, allt[(allt >= a) & (allt < b)]))
    read.seconds = time.monotonic() - t0
    return read


def _trace_dict(a: float, b: float, t: np.ndarray, whole: bool) -> JsonObject:
    ms = np.round((t - a) / TRACE_RESOLUTION).astype(np.int64)
    return {"start": round(a, 3), "end": round(b, 3), "whole_log": whole, "resolution": TRACE_RESOLUTION,
            "events": int(len(ms)), "delta": np.diff(ms, prepend=0).tolist()}


def trace_from_dict(d: JsonObject) -> tuple[float, float, np.ndarray]:
    """(start, end, unix arrival times) of one stored stretch."""
    a, b = as_float(d["start"], "trace.start"), as_float(d["end"], "trace.end")
    ms = np.cumsum(np.asarray(as_list(d.get("delta") or [], "trace.delta"), dtype=np.int64))
    return a, b, a + ms * as_float(d.get("resolution", TRACE_RESOLUTION), "trace.resolution")


def _obj(v: JsonValue | None, where: str) -> JsonObject:
    """A JSON object, {} for an absent or null one."""
    return {} if v is None else as_object(v, where)


def to_snapshot(read: LogRead, step: float, log_mode: str = "blocking", prom: JsonObject | None = None,
                prom_url: str = "", tool_version: str = "") -> JsonObject:
    """The snapshot document. ``prom`` is a Prometheus snapshot (dict) of the same window, or None.
    NotEnoughData (exit 4) when no instance spans at least MIN_POINTS steps."""
    usable = {k: v for k, v in read.instances.items() if v.events > 0}
    t0 = min(v.bins.t0 for v in usable.values())
    t1 = max(v.bins.t1 for v in usable.values())
    step = choose_step(t1 - t0, step)
    psrc = _obj((prom or {}).get("source"), "prometheus snapshot source")
    pw = _obj(psrc.get("window"), "prometheus snapshot source.window")
    start = as_float(pw["start"], "source.window.start") - step if pw.get("start") is not None else float(np.floor(t0))
    end = as_float(pw["end"], "source.window.end") if pw.get("end") is not None else t1
    prom_insts = {k: _obj(v, f"prometheus snapshot instances.{k}")
                  for k, v in _obj((prom or {}).get("instances"), "prometheus snapshot instances").items()}
    pair = _pairing(list(usable), list(prom_insts))
    instances: dict[str, Any] = {}
    missing: list[JsonValue] = []
    per_log: dict[str, Any] = {}
    mix_insts: dict[str, Any] = {}
    short = []
    for name, il in sorted(usable.items()):
        ser = step_series(il.bins, step, start, end)
        if len(ser.t) < MIN_POINTS or il.span < MIN_POINTS * step / 2:
            short.append(f"{name}: the log spans {il.span:.1f}s, under {MIN_POINTS} steps of {step:g}s "
                         "(use a smaller --step or a longer log)")
            continue
        levels = il.mix.level_requests()
        pi = prom_insts.get(pair.get(name, ""))
        d: dict[str, Any] = {
            "cluster": (pi or {}).get("cluster", ""),
            "event_rate": {"t": ser.t, "v": ser.v},
            "event_rate_peak": {"window": "1s", "t": ser.peak_t, "v": ser.peak_v},
            "events_increase": float(il.events),
            "errors_increase": {"buffered": 0.0, "webhook": 0.0, "log": 0.0, "truncate": 0.0},
            "level_increase": {lv: float(levels.get(lv, 0.0)) for lv in ("None", "Metadata", "Request", "RequestResponse")},
            "requests_rejected_increase": 0.0,
            "request_rate": None,
            "requests_by_verb": il.mix.requests_by_verb(),
            "webhook": None, "audit_filter_latency": None, "memory_bytes": None,
        }
        sources = {q: "audit log" for q in FROM_LOG}
        if pi is not None:
            for q in FROM_PROM:
                d[q] = pi.get(q, d.get(q))
                sources[q] = f"prometheus (instance {pair[name]})"
        else:
            for q in FROM_PROM:
                sources[q] = "absent: an audit log does not record it (give --prometheus-url)"
            missing.append({"instance": name, "item": "errors_increase",
                            "why": "an audit log cannot show events the apiserver dropped (apiserver_audit_error_total)",
                            "fix": "add --prometheus-url to read the drops, webhook latency and failures"})
        errs = (pi or {}).get("errors_increase")
        comp = assess(il.fmt, log_mode, float(il.events),
                      {k: as_float(v, f"errors_increase.{k}") for k, v in _obj(errs, "errors_increase").items()}
                      if pi is not None and errs is not None else None)
        if not comp.complete:
            missing.append({"instance": name, "item": "arrival trace", "why": comp.note,
                            "fix": "" if pi is not None else "--prometheus-url sizes the gap"})
        if sum(levels.values()) == 0 or il.fmt == "legacy":
            missing.append({"instance": name, "item": "level_increase",
                            "why": "legacy-format lines carry no audit level" if il.fmt == "legacy" else "no level in the events",
                            "fix": "--audit-log-format=json"})
        instances[name] = d
        per_log[name] = {
            "files": il.files, "format": il.fmt, "events": il.events, "span_seconds": round(il.span, 3),
            "first": round(il.bins.t0, 3), "last": round(il.bins.t1, 3),
            "prometheus_instance": pair.get(name) if pi is not None else None,
            "prometheus_events_increase": (pi or {}).get("events_increase") if pi is not None else None,
            "completeness": comp.to_dict(),
            "bursts": bursts(il.bins, step, start),
            "sizes": il.sizes.to_dict(),
            "events_by_level_stage": [{"level": lv or "unknown", "stage": st, "events": n}
                                      for (lv, st), n in sorted(il.mix.levels.items())],
            "events_folded_into_other": il.mix.folded,
            "skipped": [s.to_dict() for s in il.skips if s.reasons],
            "trace": [_trace_dict(a, b, t, len(il.trace) == 1 and len(t) == il.events) for a, b, t in il.trace],
            "sources": sources,
        }
        mix_insts[name] = {"seconds": round(max(il.span, 1e-3), 3), "classes": il.mix.entries(),
                           "observed": {"events": float(il.events), "levels": {k: v for k, v in levels.items() if k}}}
    for name in sorted(set(read.instances) - set(usable)):
        missing.append({"instance": name, "item": "event_rate", "why": "no usable line in its files", "fix": ""})
    if not instances:
        raise NotEnoughData("audit log too short to decide: " + "; ".join(short))
    for s in short:
        missing.append({"instance": s.split(":")[0], "item": "event_rate", "why": s.split(": ", 1)[1], "fix": ""})
    for p in sorted(set(prom_insts) - set(pair.values())):
        missing.append({"instance": p, "item": "audit log", "why": "in Prometheus but no audit log given for it",
                        "fix": "--audit-log INSTANCE=PATH with this instance name"})
    return {
        "format": FORMAT, "tool_version": tool_version, "recorded_at": time.time(),
        "source": {"prometheus_url": prom_url, "window": {"start": start + step, "end": end, "step": float(step)},
                   "cluster_label": psrc.get("cluster_label"), "selector": psrc.get("selector", "")},
        "instances": instances,
        "missing": [*missing, *as_list((prom or {}).get("missing") or [], "missing")],
        "request_mix": {"format": MIX_FORMAT, "window": {"start": start, "end": end, "seconds": round(end - start, 3)},
                        "query": "requests counted in the audit log (one per request: its last stage)",
                        "instances": mix_insts},
        "audit_log": {"format": LOG_FORMAT, "log_mode": log_mode, "read_seconds": round(read.seconds, 3),
                      "lines": read.lines, "instances": per_log},
    }


def _pairing(logs: list[str], proms: list[str]) -> dict[str, str]:
    """Log instance -> Prometheus instance: same name; else one of each is paired."""
    out = {n: n for n in logs if n in proms}
    rest_l = [n for n in logs if n not in out]
    rest_p = [p for p in proms if p not in out.values()]
    if len(rest_l) == 1 and len(rest_p) == 1:
        out[rest_l[0]] = rest_p[0]
    return out


def completeness_of(snap: JsonObject, instance: str) -> Completeness | None:
    """The completeness recorded for ``instance`` in an audit log snapshot, or None."""
    log = _obj(snap.get("audit_log"), "audit_log")
    d = _obj(_obj(_obj(log.get("instances"), "audit_log.instances").get(instance), instance).get("completeness"),
             "completeness")
    if not d:
        return None
    missing = d.get("missing_events")
    return Completeness(as_str(d["source"], "source"), as_str(d["mode"], "mode"), bool(d["complete"]),
                        tuple(as_str(x, "lost_plugins") for x in as_list(d["lost_plugins"], "lost_plugins")),
                        None if missing is None else as_float(missing, "missing_events"), as_str(d["note"], "note"))
