"""API request arrivals and the audit events they produce, per apiserver instance.

Arrivals (requests/s, total over all instances; each instance gets ``weight_i / sum(weights)``):

* ``poisson`` or ``deterministic`` points over a *rate profile*: constant, step (piecewise
  constant), ramp (piecewise linear), or a replayed rate series ``(t, rate)``. Non-homogeneous
  Poisson points are made by time-rescaling: unit-rate points in cumulative-intensity space,
  mapped back through the inverse cumulative rate.
* ``onoff``: a Markov-modulated Poisson process with two states (rate ``on`` for Exp(mean_on)
  seconds, rate ``off`` for Exp(mean_off)), a standard model of bursty API traffic.
* ``trace``: explicit arrival times read from a file.

Each request belongs to a :class:`RequestClass` (drawn by weight) that fixes its audit level and
stages, following ``apiserver/pkg/endpoints/filters/audit.go``: level None emits nothing; a normal
request emits RequestReceived at arrival and ResponseComplete when the handler returns; a
long-running one (watch, exec, logs, ...) also ResponseStarted when it first writes; a panicking
one emits Panic instead of ResponseComplete. ``omitStages`` of the policy and of the class are
removed before anything is counted (as upstream, they are not in ``apiserver_audit_event_total``).

Events come out in chunks of time, sorted by (time, request, stage), so the run's memory does not
grow with its duration and every engine sees exactly the same stream.
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from audit_tune.basics.errors import InputError
from audit_tune.sim import kernels, limits, rng

STAGES = ("RequestReceived", "ResponseStarted", "ResponseComplete", "Panic")
RR, RS, RC, PANIC = 0, 1, 2, 3
LEVELS = ("None", "Metadata", "Request", "RequestResponse")

# Representative compact-JSON sizes (bytes) by stage, spec section 7. RR never carries bodies.
DEFAULT_SIZES = {
    "Metadata": (650, 700, 850, 850),
    "Request": (650, 700, 2000, 2000),
    "RequestResponse": (650, 700, 6000, 6000),
}
META_SIZE = 850  # what a Request/RequestResponse event shrinks to when truncated (bodies removed)
CHUNK_REQUESTS = 262144.0  # requests per chunk: bounds memory, amortises per-chunk work


@dataclass(frozen=True)
class RequestClass:
    """A kind of API request: how often, which level, which stages, how long, how big."""

    name: str = "default"
    weight: float = 1.0
    level: str = "Metadata"
    long_running: bool = False
    duration: float = 0.0  # handler time (for long-running: the watch/exec lifetime), seconds
    first_byte: float = 0.0  # long-running: when ResponseStarted is emitted, seconds after arrival
    panic: bool = False
    omit_stages: frozenset[str] = frozenset()
    sizes: tuple[int, int, int, int] | None = None  # bytes for RR, RS, RC, Panic

    def stage_sizes(self) -> tuple[int, int, int, int]:
        if self.sizes is not None:
            return self.sizes
        return DEFAULT_SIZES.get(self.level, DEFAULT_SIZES["Metadata"])

    def stages(self, policy_omit: frozenset[str] = frozenset()) -> list[tuple[int, float]]:
        """(stage index, offset from arrival) for each event this request emits."""
        if self.level == "None":
            return []
        omit = set(self.omit_stages) | set(policy_omit)
        out: list[tuple[int, float]] = [(RR, 0.0)]
        if self.long_running:
            out.append((RS, self.first_byte))
        out.append((PANIC, self.duration) if self.panic else (RC, self.duration))
        return [(s, off) for s, off in out if STAGES[s] not in omit]


@dataclass(frozen=True)
class RateProfile:
    """Requests/s over time: ``rates[i]`` from ``times[i]`` (step) or interpolated (linear)."""

    times: tuple[float, ...] = (0.0,)
    rates: tuple[float, ...] = (100.0,)
    interp: str = "step"  # step | linear

    @staticmethod
    def constant(rate: float) -> RateProfile:
        return RateProfile((0.0,), (float(rate),), "step")

    def scaled(self, f: float) -> RateProfile:
        return RateProfile(self.times, tuple(r * f for r in self.rates), self.interp)

    def mean_rate(self, duration: float) -> float:
        if not duration > 0:
            return self.rates[0]
        if len(self.times) == 1 and self.times[0] == 0.0:
            d = float(duration)  # cumulative's float64 arithmetic for one knot at 0
            return (0.0 + float(self.rates[0]) * d) / d
        return float(self.cumulative(np.array([duration]))[0] / duration)

    def peak_rate(self) -> float:
        return max(self.rates)

    # cumulative intensity and its inverse, piecewise
    def _knots(self, horizon: float) -> tuple[np.ndarray, np.ndarray]:
        t = np.array(self.times, dtype=float)
        r = np.array(self.rates, dtype=float)
        if t[0] > 0:
            t = np.concatenate([[0.0], t])
            r = np.concatenate([[r[0] if self.interp == "linear" else 0.0], r])
        end = max(horizon, t[-1]) + 1.0
        t = np.concatenate([t, [end]])
        r = np.concatenate([r, [r[-1]]])
        return t, r

    def cumulative(self, x: np.ndarray, horizon: float | None = None) -> np.ndarray:
        t, r = self._knots(float(np.max(x)) if horizon is None else horizon)
        seg = np.diff(t)
        if self.interp == "linear":
            area = seg * (r[:-1] + r[1:]) / 2
        else:
            area = seg * r[:-1]
        cum = np.concatenate([[0.0], np.cumsum(area)])
        i = np.clip(np.searchsorted(t, x, side="right") - 1, 0, len(seg) - 1)
        dx = x - t[i]
        if self.interp == "linear":
            slope = (r[i + 1] - r[i]) / seg[i]
            quadratic: np.ndarray = cum[i] + r[i] * dx + 0.5 * slope * dx * dx
            return quadratic
        linear: np.ndarray = cum[i] + r[i] * dx
        return linear

    def inverse_cumulative(self, y: np.ndarray, horizon: float) -> np.ndarray:
        if self.interp != "linear":
            return self._inverse_step(y, horizon)
        return self._inverse_numpy(y, horizon)

    def _inverse_numpy(self, y: np.ndarray, horizon: float) -> np.ndarray:
        t, r = self._knots(horizon)
        seg = np.diff(t)
        area = seg * (r[:-1] + r[1:]) / 2 if self.interp == "linear" else seg * r[:-1]
        cum = np.concatenate([[0.0], np.cumsum(area)])
        i = np.clip(np.searchsorted(cum, y, side="right") - 1, 0, len(seg) - 1)
        dy = y - cum[i]
        if self.interp == "linear":
            slope = (r[i + 1] - r[i]) / seg[i]
            with np.errstate(divide="ignore", invalid="ignore"):
                quad = np.where(np.abs(slope) > 1e-12,
                                (-r[i] + np.sqrt(np.maximum(r[i] ** 2 + 2 * slope * dy, 0.0))) / slope,
                                dy / np.where(r[i] > 0, r[i], np.inf))
            inverse: np.ndarray = t[i] + quad
            return inverse
        with np.errstate(divide="ignore"):
            return t[i] + np.where(r[i] > 0, dy / np.where(r[i] > 0, r[i], 1.0), np.inf)

    def step_tables(self, horizon: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """A step profile's knots ``t``, rates ``r`` and cumulative intensity ``cum`` at each knot
        (the tables of :meth:`inverse_cumulative`)."""
        t, r = self._knots(horizon)
        cum = np.concatenate([[0.0], np.cumsum(np.diff(t) * r[:-1])])
        return cum, t, r

    def _inverse_step(self, y: np.ndarray, horizon: float) -> np.ndarray:
        """:meth:`inverse_cumulative` for step profiles, compiled (the same arithmetic)."""
        cum, t, r = self.step_tables(horizon)
        return kernels.inverse_step(cum, t, r, np.ascontiguousarray(y, dtype=float))


@dataclass(frozen=True)
class OnOff:
    """Markov-modulated (two-state) Poisson bursts: ``on`` req/s for Exp(mean_on) s, then ``off``."""

    on: float
    off: float
    mean_on: float
    mean_off: float

    def profile(self, seed: int, inst: int, horizon: float, share: float) -> RateProfile:
        g = rng.generator(seed, rng.S_ONOFF, inst)
        times, rates, t, state = [], [], 0.0, 1
        while t <= horizon:
            times.append(t)
            rates.append((self.on if state else self.off) * share)
            t += float(g.exponential(self.mean_on if state else self.mean_off))
            state ^= 1
        return RateProfile(tuple(times), tuple(rates), "step")


@dataclass(frozen=True)
class Arrivals:
    process: str = "poisson"  # poisson | deterministic | trace
    profile: RateProfile = field(default_factory=RateProfile)
    onoff: OnOff | None = None
    trace: tuple[float, ...] = ()  # explicit request times (process == "trace")
    trace_instances: tuple[int, ...] = ()  # optional instance per trace row

    def mean_rate(self, duration: float) -> float:
        if self.process == "trace":
            return len(self.trace) / duration if duration > 0 else 0.0
        if self.onoff:
            o = self.onoff
            return (o.on * o.mean_on + o.off * o.mean_off) / (o.mean_on + o.mean_off)
        return self.profile.mean_rate(duration)


@dataclass(frozen=True)
class Workload:
    arrivals: Arrivals = field(default_factory=Arrivals)
    duration: float = 60.0
    classes: tuple[RequestClass, ...] = (RequestClass(),)
    policy_omit_stages: frozenset[str] = frozenset()
    instances: int = 1
    weights: tuple[float, ...] = ()

    def shares(self) -> list[float]:
        w = list(self.weights) if self.weights else [1.0] * self.instances
        total = sum(w)
        return [x / total for x in w]

    def events_per_request(self) -> float:
        tw = sum(c.weight for c in self.classes)
        return sum(c.weight * len(c.stages(self.policy_omit_stages)) for c in self.classes) / tw

    def validate(self) -> Workload:
        if not self.duration > 0 or not math.isfinite(self.duration):
            raise InputError(f"--duration={self.duration}: must be a positive finite duration")
        if self.instances < 1:
            raise InputError(f"--instances={self.instances}: must be >= 1")
        limits.check_shape(self)
        if not self.classes or sum(c.weight for c in self.classes) <= 0:
            raise InputError("request mix: needs at least one class with positive weight")
        for c in self.classes:
            if c.level not in LEVELS:
                raise InputError(f"request class {c.name}: level {c.level!r} must be one of {', '.join(LEVELS)}")
            bad = set(c.omit_stages) - set(STAGES)
            if bad:
                raise InputError(f"request class {c.name}: unknown omitStages {sorted(bad)}; valid: {', '.join(STAGES)}")
        bad = set(self.policy_omit_stages) - set(STAGES)
        if bad:
            raise InputError(f"--omit-stages: unknown stage {sorted(bad)[0]}; valid: {', '.join(STAGES)}")
        a = self.arrivals
        if a.process not in ("poisson", "deterministic", "trace"):
            raise InputError(f"arrival process {a.process!r}: use poisson, deterministic or trace")
        if any(r < 0 or not math.isfinite(r) for r in a.profile.rates):
            raise InputError("rate profile: rates must be finite and >= 0")
        p = a.profile
        if len(p.times) != len(p.rates) or not p.times:
            raise InputError(f"rate profile: {len(p.times)} times for {len(p.rates)} rates; give one time per rate")
        if any(not math.isfinite(t) or t < 0 for t in p.times) or any(y < x for x, y in zip(p.times, p.times[1:])):
            raise InputError("rate profile: times must be finite, >= 0 and in increasing order")
        if p.interp not in ("step", "linear"):
            raise InputError(f"rate profile: interp {p.interp!r}: use step or linear")
        return self


@dataclass
class EventChunk:
    """A time-sorted slice of one instance's audit events, plus how many requests of each class
    arrived in the slice of time that produced it (for ``apiserver_audit_level_total``)."""

    t: np.ndarray  # float64 seconds
    size: np.ndarray  # int64 bytes
    meta: np.ndarray  # int64 bytes after truncation would strip bodies
    level: np.ndarray  # int8 index into LEVELS
    req: np.ndarray  # int64 request index within the instance
    stage: np.ndarray  # int8 index into STAGES
    class_counts: np.ndarray | None = None  # requests per class, or None

    def __len__(self) -> int:
        return len(self.t)

    @classmethod
    def of(cls, cols: tuple[np.ndarray, ...] | list[np.ndarray], class_counts: np.ndarray | None) -> EventChunk:
        """A chunk from its six columns in field order (t, size, meta, level, req, stage)."""
        t, size, meta, level, req, stage = cols
        return cls(t, size, meta, level, req, stage, class_counts=class_counts)


@dataclass
class RequestChunk:
    t: np.ndarray
    cls: np.ndarray  # int16 index into Workload.classes
    req: np.ndarray


def chunk_seconds(w: Workload) -> float:
    """Chunk length: about CHUNK_REQUESTS requests per chunk, whatever the rate (no 1 s floor)."""
    rate = max(w.arrivals.mean_rate(w.duration), 1e-9)
    if w.arrivals.onoff:
        rate = max(rate, w.arrivals.onoff.on)
    else:
        rate = max(rate, w.arrivals.profile.peak_rate())
    return float(min(max(CHUNK_REQUESTS / rate, 1e-9 * (1.0 + w.duration)), w.duration))


def iter_requests(w: Workload, seed: int, inst: int) -> Iterator[RequestChunk]:
    """Requests of instance ``inst`` with arrival time < duration, in chunks."""
    a = w.arrivals
    share = w.shares()[inst]
    step = chunk_seconds(w)
    cum_w = np.cumsum([c.weight for c in w.classes], dtype=float)
    cum_w /= cum_w[-1]
    h0 = np.uint64(rng.hash_start(seed, rng.S_REQ_CLASS))
    next_req = 0

    def classify(t: np.ndarray) -> RequestChunk:
        nonlocal next_req
        req = np.arange(next_req, next_req + len(t), dtype=np.int64)
        next_req += len(t)
        if len(w.classes) == 1:
            cls = np.broadcast_to(np.int16(0), (len(t),))  # read-only view: every request is class 0
        else:
            # compiled: cls = min(searchsorted(cum_w, uniform_array(seed, S_REQ_CLASS, inst, req)), last)
            cls = kernels.class_of(h0, np.uint64(inst), req, np.uint64(0), cum_w)
        return RequestChunk(t, cls, req)

    if a.process == "trace":
        t = np.asarray(a.trace, dtype=float)
        if a.trace_instances:
            t = t[np.asarray(a.trace_instances) == inst]
        elif w.instances > 1:
            pick = np.floor(rng.uniform_array(seed, rng.S_ARRIVALS, np.arange(len(t))) * w.instances)
            t = t[pick == inst]
        t = t[t < w.duration]
        for lo in range(0, len(t), 65536):
            yield classify(t[lo:lo + 65536])
        return

    profile = a.onoff.profile(seed, inst, w.duration, share) if a.onoff else a.profile.scaled(share)
    g = rng.generator(seed, rng.S_ARRIVALS, inst)
    total = float(profile.cumulative(np.array([w.duration]), w.duration)[0])
    y = 0.0  # position in cumulative-intensity space
    k = 0  # deterministic: next point index
    start = 0.0
    while start < w.duration:
        end = min(start + step, w.duration)
        y_end = float(profile.cumulative(np.array([end]), w.duration)[0]) if end < w.duration else total
        if a.process == "deterministic":
            n = int(math.floor(y_end - 1e-12)) - k + 1 if y_end > k else 0
            ys = np.arange(k, k + max(n, 0), dtype=float)
            k += max(n, 0)
        else:
            expected = y_end - y
            m = int(expected + 10 * math.sqrt(expected + 1) + 16)
            pts: list[np.ndarray] = []
            while True:
                gaps = g.standard_exponential(m)  # = exponential(1.0, m), bit for bit (scale 1), one pass less
                ys_all = y + np.cumsum(gaps)
                inside = ys_all[:int(np.searchsorted(ys_all, y_end, side="left"))]  # sorted: the part < y_end
                pts.append(inside)
                if len(inside) < m:
                    # the next point lies beyond this chunk: resume there (memoryless)
                    y = y_end
                    break
                y = float(ys_all[-1])
            ys = pts[0] if len(pts) == 1 else np.concatenate(pts)
        if len(profile.rates) == 1 and profile.times[0] == 0.0 and profile.rates[0] > 0:
            t = ys / profile.rates[0]
        else:
            t = profile.inverse_cumulative(ys, w.duration) if len(ys) else np.empty(0)
        t = t[:int(np.searchsorted(t, w.duration, side="left"))]  # non-decreasing: the part < duration
        yield classify(t)
        start = end


def iter_events(w: Workload, seed: int, inst: int) -> Iterator[EventChunk]:
    """The instance's audit events in time order (ties: by request, then stage), chunked.

    Valid when request timing does not depend on the audit backends (every backend in batch
    mode); blocking modes drive requests themselves from :func:`iter_requests`.

    Events are laid out request by request (stages in order) and stable-sorted by time, so equal
    times keep (request, stage) order; events later than the last arrival of a chunk wait for the
    next one, since a later request may still emit before them.
    """
    ncls = len(w.classes)
    plans = [c.stages(w.policy_omit_stages) for c in w.classes]
    width = max((len(p) for p in plans), default=0)
    nst = np.array([len(p) for p in plans], dtype=np.int64)
    off_tab = np.zeros((ncls, max(width, 1)))
    stage_tab = np.zeros((ncls, max(width, 1)), dtype=np.int8)
    size_tab = np.zeros((ncls, max(width, 1)), dtype=np.int64)
    for ci, (c, plan) in enumerate(zip(w.classes, plans)):
        sz = c.stage_sizes()
        for k, (stage, off) in enumerate(plan):
            off_tab[ci, k], stage_tab[ci, k], size_tab[ci, k] = off, stage, sz[stage]
    meta_tab = np.minimum(size_tab, META_SIZE)
    lvl = np.array([LEVELS.index(c.level) for c in w.classes], dtype=np.int8)
    zero_offsets = not off_tab.any()
    empty = (np.empty(0), np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int8),
             np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int8))
    carry: tuple[np.ndarray, ...] = empty
    for rc in iter_requests(w, seed, inst):
        counts = np.bincount(rc.cls, minlength=ncls) if ncls > 1 else np.array([len(rc.t)])
        if ncls == 1 and nst[0] == 1:
            total = len(rc.t)
            # one class, one stage: the events are the arrivals themselves, already sorted; the
            # per-event columns are constant (read-only broadcast views, not copies)
            def const(v: np.generic, total: int = total) -> np.ndarray:
                return np.broadcast_to(v, (total,))

            new = (rc.t if zero_offsets else rc.t + off_tab[0, 0], const(size_tab[0, 0]),
                   const(meta_tab[0, 0]), const(lvl[0]), rc.req, const(stage_tab[0, 0]))
        else:
            # each request's stages in order: time arrival + offset, and the stage's sizes and level
            new = kernels.expand_events(rc.t, rc.cls, rc.req, nst, off_tab, size_tab, meta_tab, stage_tab, lvl,
                                        zero_offsets)
        allev: tuple[np.ndarray, ...]
        if len(carry[0]):
            allev = tuple(np.concatenate([a, b]) for a, b in zip(carry, new))
        else:
            allev = new
        ta = allev[0]
        if not zero_offsets and len(ta) > 1 and not (ta[1:] >= ta[:-1]).all():
            order = np.argsort(ta, kind="stable")
            allev = tuple(a[order] for a in allev)
            ta = allev[0]
        if zero_offsets:
            cut = len(ta)
        else:
            horizon = rc.t[-1] if len(rc.t) else -np.inf
            cut = int(np.searchsorted(ta, horizon, side="left")) if len(rc.t) else 0
        out = tuple(a[:cut] for a in allev)
        carry = tuple(a[cut:] for a in allev)
        yield EventChunk.of(out, counts)
    if len(carry[0]):
        yield EventChunk.of(carry, np.zeros(ncls, dtype=np.int64))


def add_level_counts(w: Workload, level_total: Counter[str], class_counts: np.ndarray | None) -> int:
    """Add requests per class to ``apiserver_audit_level_total`` (one per request, None included);
    returns how many requests that was."""
    if class_counts is None:
        return 0
    total = 0
    for c, n in zip(w.classes, np.asarray(class_counts).tolist()):
        level_total[c.level] += int(n)
        total += int(n)
    return total
