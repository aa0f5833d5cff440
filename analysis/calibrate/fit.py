"""Calibration: the :class:`~analysis.calibrate.model.InstanceModel` of one instance of an
``audit-tune-snapshot/v1`` document, each number fitted from the snapshot's series and histograms
(the model is described in the package docstring and ``docs/recommend.md``).
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypedDict, cast

import numpy as np

from audit_tune.analysis.auditlog.build import trace_from_dict
from audit_tune.analysis.calibrate.model import LATENCY_POINTS, BurstFit, InstanceModel
from audit_tune.analysis.retries import webhook_attempts
from audit_tune.analysis.snapshot import FORMAT, Snapshot
from audit_tune.analysis.snapshot_doc import InstanceDoc, SeriesDoc, SourceDoc
from audit_tune.basics.errors import InputError, NotEnoughData
from audit_tune.basics.jsondata import JsonObject, JsonValue, as_float, as_list, as_object
from audit_tune.sim.latency import Latency, ndtri
from audit_tune.sim.receiver import ATTEMPT_TIMEOUT, ATTEMPTS
from audit_tune.sim.units import format_duration, parse_duration

DEFAULT_EVENT_SIZE = 850  # bytes, spec section 7 (RC, Metadata)
DEFAULT_EPR = 2.0  # RequestReceived + ResponseComplete
DEFAULT_LATENCY = Latency("fixed", 0.05)
ENVELOPE_BYTES = 60  # {"kind":"EventList","apiVersion":"audit.k8s.io/v1","metadata":{},"items":[]}
FIT_DRAWS = 4000


# Snapshot loading: files are read and validated by analysis.snapshot.Snapshot; calibration reads the
# plain document
def snapshot_dict(snap: Snapshot | dict[str, Any]) -> dict[str, Any]:
    """A plain ``audit-tune-snapshot/v1`` dict from a dict or a :class:`Snapshot`."""
    d = snap if isinstance(snap, dict) else snap.to_dict()
    if d.get("format") != FORMAT:
        raise InputError(f"snapshot: format {d.get('format')!r} is not {FORMAT!r}")
    if not isinstance(d.get("instances"), dict):
        raise InputError("snapshot: field 'instances' must be a mapping of instance name to its data")
    return d


def load_snapshot(path: str | Path) -> dict[str, Any]:
    """Load a snapshot file (:meth:`analysis.snapshot.Snapshot.load` validates it) as a plain dict."""
    return snapshot_dict(Snapshot.load(path))


def _series(obj: SeriesDoc | None, what: str) -> tuple[np.ndarray, np.ndarray] | None:
    if not obj or not isinstance(obj, dict):
        return None
    t, v = obj.get("t") or [], obj.get("v") or []
    if len(t) != len(v):
        raise InputError(f"{what}: t has {len(t)} points but v has {len(v)}")
    if not t:
        return None
    tt = np.asarray([float(x) for x in t], dtype=float)
    vv = np.asarray([np.nan if x is None else float(x) for x in v], dtype=float)
    return tt, vv


def _fill_gaps(v: np.ndarray) -> tuple[np.ndarray, int]:
    bad = ~np.isfinite(v) | (v < 0)
    n = int(bad.sum())
    if n and n < len(v):
        idx = np.arange(len(v))
        v = v.copy()
        v[bad] = np.interp(idx[bad], idx[~bad], v[~bad])
    return v, n


def _step_of(source: SourceDoc | None, t: np.ndarray) -> float:
    w = source.get("window") if source else None
    step = w.get("step") if w else None
    if step not in (None, ""):
        return parse_duration(step, "snapshot source.window.step")
    if len(t) > 1:
        return float(np.median(np.diff(t)))
    return 60.0


def events_per_request(inst: InstanceDoc) -> tuple[float, str]:
    """Events per audited request, and where it came from."""
    ev = float(inst.get("events_increase") or 0.0)
    lv = inst.get("level_increase") or {}
    audited = sum(float(v or 0) for k, v in lv.items() if k != "None")
    if ev > 0 and audited > 0:
        epr = ev / audited
        if 0.5 <= epr <= 3.5:
            return min(max(epr, 1.0), 3.0), f"events_increase / audited requests (level_increase without None) = {ev:.0f}/{audited:.0f}"
    verbs = inst.get("requests_by_verb") or {}
    total = sum(float(v or 0) for v in verbs.values())
    if total > 0:
        lr = sum(float(v or 0) for k, v in verbs.items() if str(k).upper() in ("WATCH", "CONNECT"))
        epr = 2.0 + lr / total
        return epr, f"requests_by_verb: 2 events per request + 1 per watch/connect ({lr:.0f}/{total:.0f})"
    return DEFAULT_EPR, "default 2.0 (RequestReceived + ResponseComplete); no level or verb data"


def latency_from_histogram(le: Sequence[float | str], cum: Sequence[float | None], points: int = LATENCY_POINTS) -> Latency | None:
    """Empirical quantiles of a cumulative histogram, interpolated linearly inside buckets
    (as PromQL's ``histogram_quantile``); the +Inf bucket is clamped to the last finite bound."""
    bounds = np.asarray([math.inf if str(x) in ("+Inf", "inf", "Inf") else float(x) for x in le], dtype=float)
    counts = np.asarray([float(x or 0) for x in cum], dtype=float)
    if len(bounds) != len(counts) or not len(bounds):
        return None
    order = np.argsort(bounds)
    bounds, counts = bounds[order], np.maximum.accumulate(counts[order])
    total = counts[-1]
    if total <= 0:
        return None
    finite = bounds[np.isfinite(bounds)]
    top = float(finite[-1]) if len(finite) else 1.0
    qs = (np.arange(points) + 0.5) / points
    vals = []
    for q in qs:
        rank = q * total
        i = int(np.searchsorted(counts, rank, side="left"))
        i = min(i, len(counts) - 1)
        hi = bounds[i] if np.isfinite(bounds[i]) else top
        lo = bounds[i - 1] if i > 0 else 0.0
        lo = lo if np.isfinite(lo) else top
        c_lo = counts[i - 1] if i > 0 else 0.0
        span = counts[i] - c_lo
        frac = (rank - c_lo) / span if span > 0 else 1.0
        vals.append(float(lo + (hi - lo) * frac))
    return Latency("empirical", values=tuple(round(v, 6) for v in vals))


def failure_rate(by_code: Mapping[str, float | None], latency: Latency | None) -> tuple[float, int]:
    """Per-attempt failure probability from ``requests_by_code``, minus timeouts the latency
    distribution already produces (values at or above the 30 s client timeout)."""
    total = sum(float(v or 0) for v in by_code.values())
    if total <= 0:
        return 0.0, 0
    bad = sum(float(v or 0) for k, v in by_code.items() if not str(k).startswith("2"))
    p = bad / total
    if latency is not None and latency.kind == "empirical":
        p -= float(np.mean(np.asarray(latency.values) >= ATTEMPT_TIMEOUT))
    return float(min(max(p, 0.0), 1.0)), int(total)


def attempts_per_batch(p: float) -> float:
    return sum(p ** k for k in range(ATTEMPTS))


def event_size(inst: InstanceDoc, p_fail: float) -> tuple[int, str]:
    wh = inst.get("webhook")
    ssum, scount = (float(wh.get("size_sum") or 0), float(wh.get("size_count") or 0)) if wh else (0.0, 0.0)
    ev = float(inst.get("events_increase") or 0)
    err = inst.get("errors_increase") or {}
    sent = ev - float(err.get("buffered") or 0) - float(err.get("truncate") or 0)
    if ssum > 0 and scount > 0 and sent > 0:
        body = ssum / scount
        batches = scount / attempts_per_batch(p_fail)
        per_post = max(sent / batches, 1.0)
        size = int(round(max(body - ENVELOPE_BYTES, 1.0) / per_post))
        if 50 <= size <= 10 * 1024 * 1024:
            return size, (f"webhook POST body {body:.0f} B mean / {per_post:.1f} events per POST "
                          f"(size_sum/size_count, {scount:.0f} POSTs)")
    return DEFAULT_EVENT_SIZE, "default 850 B (spec section 7: RC Metadata event); no webhook size histogram"


def _model_ratios(sigma: float, n: int, lam: float, w: float, g: np.random.Generator) -> np.ndarray:
    """Samples of max_k(window rate)/step rate under the model, with Poisson counting noise."""
    z = g.standard_normal((FIT_DRAWS, n))
    x = np.exp(sigma * z - sigma * sigma / 2)
    x /= x.mean(axis=1, keepdims=True)
    mu = lam * w * x
    counts = g.poisson(mu) if lam * w < 1e7 else mu
    return counts.max(axis=1) / (lam * w)


def fit_burst(rates: np.ndarray, peaks: np.ndarray | None, step: float, window: float) -> BurstFit:
    n = int(round(step / window)) if window > 0 else 1
    if n < 2:
        return BurstFit(0.0, step, 1, "none",
                        note=f"step {format_duration(step)} <= burst window: the replayed series carries the bursts")
    g = np.random.default_rng(20240611)
    active = rates > 0
    if peaks is not None and active.sum() >= 3:
        ratio = peaks[active] / rates[active]
        ratio = ratio[np.isfinite(ratio)]
        ratio = np.maximum(ratio, 1.0)
        o50, o90 = float(np.median(ratio)), float(np.quantile(ratio, 0.9))
        lam = float(np.median(rates[active]))
        grid = np.linspace(0.0, 2.5, 51)
        m50, m90 = [], []
        for s in grid:
            r = _model_ratios(float(s), n, lam, window, g)
            m50.append(float(np.median(r)))
            m90.append(float(np.quantile(r, 0.9)))
        m50a, m90a = np.maximum.accumulate(m50), np.maximum.accumulate(m90)
        s50 = float(np.interp(o50, m50a, grid)) if o50 > m50a[0] else 0.0
        s90 = float(np.interp(o90, m90a, grid)) if o90 > m90a[0] else 0.0
        sigma = max(s50, s90)
        note = "fitted to the median peak/mean ratio"
        if s90 > s50:
            note = "fitted to the 90th-percentile peak/mean ratio (tail heavier than the median fit)"
        if o50 >= m50a[-1] or o90 >= m90a[-1]:
            note += "; capped at sigma=2.5"
        r = _model_ratios(sigma, n, lam, window, g)
        return BurstFit(sigma, window, n, "peak-ratio", o50, o90, float(np.median(r)), float(np.quantile(r, 0.9)), note)
    # no peak data: spread of log step rates around a rolling median (assume scale-free bursts)
    lr = np.log(np.maximum(rates, 1e-9))
    if active.sum() >= 5:
        k = 5
        pad = np.pad(lr, (k // 2, k // 2), mode="edge")
        med = np.median(np.lib.stride_tricks.sliding_window_view(pad, k), axis=1)
        resid = (lr - med)[active]
        sigma = float(min(np.std(resid) * math.sqrt(k / (k - 1)), 2.5))
    else:
        sigma = 0.5
    lam = float(np.median(rates[active])) if active.any() else 1.0
    r = _model_ratios(sigma, n, lam, window, g)
    return BurstFit(sigma, window, n, "step-variance", None, None, float(np.median(r)), float(np.quantile(r, 0.9)),
                    "no event_rate_peak: sigma from step-to-step spread, assumed to hold inside a step (less certain)")


def calibrate(snapshot: Snapshot | dict[str, Any], instance: str) -> InstanceModel:
    """Build the :class:`InstanceModel` of ``instance``. Raises :class:`NotEnoughData` with reasons."""
    snap = snapshot_dict(snapshot)
    inst: InstanceDoc | None = snap["instances"].get(instance)
    if inst is None:
        raise InputError(f"snapshot: no instance {instance!r}; have {', '.join(sorted(snap['instances'])) or 'none'}")
    reasons = data_problems(snap, instance)
    if reasons:
        raise NotEnoughData(f"instance {instance}: " + "; ".join(reasons))
    src: SourceDoc | None = snap.get("source")
    t, v = _series(inst.get("event_rate"), f"instances.{instance}.event_rate")  # type: ignore[misc]
    v, gaps = _fill_gaps(v)
    step = _step_of(src, t)
    warnings: list[str] = []
    sources: dict[str, str] = {}
    if gaps:
        warnings.append(f"{gaps} of {len(v)} event_rate points missing; filled by interpolation")
    peaks = None
    pk = inst.get("event_rate_peak")
    window = parse_duration((pk.get("window") if pk else None) or "10s", "event_rate_peak.window")
    ps = _series(pk, f"instances.{instance}.event_rate_peak") if pk else None
    if ps is not None:
        pt, pv = ps
        pv, _ = _fill_gaps(pv)
        if len(pt) != len(t) or not np.allclose(pt, t):
            pv = np.interp(t, pt, pv)
        peaks = np.maximum(pv, v)
    burst = fit_burst(v, peaks, step, window)
    sources["burst"] = f"lognormal multipliers per {format_duration(burst.window)} window, sigma={burst.sigma:.3f} ({burst.method})"
    epr, sources["events_per_request"] = events_per_request(inst)
    wh = inst.get("webhook")
    lat = None
    db = wh.get("duration_buckets") if wh else None
    if db and db.get("le"):
        lat = latency_from_histogram(db.get("le") or [], db.get("cum") or [])
    if lat is not None:
        sources["webhook_latency"] = f"empirical quantiles of rest_client_request_duration_seconds ({LATENCY_POINTS} points)"
    else:
        sources["webhook_latency"] = "default 50ms fixed: no webhook duration histogram"
        warnings.append("no webhook latency histogram (rest_client_request_duration_seconds for the webhook host): assumed 50ms")
    p_fail, attempts = failure_rate(webhook_attempts(cast(JsonValue, wh)), lat)
    sources["webhook_failure_rate"] = (f"non-2xx + <error> / {attempts} attempts (rest_client_requests_total)"
                                       if attempts else "assumed 0: no rest_client_requests_total for the webhook host")
    size, sources["event_size"] = event_size(inst, p_fail)
    if size == DEFAULT_EVENT_SIZE and not (wh.get("size_count") if wh else None):
        warnings.append("no webhook request size histogram: event size assumed 850 B")
    for m in missing_items(snap, instance):
        warnings.append(m)
    t0 = float(t[0])
    extra = _from_audit_log(snap.get("audit_log"), instance, t0 - step, sources, warnings)
    size = extra.get("event_size", size)
    return InstanceModel(
        name=instance, step=step, times=tuple((t - t0).tolist()), rates=tuple(float(x) for x in v),
        peak_rates=tuple(float(x) for x in peaks) if peaks is not None else None, epr=epr, event_size=size,
        latency=lat or DEFAULT_LATENCY, failure_rate=p_fail, burst=burst,
        events_increase=float(inst.get("events_increase") or 0.0),
        errors_increase={k: float((inst.get("errors_increase") or {}).get(k) or 0.0)
                         for k in ("buffered", "webhook", "log", "truncate")},
        sources=sources, warnings=tuple(warnings), trace=extra.get("trace", ()), bursts=extra.get("bursts", ()))


class AuditLogAdds(TypedDict, total=False):
    """What an audit log adds to an :class:`InstanceModel` (its fields of the same names)."""

    bursts: tuple[JsonObject, ...]
    event_size: int
    trace: tuple[tuple[float, float, np.ndarray], ...]


def _from_audit_log(log: JsonObject | None, instance: str, origin: float, sources: dict[str, str],
                    warnings: list[str]) -> AuditLogAdds:
    """What an audit log (``analysis.auditlog``, the snapshot's ``audit_log`` key) adds to the model:
    the measured event size, the exact arrival trace of its busiest stretches (``origin`` = unix
    start of the first step) and the bursts it found; notes in ``sources`` and ``warnings``."""
    found = as_object(log.get("instances") or {}, "audit_log.instances").get(instance) if log else None
    if not found:
        return {}
    where = f"audit_log.instances.{instance}"
    al = as_object(found, where)
    out: AuditLogAdds = {"bursts": tuple(as_object(b, f"{where}.bursts[{i}]")
                                         for i, b in enumerate(as_list(al.get("bursts") or [], f"{where}.bursts")))}
    sz = as_object(al.get("sizes") or {}, f"{where}.sizes")
    if sz.get("mean_bytes"):
        out["event_size"] = int(round(as_float(sz["mean_bytes"], f"{where}.sizes.mean_bytes")))
        warnings[:] = [w for w in warnings if not w.startswith("no webhook request size histogram")]
        sources["event_size"] = f"audit log: mean bytes per event line ({sz.get('events', 0):,} events)"
    tr = []
    for i, t in enumerate(as_list(al.get("trace") or [], f"{where}.trace")):
        d = as_object(t, f"{where}.trace[{i}]")
        a, b, times = trace_from_dict(d)
        if d.get("whole_log"):
            a, b = -math.inf, math.inf
        tr.append((a - origin, b - origin, times - origin))
    if tr:
        out["trace"] = tuple(tr)
        n = sum(len(x[2]) for x in tr)
        sources["arrivals"] = (f"x1: the audit log's exact arrival times ({n:,} events, 1 ms, "
                               f"{'the whole log' if any(math.isinf(x[0]) for x in tr) else f'{len(tr)} busiest stretch(es)'})"
                               " replayed as they happened; x headroom: the 1 s peaks and fitted bursts scaled")
    comp = as_object(al.get("completeness") or {}, f"{where}.completeness")
    if comp and not comp.get("complete", True):
        warnings.append(f"audit log trace: {comp.get('note')}")
    return out


def missing_items(snap: dict[str, Any], instance: str | None = None) -> list[str]:
    """The snapshot's explained gaps (``missing``) for ``instance`` (and ``*``), one line each."""
    out = []
    for m in snap.get("missing") or []:
        if instance is None or m.get("instance") in (instance, "*", "", None):
            who = "" if instance is not None else f"{m.get('instance')}: "
            out.append(f"{who}{m.get('item')}: {m.get('why')}" + (f" (fix: {m['fix']})" if m.get("fix") else ""))
    return out


def data_problems(snap: dict[str, Any], instance: str) -> list[str]:
    """Per-item reasons this instance cannot be calibrated (empty when it can)."""
    inst: InstanceDoc = snap["instances"][instance]
    try:
        s = _series(inst.get("event_rate"), f"instances.{instance}.event_rate")
    except InputError as e:
        return [str(e)]
    if s is None:
        return ["no apiserver_audit_event_total samples in the window: is --audit-policy-file set on this apiserver?"]
    v = s[1]
    finite = np.isfinite(v)
    if finite.sum() < 3:
        return [f"only {int(finite.sum())} event_rate points: widen the window or use a smaller step"]
    if finite.mean() < 0.5:
        return [f"{int((~finite).sum())} of {len(v)} event_rate points missing: Prometheus has gaps for this instance"]
    if not np.nanmax(v) > 0:
        return ["apiserver_audit_event_total did not increase in the window: no audit events (policy level None everywhere?)"]
    return []


def lognormal_quantile(sigma: float, p: float) -> float:
    """Quantile ``p`` of ``exp(sigma Z - sigma^2/2)``."""
    if sigma <= 0:
        return 1.0
    return float(math.exp(sigma * float(ndtri(np.array([p]))[0]) - sigma * sigma / 2))
