"""Open-loop arrival schedules: *when* each request must be sent, fixed before the run starts.

A schedule is a rate profile ``r(t)`` over ``[0, duration)`` plus a spacing process:

* the profile is piecewise linear: segments ``(t0, t1, r_start, r_end)``; steps are segments with
  ``r_start == r_end``. Its integral ``Λ(t) = ∫₀ᵗ r`` is the expected number of requests by ``t``;
* ``constant`` spacing puts request *k* at ``Λ⁻¹(k + ½)`` (evenly spaced at a constant rate, exactly
  ``round(Λ(D))`` requests);
* ``poisson`` spacing puts it at ``Λ⁻¹(E₁ + … + E_k)`` with ``E ~ Exp(1)``: a (non-homogeneous)
  Poisson process by time change, seeded.

Profiles, written as ``--rate``:

==========================  =================================================================
``300``                     constant 300 req/s
``ramp:100..1000``          linear from 100 to 1000 req/s over the duration
``step:100,200,400@10s``    100 for 10 s, 200 for 10 s, then 400 until the end
``burst:100,2000@10s/1s``   100 req/s, and 2000 req/s during [k·10 s, k·10 s + 1 s), k >= 1
``replay:FILE.csv``         CSV rows ``t,rate`` (header optional): rate from t to the next row's t;
                            the last rate holds to the end (default duration: last t + last step)
==========================  =================================================================

Offsets are produced lazily in chunks (:meth:`Schedule.chunks`), so a long run does not hold
every timestamp in memory at once.
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from audit_tune.basics.errors import InputError
from audit_tune.sim.units import parse_duration, parse_rate
from audit_tune.sim.workload_files import read_rows

SPACINGS = ("constant", "poisson")


@dataclass(frozen=True)
class RateProfile:
    """Piecewise-linear rate; ``segments`` cover ``[0, duration)`` in order."""

    segments: tuple[tuple[float, float, float, float], ...]
    spec: str = ""

    @property
    def duration(self) -> float:
        return self.segments[-1][1] if self.segments else 0.0

    def _cum(self) -> np.ndarray:
        out = [0.0]
        for t0, t1, ra, rb in self.segments:
            out.append(out[-1] + 0.5 * (ra + rb) * (t1 - t0))
        return np.array(out)

    @property
    def expected(self) -> float:
        """``Λ(duration)``: the expected number of requests."""
        return float(self._cum()[-1])

    @property
    def mean_rate(self) -> float:
        return self.expected / self.duration if self.duration > 0 else 0.0

    @property
    def peak_rate(self) -> float:
        return max((max(ra, rb) for _, _, ra, rb in self.segments), default=0.0)

    def rate_at(self, t: float) -> float:
        for t0, t1, ra, rb in self.segments:
            if t0 <= t < t1:
                return ra + (rb - ra) * (t - t0) / (t1 - t0)
        return 0.0

    def invert(self, u: np.ndarray) -> np.ndarray:
        """``Λ⁻¹(u)`` for ``0 < u <= Λ(duration)``, vectorised."""
        cum = self._cum()
        seg = np.searchsorted(cum, u, side="left") - 1
        seg = np.clip(seg, 0, len(self.segments) - 1)
        s = np.array(self.segments)
        t0, t1, ra, rb = s[seg, 0], s[seg, 1], s[seg, 2], s[seg, 3]
        a = (rb - ra) / np.where(t1 > t0, t1 - t0, 1.0)
        du = u - cum[seg]
        root = np.sqrt(np.maximum(ra * ra + 2.0 * a * du, 0.0))
        denom = ra + root
        step = np.where(denom > 0, 2.0 * du / np.where(denom > 0, denom, 1.0), 0.0)
        return np.minimum(t0 + step, t1)

    def cumulative(self, t: float) -> float:
        """``Λ(t)``: expected requests in ``[0, t)``."""
        total = 0.0
        for t0, t1, ra, rb in self.segments:
            if t <= t0:
                break
            tt = min(t, t1)
            a = (rb - ra) / (t1 - t0) if t1 > t0 else 0.0
            total += ra * (tt - t0) + 0.5 * a * (tt - t0) ** 2
        return total


def parse_profile(spec: str, duration: float | None) -> RateProfile:
    """Parse ``--rate`` (see module docstring). ``duration`` None: 60 s (or the replay file's)."""
    s = str(spec).strip()
    kind, sep, rest = s.partition(":")
    kind = kind.lower() if sep else "constant"
    rest = rest if sep else s
    where = f"--rate {spec!r}"
    if kind == "replay":
        return _replay(rest, duration, spec)
    D = 60.0 if duration is None else duration
    if D <= 0:
        raise InputError(f"--duration {D}: must be > 0")
    if kind == "constant":
        r = parse_rate(rest, where)
        return RateProfile(((0.0, D, r, r),), s)
    if kind == "ramp":
        a, dots, b = rest.partition("..")
        if not dots:
            raise InputError(f"{where}: use ramp:FROM..TO, e.g. ramp:100..1000")
        ra, rb = parse_rate(a, where), parse_rate(b, where)
        return RateProfile(((0.0, D, ra, rb),), s)
    if kind == "step":
        levels, at, hold = rest.partition("@")
        if not at:
            raise InputError(f"{where}: use step:R1,R2,...@HOLD, e.g. step:100,200,400@10s")
        rates = [parse_rate(x, where) for x in levels.split(",") if x.strip()]
        h = parse_duration(hold, where)
        if not rates or h <= 0:
            raise InputError(f"{where}: needs at least one rate and a hold > 0")
        segs, t = [], 0.0
        for i, r in enumerate(rates):
            end = D if i == len(rates) - 1 else min(D, t + h)
            if end > t:
                segs.append((t, end, r, r))
            t = end
        return RateProfile(tuple(segs), s)
    if kind == "burst":
        levels, at, timing = rest.partition("@")
        every, slash, length = timing.partition("/")
        parts = [x for x in levels.split(",") if x.strip()]
        if not at or not slash or len(parts) != 2:
            raise InputError(f"{where}: use burst:BASE,PEAK@EVERY/FOR, e.g. burst:100,2000@10s/1s")
        base, peak = parse_rate(parts[0], where), parse_rate(parts[1], where)
        ev, ln = parse_duration(every, where), parse_duration(length, where)
        if ev <= 0 or not 0 < ln < ev:
            raise InputError(f"{where}: need 0 < FOR < EVERY")
        segs, t, k = [], 0.0, 1
        while t < D:
            b0 = k * ev
            if b0 >= D:
                segs.append((t, D, base, base))
                break
            segs.append((t, b0, base, base))
            b1 = min(D, b0 + ln)
            segs.append((b0, b1, peak, peak))
            t, k = b1, k + 1
        return RateProfile(tuple(x for x in segs if x[1] > x[0]), s)
    raise InputError(f"{where}: unknown profile {kind!r}; use N, ramp:A..B, step:A,B@10s, burst:B,P@10s/1s, replay:FILE")


def _replay(path: str, duration: float | None, spec: str) -> RateProfile:
    rows: list[tuple[float, float]] = []
    for no, row in read_rows(path, "--rate replay", "CSV 't,rate'"):
        if len(row) < 2:
            raise InputError(f"{path} line {no}: expected 't,rate'")
        try:
            t, r = float(row[0]), float(row[1])
        except ValueError:
            if no == 1:
                continue  # header
            raise InputError(f"{path} line {no}: {row!r} is not 't,rate' numbers") from None
        if r < 0 or not math.isfinite(r) or not math.isfinite(t):
            raise InputError(f"{path} line {no}: rate must be a finite number >= 0")
        if rows and t <= rows[-1][0]:
            raise InputError(f"{path} line {no}: t {t} is not after the previous row's {rows[-1][0]}")
        rows.append((t, r))
    if not rows:
        raise InputError(f"{path}: no 't,rate' rows")
    t_first = rows[0][0]
    rows = [(t - t_first, r) for t, r in rows]
    if duration is None:
        duration = rows[-1][0] + (rows[-1][0] - rows[-2][0] if len(rows) > 1 else 60.0)
    segs = []
    for i, (t, r) in enumerate(rows):
        end = rows[i + 1][0] if i + 1 < len(rows) else duration
        end = min(end, duration)
        if end > t:
            segs.append((t, end, r, r))
    if not segs:
        raise InputError(f"--rate {spec!r}: --duration {duration} ends before the first row")
    return RateProfile(tuple(segs), spec)


class Schedule:
    """Arrival offsets (seconds from start) for a profile and a spacing process."""

    def __init__(self, profile: RateProfile, spacing: str = "constant", seed: int = 1, chunk: int = 8192) -> None:
        if spacing not in SPACINGS:
            raise InputError(f"--arrivals {spacing!r}: use one of {', '.join(SPACINGS)}")
        self.profile, self.spacing, self.seed, self.chunk = profile, spacing, seed, chunk

    @property
    def expected(self) -> float:
        return self.profile.expected

    def capacity_hint(self) -> int:
        """An upper bound on the count, for preallocating arrays (mean + 6 sigma for Poisson)."""
        n = self.expected
        return int(n + (6 * math.sqrt(n) + 16 if self.spacing == "poisson" else 2))

    def chunks(self) -> Iterator[np.ndarray]:
        total = self.expected
        if total <= 0:
            return
        rng = np.random.default_rng(self.seed)
        base = 0.0
        k = 0
        while True:
            if self.spacing == "constant":
                u = np.arange(k, k + self.chunk, dtype=np.float64) + 0.5
                k += self.chunk
            else:
                u = base + np.cumsum(rng.exponential(1.0, self.chunk))
                base = float(u[-1])
            u = u[u <= total]
            if len(u):
                t = self.profile.invert(u)
                t = t[t < self.profile.duration]
                if len(t):
                    yield t
            if len(u) < self.chunk:
                return
