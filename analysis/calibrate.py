"""Calibrate the simulator to one apiserver instance of an ``audit-tune-snapshot/v1`` snapshot.

What is built, per instance (see ``docs/recommend.md``):

* **Rate**: the observed ``event_rate`` curve (events/s, one value per ``step``) is replayed as a
  step :class:`~sim.workload.RateProfile` at its own resolution. Events become requests through
  the events-per-request ratio ``epr`` (``events_increase / requests audited`` from
  ``level_increase``, else from ``requests_by_verb`` (watches make 3 events), else 2.0 = RR + RC).
* **Sub-step bursts**: inside each step the rate is modulated per *burst window* ``w`` (the
  ``event_rate_peak`` window, 10 s) by i.i.d. lognormal multipliers
  ``X_k = exp(sigma Z_k - sigma^2/2)``, renormalised so each step keeps its observed mean. sigma is
  fitted so that the model's ratio ``max_k(10 s rate) / step rate`` (with Poisson counting noise)
  matches the observed ``event_rate_peak / event_rate``: the median ratio, raised to the 90th
  percentile's fit when the tail is heavier. Without ``event_rate_peak`` sigma comes from the spread
  of the step series around its rolling median (assumed scale-free; said in the output).
* **Audit log input** (the snapshot's ``audit_log`` key, ``analysis.auditlog``, docs/audit-log.md):
  the peak series is the log's busiest 1 s per step, the event size its mean line length, and the
  observed load (scale 1) of a stretch the stored trace covers is replayed from the logged arrival
  times exactly (:meth:`InstanceModel.trace_between`); other scales use the fitted model.
* **Event size**: webhook ``size_sum / size_count`` (one observation per POST attempt) divided by
  the mean events per POST; default 850 B (spec section 7) when the webhook histograms are absent.
* **Receiver**: webhook latency = empirical quantiles of ``rest_client_request_duration_seconds``
  (``Latency("empirical", ...)``); failure probability per attempt = (non-2xx + ``<error>``) /
  all attempts, less the share already explained by latencies at the 30 s client timeout.

:func:`validate` replays the observed window with the *current* flags and compares predicted
drops by plugin with the observed ``errors_increase``: the calibration error and a plain
confidence level come out of it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from audit_tune.analysis.auditlog.build import trace_from_dict
from audit_tune.analysis.retries import webhook_attempts
from audit_tune.analysis.snapshot import Snapshot
from audit_tune.basics.errors import InputError, NotEnoughData
from audit_tune.sim.api import run
from audit_tune.sim.config import AuditFlags
from audit_tune.sim.latency import Latency, ndtri
from audit_tune.sim.receiver import ATTEMPT_TIMEOUT, ATTEMPTS, Receiver
from audit_tune.sim.scenario import Scenario
from audit_tune.sim.units import format_duration, parse_duration
from audit_tune.sim.workload import Arrivals, RateProfile, RequestClass, Workload

FORMAT = "audit-tune-snapshot/v1"
DEFAULT_EVENT_SIZE = 850  # bytes, spec section 7 (RC, Metadata)
DEFAULT_EPR = 2.0  # RequestReceived + ResponseComplete
DEFAULT_LATENCY = Latency("fixed", 0.05)
ENVELOPE_BYTES = 60  # {"kind":"EventList","apiVersion":"audit.k8s.io/v1","metadata":{},"items":[]}
LATENCY_POINTS = 40  # empirical quantiles read from the duration histogram
FIT_DRAWS = 4000
WHOLE_WINDOW_EVENTS = 2_000_000  # up to this, validation replays the whole window
MAX_VALIDATION_EVENTS = 20_000_000  # above this, validation replays the stretches near capacity only


# ------------------------------------------------------------------------------------------------
# Snapshot loading: files are read and validated by analysis.snapshot.Snapshot; calibration reads the
# plain dict
# ------------------------------------------------------------------------------------------------
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


# ------------------------------------------------------------------------------------------------
# The calibrated model of one instance
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BurstFit:
    """Lognormal sub-step burst model and the numbers it was fitted from."""

    sigma: float
    window: float  # burst window w, seconds
    per_step: int  # burst windows per step, n = step / w
    method: str  # "peak-ratio", "step-variance", "none"
    observed_ratio_p50: float | None = None
    observed_ratio_p90: float | None = None
    model_ratio_p50: float | None = None
    model_ratio_p90: float | None = None
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


@dataclass(frozen=True)
class InstanceModel:
    """Everything the simulator needs about one apiserver, and where each number came from."""

    name: str
    step: float
    times: tuple[float, ...]  # step starts, seconds from the window start
    rates: tuple[float, ...]  # events/s per step
    peak_rates: tuple[float, ...] | None  # observed 10 s peak per step (events/s), if any
    epr: float
    event_size: int
    latency: Latency
    failure_rate: float
    burst: BurstFit
    events_increase: float
    errors_increase: dict[str, float]
    sources: dict[str, str] = field(default_factory=dict)  # what each number came from
    warnings: tuple[str, ...] = ()
    # exact arrival times from an audit log: (start, end, event times), seconds from the window start
    trace: tuple[tuple[float, float, np.ndarray], ...] = field(default=(), compare=False)
    bursts: tuple[dict[str, Any], ...] = ()  # busiest 100 ms / 1 s / 10 s / 1 min of the log

    @property
    def duration(self) -> float:
        return self.step * len(self.rates)

    @property
    def mean_rate(self) -> float:
        return float(np.mean(self.rates)) if self.rates else 0.0

    @property
    def peak_step_rate(self) -> float:
        return float(max(self.rates)) if self.rates else 0.0

    @property
    def peak_burst_rate(self) -> float:
        """Highest short-window rate: observed peak, else step peak x the model's p90 ratio."""
        if self.peak_rates:
            return float(max(self.peak_rates))
        return self.peak_step_rate * (self.burst.model_ratio_p90 or 1.0)

    def receiver(self) -> Receiver:
        return Receiver(latency=self.latency, error_rate=self.failure_rate)

    # -- workload ---------------------------------------------------------------------------
    def classes(self) -> tuple[tuple[RequestClass, ...], frozenset[str]]:
        """A request mix with ``epr`` events per request, every event ``event_size`` bytes."""
        s = int(self.event_size)
        sizes = (s, s, s, s)
        if self.epr <= 1.5:
            return (RequestClass("observed", 1.0, "Metadata", sizes=sizes),), frozenset({"RequestReceived"})
        f = min(max(self.epr - 2.0, 0.0), 0.95)
        cls = [RequestClass("observed", 1.0 - f, "Metadata", sizes=sizes)]
        if f > 0:
            cls.append(RequestClass("long-running", f, "Metadata", long_running=True, sizes=sizes))
        return tuple(cls), frozenset()

    def profile(self, seed: int, scale: float = 1.0, start: int = 0, stop: int | None = None,
                sigma: float | None = None, shape: str = "model") -> RateProfile:
        """Requests/s over steps ``[start, stop)``, ``n`` burst windows per step, each step keeping its
        observed mean. ``shape="model"``: lognormal multipliers with the fitted sigma (the Monte Carlo
        of future bursts). ``shape="observed"``: the observed burst-window peak replayed in as many
        windows of each step as its mean allows (a contiguous block, position drawn from ``seed``), the
        rest spread evenly over the other windows: the burstiest shape consistent with the observed mean
        and peak (falls back to the model without ``event_rate_peak``)."""
        stop = len(self.rates) if stop is None else stop
        rates = np.asarray(self.rates[start:stop], dtype=float) * scale
        sig = self.burst.sigma if sigma is None else sigma
        n = max(self.burst.per_step, 1)
        g = np.random.default_rng([int(seed), 7919, start])
        if shape == "observed" and self.peak_rates is not None and n >= 2:
            # the burstiest shape the two observations allow: as many windows at the peak as the
            # step's mean permits (a contiguous block), the remainder spread over the others
            pk = np.asarray(self.peak_rates[start:stop], dtype=float) * scale
            pk = np.minimum(np.maximum(pk, rates), rates * n)
            with np.errstate(divide="ignore", invalid="ignore"):
                m = np.where(pk > 0, np.floor(rates * n / np.where(pk > 0, pk, 1.0) + 1e-9), n)
            m = np.clip(m, 1, n).astype(np.int64)
            rest = np.where(m < n, (rates * n - m * pk) / np.maximum(n - m, 1), 0.0)
            off = (g.random(len(rates)) * (n - m + 1)).astype(np.int64)
            k = np.arange(n)[None, :]
            inblock = (k >= off[:, None]) & (k < (off + m)[:, None])
            sub = np.where(inblock, pk[:, None], np.maximum(rest, 0.0)[:, None]).ravel()
        elif sig <= 0 or n < 2:
            t = np.arange(len(rates)) * self.step
            return RateProfile(tuple(t.tolist()), tuple((rates / self.epr).tolist()), "step")
        else:
            x = np.exp(sig * g.standard_normal((len(rates), n)) - sig * sig / 2)
            x /= x.mean(axis=1, keepdims=True)
            sub = (rates[:, None] * x).ravel()
        w = self.step / n
        t = np.arange(len(sub)) * w
        return RateProfile(tuple(t.tolist()), tuple((sub / self.epr).tolist()), "step")

    def scenario(self, flags: AuditFlags, seed: int, scale: float = 1.0, start: int = 0,
                 stop: int | None = None, sigma: float | None = None, drain: bool = True,
                 shape: str = "model") -> Scenario:
        stop = len(self.rates) if stop is None else stop
        exact = self.trace_between(start * self.step, stop * self.step) if scale == 1.0 else None
        if exact is not None:  # the observed load itself: replay the audit log's arrivals, one event each
            s = int(self.event_size)
            wl = Workload(Arrivals("trace", trace=tuple(exact.tolist())), duration=max((stop - start) * self.step, 1e-3),
                          classes=(RequestClass("audit-log", 1.0, "Metadata", sizes=(s, s, s, s)),),
                          policy_omit_stages=frozenset({"RequestReceived"}))
            return Scenario(flags=flags, workload=wl, receiver=self.receiver(), backends=("webhook",),
                            seed=int(seed), drain=drain)
        classes, omit = self.classes()
        wl = Workload(Arrivals("poisson", self.profile(seed, scale, start, stop, sigma, shape)),
                      duration=max((stop - start) * self.step, 1e-3), classes=classes, policy_omit_stages=omit)
        return Scenario(flags=flags, workload=wl, receiver=self.receiver(), backends=("webhook",),
                        seed=int(seed), drain=drain)

    def trace_between(self, a: float, b: float) -> np.ndarray | None:
        """Exact event times in ``[a, b)`` (seconds from the window start), shifted to start at 0,
        when one stored stretch of the audit log covers that range; else None."""
        for lo, hi, t in self.trace:
            if lo <= a + 1e-6 and b <= hi + 1e-6:
                i, j = np.searchsorted(t, [a, b])
                return t[i:j] - a
        return None

    def busiest_segments(self, seconds: float, k: int) -> list[tuple[int, int]]:
        """Up to ``k`` non-overlapping step ranges of about ``seconds`` with the highest peaks."""
        m = max(1, int(round(seconds / self.step)))
        m = min(m, len(self.rates))
        key = np.asarray(self.peak_rates if self.peak_rates else self.rates, dtype=float)
        taken = np.zeros(len(key), dtype=bool)
        out: list[tuple[int, int]] = []
        for i in np.argsort(-key, kind="stable"):
            if len(out) >= k:
                break
            if taken[i]:
                continue
            lo = int(min(max(i - m // 2, 0), len(key) - m))
            hi = lo + m
            if taken[lo:hi].any():
                continue
            taken[lo:hi] = True
            out.append((lo, hi))
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "instance": self.name,
            "step_seconds": self.step,
            "window_seconds": self.duration,
            "mean_event_rate": round(self.mean_rate, 3),
            "peak_step_event_rate": round(self.peak_step_rate, 3),
            "peak_burst_event_rate": round(self.peak_burst_rate, 3),
            "events_per_request": round(self.epr, 4),
            "event_size_bytes": self.event_size,
            "webhook_latency": self.latency.describe() if len(self.latency.values) <= 12 else
            f"empirical:{LATENCY_POINTS} quantiles, median={_ms(float(np.median(self.latency.values)))}, "
            f"max={_ms(max(self.latency.values))}",
            "webhook_latency_mean_seconds": round(self.latency.mean, 6),
            "webhook_failure_rate": round(self.failure_rate, 6),
            "burst": self.burst.to_dict(),
            "events_increase": self.events_increase,
            "errors_increase": self.errors_increase,
            "sources": self.sources,
            "warnings": list(self.warnings),
            "observed_bursts": list(self.bursts),
            "exact_trace_events": int(sum(len(t) for _, _, t in self.trace)),
        }


def _ms(x: float) -> str:
    return format_duration(round(x, 3) if x >= 0.001 else x)


# ------------------------------------------------------------------------------------------------
# Fitting pieces
# ------------------------------------------------------------------------------------------------
def _series(obj: Any, what: str) -> tuple[np.ndarray, np.ndarray] | None:
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


def _step_of(source: dict[str, Any], t: np.ndarray) -> float:
    step = (source.get("window") or {}).get("step")
    if step not in (None, ""):
        return parse_duration(step, "snapshot source.window.step")
    if len(t) > 1:
        return float(np.median(np.diff(t)))
    return 60.0


def events_per_request(inst: dict[str, Any]) -> tuple[float, str]:
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


def latency_from_histogram(le: list[Any], cum: list[Any], points: int = LATENCY_POINTS) -> Latency | None:
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


def failure_rate(by_code: dict[str, Any], latency: Latency | None) -> tuple[float, int]:
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


def _attempts_per_batch(p: float) -> float:
    return sum(p ** k for k in range(ATTEMPTS))


def event_size(inst: dict[str, Any], p_fail: float) -> tuple[int, str]:
    wh = inst.get("webhook") or {}
    ssum, scount = float(wh.get("size_sum") or 0), float(wh.get("size_count") or 0)
    ev = float(inst.get("events_increase") or 0)
    err = inst.get("errors_increase") or {}
    sent = ev - float(err.get("buffered") or 0) - float(err.get("truncate") or 0)
    if ssum > 0 and scount > 0 and sent > 0:
        body = ssum / scount
        batches = scount / _attempts_per_batch(p_fail)
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


def calibrate(snapshot: Any, instance: str) -> InstanceModel:
    """Build the :class:`InstanceModel` of ``instance``. Raises :class:`NotEnoughData` with reasons."""
    snap = snapshot_dict(snapshot)
    inst = snap["instances"].get(instance)
    if inst is None:
        raise InputError(f"snapshot: no instance {instance!r}; have {', '.join(sorted(snap['instances'])) or 'none'}")
    reasons = data_problems(snap, instance)
    if reasons:
        raise NotEnoughData(f"instance {instance}: " + "; ".join(reasons))
    src = snap.get("source") or {}
    t, v = _series(inst.get("event_rate"), f"instances.{instance}.event_rate")  # type: ignore[misc]
    v, gaps = _fill_gaps(v)
    step = _step_of(src, t)
    warnings: list[str] = []
    sources: dict[str, str] = {}
    if gaps:
        warnings.append(f"{gaps} of {len(v)} event_rate points missing; filled by interpolation")
    peaks = None
    pk = inst.get("event_rate_peak")
    window = parse_duration((pk or {}).get("window") or "10s", "event_rate_peak.window")
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
    if wh and (wh.get("duration_buckets") or {}).get("le"):
        db = wh["duration_buckets"]
        lat = latency_from_histogram(db.get("le") or [], db.get("cum") or [])
    if lat is not None:
        sources["webhook_latency"] = f"empirical quantiles of rest_client_request_duration_seconds ({LATENCY_POINTS} points)"
    else:
        sources["webhook_latency"] = "default 50ms fixed: no webhook duration histogram"
        warnings.append("no webhook latency histogram (rest_client_request_duration_seconds for the webhook host): assumed 50ms")
    p_fail, attempts = failure_rate(webhook_attempts(wh), lat)
    sources["webhook_failure_rate"] = (f"non-2xx + <error> / {attempts} attempts (rest_client_requests_total)"
                                       if attempts else "assumed 0: no rest_client_requests_total for the webhook host")
    size, sources["event_size"] = event_size(inst, p_fail)
    if size == DEFAULT_EVENT_SIZE and not (wh or {}).get("size_count"):
        warnings.append("no webhook request size histogram: event size assumed 850 B")
    for m in missing_items(snap, instance):
        warnings.append(m)
    t0 = float(t[0])
    extra = _from_audit_log(snap, instance, t0 - step, sources, warnings)
    size = extra.pop("event_size", size)
    return InstanceModel(
        name=instance, step=step, times=tuple((t - t0).tolist()), rates=tuple(float(x) for x in v),
        peak_rates=tuple(float(x) for x in peaks) if peaks is not None else None, epr=epr, event_size=size,
        latency=lat or DEFAULT_LATENCY, failure_rate=p_fail, burst=burst,
        events_increase=float(inst.get("events_increase") or 0.0),
        errors_increase={k: float((inst.get("errors_increase") or {}).get(k) or 0.0)
                         for k in ("buffered", "webhook", "log", "truncate")},
        sources=sources, warnings=tuple(warnings), **extra)


def _from_audit_log(snap: dict[str, Any], instance: str, origin: float, sources: dict[str, str],
                    warnings: list[str]) -> dict[str, Any]:
    """What an audit log (``analysis.auditlog``, the snapshot's ``audit_log`` key) adds to the model:
    the measured event size, the exact arrival trace of its busiest stretches (``origin`` = unix
    start of the first step) and the bursts it found; notes in ``sources`` and ``warnings``."""
    al = ((snap.get("audit_log") or {}).get("instances") or {}).get(instance)
    if not al:
        return {}
    out: dict[str, Any] = {"bursts": tuple(al.get("bursts") or ())}
    sz = al.get("sizes") or {}
    if sz.get("mean_bytes"):
        out["event_size"] = int(round(sz["mean_bytes"]))
        warnings[:] = [w for w in warnings if not w.startswith("no webhook request size histogram")]
        sources["event_size"] = f"audit log: mean bytes per event line ({sz.get('events', 0):,} events)"
    tr = []
    for d in al.get("trace") or []:
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
    comp = al.get("completeness") or {}
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
    inst = snap["instances"][instance]
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


# ------------------------------------------------------------------------------------------------
# Validation against the observed window
# ------------------------------------------------------------------------------------------------
@dataclass
class Validation:
    instance: str
    replayed: str  # "whole window" or "N busiest segments of S"
    observed_events: float
    predicted_events: float
    observed_errors: dict[str, float]
    predicted_errors: dict[str, float]
    rate_error: float  # relative error of the replayed event count
    drop_error: float  # sum |pred - obs| over plugins / max(obs, pred, events x 1e-4)
    confidence: str  # high | medium | low
    why: str
    partial: bool = False  # only part of the window could be replayed

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["rate_error"] = round(self.rate_error, 4)
        d["drop_error"] = round(self.drop_error, 4)
        return d


def validate(model: InstanceModel, flags: AuditFlags, seed: int = 1, engine: str = "fast",
             max_events: int = MAX_VALIDATION_EVENTS) -> Validation:
    """Replay the observed window with the current flags; compare drops with the observed counters."""
    parts, replayed, partial = replay_ranges(model, flags, max_events)
    pred: dict[str, float] = {k: 0.0 for k in ("buffered", "webhook", "log", "truncate")}
    pev = 0.0
    obs_in_parts = 0.0
    for lo, hi in parts:
        d = run(model.scenario(flags, seed, start=lo, stop=hi, shape="observed"), engine=engine).to_dict(series=False)
        pev += d["events_total"]
        obs_in_parts += float(np.sum(model.rates[lo:hi])) * model.step
        for k in pred:
            pred[k] += d["errors"].get(k, 0)
    whole = float(np.sum(model.rates)) * model.step
    if obs_in_parts < whole and obs_in_parts > 0:
        # webhook failures happen anywhere: scale them to the whole window
        pred["webhook"] *= whole / obs_in_parts
        pev *= whole / obs_in_parts
        obs_in_parts = whole
    obs = model.errors_increase
    obs_events = model.events_increase if not partial else obs_in_parts
    rate_err = abs(pev - obs_events) / obs_events if obs_events > 0 else 0.0
    so, sp = sum(obs.values()), sum(pred.values())
    floor = max(obs_events * 1e-4, 1.0)
    drop_err = sum(abs(pred[k] - obs.get(k, 0.0)) for k in pred) / max(so, sp, floor)
    if so == 0 and sp == 0:
        drop_err = 0.0
    if rate_err <= 0.05 and (drop_err <= 0.25 or (so < floor and sp < floor)):
        conf, why = "high", "replayed events and drops match the observed counters"
    elif rate_err <= 0.15 and drop_err <= 0.6:
        conf, why = "medium", "drops match the observed counters only roughly"
    else:
        conf = "low"
        if so > 0 and sp == 0:
            why = (f"the apiserver lost {so:.0f} events but the model predicts none: bursts shorter than the "
                   f"{format_duration(model.burst.window)} peak window, or receiver outages, are not in the data")
        elif sp > 0 and so == 0:
            why = f"the model predicts {sp:.0f} drops but none were observed: the current flags given may not be the ones in force"
        elif rate_err > 0.15:
            why = f"the replayed event count is off by {100 * rate_err:.0f}% (gaps or resets in the rate series?)"
        else:
            why = f"predicted drops differ from observed by {100 * drop_err:.0f}%"
    if partial and conf != "high":
        conf, why = "low", why + f"; only {replayed} were replayed, so drops elsewhere are not predicted"
    return Validation(model.name, replayed, obs_events, pev, dict(obs), pred, rate_err, drop_err, conf, why, partial)


def replay_ranges(model: InstanceModel, flags: AuditFlags, max_events: float) -> tuple[list[tuple[int, int]], str, bool]:
    """Which steps to replay to predict the window's drops: all of it when small enough; else every
    stretch whose peak reaches half the drain capacity (padded 2 min each side), since buffered
    drops need the rate near capacity; else the busiest segments (partial: said in the output)."""
    n = len(model.rates)
    rates = np.asarray(model.rates, dtype=float)
    if float(rates.sum()) * model.step <= min(max_events, WHOLE_WINDOW_EVENTS):
        return [(0, n)], "whole window", False
    cap = flags.webhook.batch.drain_capacity if flags.webhook.mode == "batch" else math.inf
    peak = np.asarray(model.peak_rates, dtype=float) if model.peak_rates else rates * (model.burst.model_ratio_p90 or 1.0)
    hot = np.flatnonzero(peak >= 0.5 * cap)
    pad = max(1, int(math.ceil(120.0 / model.step)))
    ranges: list[list[int]] = []
    for i in hot.tolist():
        lo, hi = max(i - pad, 0), min(i + pad + 1, n)
        if ranges and lo <= ranges[-1][1]:
            ranges[-1][1] = max(ranges[-1][1], hi)
        else:
            ranges.append([lo, hi])
    ev = sum(float(rates[lo:hi].sum()) * model.step for lo, hi in ranges)
    if ranges and ev <= max_events:
        share = sum(hi - lo for lo, hi in ranges) / n
        return ([(lo, hi) for lo, hi in ranges],
                f"{len(ranges)} stretch(es) at >= 50% of the drain capacity ({100 * share:.0f}% of the window; "
                "the rest is far below capacity)", False)
    if not ranges:
        seg = model.busiest_segments(min(600.0, model.duration), 1)
        return seg, "the busiest 10 minutes (the whole window is far below the drain capacity)", False
    seg_steps = max(1, int(max_events / 3 / max(model.peak_step_rate, 1e-9) / model.step))
    parts = model.busiest_segments(seg_steps * model.step, 3)
    return parts, f"{len(parts)} busiest segments of {format_duration(seg_steps * model.step)}", True


def with_sigma(model: InstanceModel, sigma: float, note: str) -> InstanceModel:
    b = replace(model.burst, sigma=sigma, note=(model.burst.note + "; " + note).strip("; "))
    return replace(model, burst=b)


def lognormal_quantile(sigma: float, p: float) -> float:
    """Quantile ``p`` of ``exp(sigma Z - sigma^2/2)``."""
    if sigma <= 0:
        return 1.0
    return float(math.exp(sigma * float(ndtri(np.array([p]))[0]) - sigma * sigma / 2))


# ------------------------------------------------------------------------------------------------
# Synthetic snapshots from a known load (tests, docs, and a stand-in sample)
# ------------------------------------------------------------------------------------------------
DURATION_BUCKETS = (0.005, 0.025, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60)
SIZE_BUCKETS = tuple(float(64 * 4 ** k) for k in range(10))


SYNTHETIC_LATENCY = Latency("lognormal", 0.05, 0.4)


def synthetic_snapshot(rates: dict[str, list[float]] | None = None, step: float = 30.0, sigma: float = 0.4,
                       window: float = 10.0, event_size: int = 900, epr: float = 2.0,
                       latency: Latency = SYNTHETIC_LATENCY, failure_rate: float = 0.0,
                       batch_events: float = 400.0, errors: dict[str, dict[str, float]] | None = None,
                       seed: int = 1, start: float = 1_780_000_000.0) -> dict[str, Any]:
    """An ``audit-tune-snapshot/v1`` document generated from a *known* load, as Prometheus would
    record it: per step, ``n = step / window`` windows with rate ``rate x X_k`` (the same lognormal
    model :func:`fit_burst` fits), Poisson counts, ``event_rate`` = count / step, ``event_rate_peak``
    = busiest window / window; webhook histograms from ``latency``, ``failure_rate``, full batches of
    ``batch_events`` events of ``event_size`` bytes."""
    rates = rates or {"apiserver-0": [200.0 + 150.0 * math.sin(i / 12.0) ** 2 for i in range(120)]}
    g = np.random.default_rng(seed)
    n = max(int(round(step / window)), 1)
    insts = {}
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
        attempts = batches * _attempts_per_batch(failure_rate)
        lat = latency.sample_array(g.random(max(int(attempts), 1)))
        cum = [int(np.sum(lat <= b)) for b in DURATION_BUCKETS] + [len(lat)]
        body = batch_events * event_size + ENVELOPE_BYTES
        t = (start + step * (np.arange(len(r)) + 1)).tolist()
        n_fail = int(round(attempts * failure_rate))
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
                "requests_by_code": {"200": float(int(round(attempts)) - n_fail), **({"500": float(n_fail)} if n_fail else {})},
                "size_buckets": {"le": [*SIZE_BUCKETS, "+Inf"],
                                 "cum": [int(round(attempts)) if body <= b else 0 for b in SIZE_BUCKETS] + [int(round(attempts))]},
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
