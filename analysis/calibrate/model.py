"""The calibrated model of one apiserver instance (:class:`InstanceModel`): the observed rate curve,
the fitted sub-step bursts (:class:`BurstFit`), event size, events per request and the receiver, and
the scenarios the simulator replays from them. ``analysis.calibrate.fit`` builds it from a snapshot;
the model itself is described in the package docstring and ``docs/recommend.md``.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TypedDict

import numpy as np

from audit_tune.basics.jsondata import JsonObject
from audit_tune.sim.config import AuditFlags
from audit_tune.sim.latency import Latency
from audit_tune.sim.receiver import Receiver
from audit_tune.sim.scenario import Scenario
from audit_tune.sim.units import format_duration
from audit_tune.sim.workload import Arrivals, RateProfile, RequestClass, Workload

LATENCY_POINTS = 40  # empirical quantiles read from the duration histogram


class ModelDoc(TypedDict):
    """:meth:`InstanceModel.to_dict`: the model as the JSON outputs show it."""

    instance: str
    step_seconds: float
    window_seconds: float
    mean_event_rate: float
    peak_step_event_rate: float
    peak_burst_event_rate: float
    events_per_request: float
    event_size_bytes: int
    webhook_latency: str
    webhook_latency_mean_seconds: float
    webhook_failure_rate: float
    burst: dict[str, float | int | str | None]
    events_increase: float
    errors_increase: dict[str, float]
    sources: dict[str, str]
    warnings: list[str]
    observed_bursts: list[JsonObject]
    exact_trace_events: int


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

    def to_dict(self) -> dict[str, float | int | str | None]:
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
    bursts: tuple[JsonObject, ...] = ()  # busiest 100 ms / 1 s / 10 s / 1 min of the log

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

    def to_dict(self) -> ModelDoc:
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


def with_sigma(model: InstanceModel, sigma: float, note: str) -> InstanceModel:
    b = replace(model.burst, sigma=sigma, note=(model.burst.note + "; " + note).strip("; "))
    return replace(model, burst=b)
