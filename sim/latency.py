"""Latency distributions, sampled by inverse CDF from one uniform draw so engines agree exactly.

Syntax (CLI ``--webhook-latency``): ``200ms`` (fixed), ``lognormal:median=100ms,p99=1s``,
``uniform:min=50ms,max=150ms``, ``exp:mean=100ms``, ``empirical:10ms,20ms,35ms,1s`` (equally
likely values, e.g. quantiles read from a histogram).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from audit_tune.basics.errors import InputError
from audit_tune.sim.units import format_duration, parse_duration

_Z99 = 2.3263478740408408  # standard normal 0.99 quantile


_A = (-3.969683028665376e01, 2.209460984245205e02, -2.759285104469687e02,
      1.383577518672690e02, -3.066479806614716e01, 2.506628277459239e00)
_B = (-5.447609879822406e01, 1.615858368580409e02, -1.556989798598866e02,
      6.680131188771972e01, -1.328068155288572e01)
_C = (-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e00,
      -2.549732539343734e00, 4.374664141464968e00, 2.938163982698783e00)
_D = (7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e00, 3.754408661907416e00)


def ndtri(p: np.ndarray) -> np.ndarray:
    """Inverse standard normal CDF (Acklam's rational approximation, |err| < 1.2e-9), vectorised."""
    p = np.clip(np.asarray(p, dtype=float), 1e-300, 1 - 1e-16)
    out = np.empty_like(p)
    lo, hi = p < 0.02425, p > 1 - 0.02425
    mid = ~(lo | hi)
    q = p[mid] - 0.5
    r = q * q
    out[mid] = (((((_A[0] * r + _A[1]) * r + _A[2]) * r + _A[3]) * r + _A[4]) * r + _A[5]) * q / \
               (((((_B[0] * r + _B[1]) * r + _B[2]) * r + _B[3]) * r + _B[4]) * r + 1)
    for mask, sign, pp in ((lo, 1.0, p[lo]), (hi, -1.0, 1 - p[hi])):
        q = np.sqrt(-2 * np.log(pp))
        out[mask] = sign * (((((_C[0] * q + _C[1]) * q + _C[2]) * q + _C[3]) * q + _C[4]) * q + _C[5]) / \
                    ((((_D[0] * q + _D[1]) * q + _D[2]) * q + _D[3]) * q + 1)
    return out


@dataclass(frozen=True)
class Latency:
    """A latency distribution. ``sample(u)`` maps a uniform draw to seconds."""

    kind: str = "fixed"  # fixed | lognormal | uniform | exp | empirical
    a: float = 0.0  # fixed: value; lognormal: median; uniform: min; exp: mean
    b: float = 0.0  # lognormal: p99; uniform: max
    values: tuple[float, ...] = ()

    def sample(self, u: float) -> float:
        """One draw. Goes through :meth:`sample_array` so every engine gets the same bits."""
        if self.kind == "fixed":
            return self.a
        return float(self.sample_array(np.array([u]))[0])

    def sample_array(self, u: npt.ArrayLike) -> npt.NDArray[np.float64]:
        u = np.asarray(u, dtype=float)
        k = self.kind
        if k == "fixed":
            return np.full(u.shape, self.a)
        if k == "uniform":
            return self.a + (self.b - self.a) * u
        if k == "exp":
            exp_draw: npt.NDArray[np.float64] = -self.a * np.log1p(-u)  # ufuncs are typed to return Any
            return exp_draw
        if k == "lognormal":
            if self.a <= 0:
                return np.zeros(u.shape)
            sigma = math.log(self.b / self.a) / _Z99 if self.b > self.a else 0.0
            return self.a * np.exp(sigma * ndtri(u))
        if k == "empirical":
            v = np.asarray(self.values, dtype=float)
            return v[np.minimum((u * len(v)).astype(np.int64), len(v) - 1)]
        raise ValueError(k)

    @property
    def mean(self) -> float:
        k = self.kind
        if k == "fixed":
            return self.a
        if k == "uniform":
            return (self.a + self.b) / 2
        if k == "exp":
            return self.a
        if k == "lognormal":
            sigma = math.log(self.b / self.a) / _Z99 if self.b > self.a > 0 else 0.0
            return self.a * math.exp(sigma * sigma / 2)
        return sum(self.values) / len(self.values)

    def describe(self) -> str:
        k = self.kind
        if k == "fixed":
            return format_duration(self.a)
        if k == "uniform":
            return f"uniform:min={format_duration(self.a)},max={format_duration(self.b)}"
        if k == "exp":
            return f"exp:mean={format_duration(self.a)}"
        if k == "lognormal":
            return f"lognormal:median={format_duration(self.a)},p99={format_duration(self.b)}"
        return "empirical:" + ",".join(format_duration(v) for v in self.values)

    def to_dict(self) -> dict[str, str]:
        return {"spec": self.describe()}


def parse_latency(text: str, what: str = "--webhook-latency") -> Latency:
    s = str(text).strip()
    kind, _, rest = s.partition(":")
    if not rest:
        return Latency("fixed", parse_duration(s, what))
    kind = kind.lower()
    if kind == "empirical":
        vals = tuple(parse_duration(v, what) for v in rest.split(",") if v.strip())
        if not vals:
            raise InputError(f"{what}={s}: empirical needs at least one value, e.g. empirical:10ms,20ms,1s")
        return Latency("empirical", values=vals)
    params = {}
    for part in rest.split(","):
        k, eq, v = part.partition("=")
        if not eq:
            raise InputError(f"{what}={s}: expected key=value in {part!r}")
        params[k.strip().lower()] = parse_duration(v, f"{what} {k.strip()}")
    try:
        if kind == "lognormal":
            lat = Latency("lognormal", params["median"], params["p99"])
            if lat.b < lat.a:
                raise InputError(f"{what}={s}: p99 must be >= median")
            return lat
        if kind == "uniform":
            lat = Latency("uniform", params["min"], params["max"])
            if lat.b < lat.a:
                raise InputError(f"{what}={s}: max must be >= min")
            return lat
        if kind == "exp":
            return Latency("exp", params["mean"])
    except KeyError as e:
        raise InputError(f"{what}={s}: missing parameter {e.args[0]}") from None
    raise InputError(
        f"{what}={s}: unknown distribution {kind!r}; use 200ms, lognormal:median=..,p99=.., "
        "uniform:min=..,max=.., exp:mean=.. or empirical:v1,v2,..")
