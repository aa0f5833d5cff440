"""Fault injection for the audit sink: how a slow, failing or absent webhook backend behaves.

The kube-apiserver webhook client (spec §3) retries *any* error up to 5 times with 10 s, 15 s,
22.5 s, 33.75 s backoff and a 30 s per-attempt timeout, so the faults that matter to it are:

* **latency**: each request is held for a sampled time before it is answered. Fixed
  (``200ms``) or drawn from a distribution (``lognormal:median=100ms,p99=1s``,
  ``exponential:mean=50ms``, ``uniform:min=10ms,max=90ms``, ``normal:mean=100ms,sd=20ms``
  truncated at 0). ``latency_per_inflight`` adds that much per *other* request in flight, a
  simple model of a backend that slows down under concurrency (M/G/1-ish contention).
* **errors**: each request fails with ``error_status`` with probability ``error_rate``.
* **hangs**: with probability ``hang_rate`` a request is held ``hang_for`` and then the
  connection is closed with no response (the apiserver's 30 s client timeout fires first
  when ``hang_for`` >= 30 s).
* **outage windows** ``START-END[:refuse|hang|CODE]`` relative to sink start: ``refuse`` closes
  the listening socket for the window (connection refused) and drops requests on open
  keep-alive connections; ``hang`` holds requests until the window ends then closes the
  connection; a status code answers every request with it (default ``503``).
* **limits**: ``max_body_bytes`` answers 413 for larger bodies (Falco's default is 12 MiB);
  ``max_concurrency`` answers 429 to requests beyond N in flight.

Every random draw comes from one ``numpy`` generator seeded with ``seed``, so a run with the
same arrival order makes the same decisions.
"""
from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field

import numpy as np

from audit_tune.basics.errors import InputError
from audit_tune.basics.jsondata import JsonObject
from audit_tune.sim.units import format_duration, parse_duration, parse_size

OUTAGE_MODES = ("refuse", "hang")
_Z99 = 2.3263478740408408  # standard normal quantile at 0.99


@dataclass(frozen=True)
class Latency:
    """A latency distribution in seconds. ``kind`` is fixed, uniform, exponential, normal or lognormal."""

    kind: str = "fixed"
    params: tuple[tuple[str, float], ...] = (("value", 0.0),)

    @property
    def p(self) -> dict[str, float]:
        return dict(self.params)

    def sample(self, rng: np.random.Generator) -> float:
        p = self.p
        if self.kind == "fixed":
            return p["value"]
        if self.kind == "uniform":
            return float(rng.uniform(p["min"], p["max"]))
        if self.kind == "exponential":
            return float(rng.exponential(p["mean"]))
        if self.kind == "normal":
            return max(0.0, float(rng.normal(p["mean"], p["sd"])))
        if self.kind == "lognormal":
            return float(p["median"] * math.exp(p["sigma"] * rng.standard_normal()))
        raise AssertionError(self.kind)  # pragma: no cover

    def describe(self) -> str:
        if self.kind == "fixed":
            return format_duration(self.p["value"])
        return self.kind + ":" + ",".join(
            f"{k}={v:g}" if k == "sigma" else f"{k}={format_duration(v)}" for k, v in self.params)


_LAT_KEYS = {
    "uniform": ({"min", "max"}, set()),
    "exponential": ({"mean"}, set()),
    "normal": ({"mean", "sd"}, set()),
    "lognormal": ({"median"}, {"p99", "sigma"}),
}


def parse_latency(text: str, what: str = "--latency") -> Latency:
    """``200ms`` | ``KIND:key=value,...`` (see module docstring)."""
    s = str(text).strip()
    if ":" not in s:
        return Latency("fixed", (("value", parse_duration(s, what)),))
    kind, _, rest = s.partition(":")
    kind = kind.strip().lower()
    if kind not in _LAT_KEYS:
        raise InputError(f"{what} {text!r}: unknown distribution {kind!r}; use a duration or one of "
                         "uniform:min=,max= | exponential:mean= | normal:mean=,sd= | lognormal:median=,p99=")
    params: dict[str, float] = {}
    for item in filter(None, (x.strip() for x in rest.split(","))):
        k, eq, v = item.partition("=")
        if not eq:
            raise InputError(f"{what} {text!r}: {item!r} is not key=value")
        k = k.strip().lower()
        params[k] = float(v) if k == "sigma" else parse_duration(v, f"{what} {k}")
    required, optional = _LAT_KEYS[kind]
    missing = required - set(params)
    unknown = set(params) - required - optional
    if missing or unknown:
        raise InputError(f"{what} {text!r}: {kind} needs {', '.join(sorted(required))}"
                         + (f" (optional {', '.join(sorted(optional))})" if optional else "")
                         + (f"; unknown {', '.join(sorted(unknown))}" if unknown else ""))
    if kind == "uniform" and params["max"] < params["min"]:
        raise InputError(f"{what} {text!r}: max must be >= min")
    if kind == "lognormal":
        if params["median"] <= 0:
            raise InputError(f"{what} {text!r}: median must be > 0")
        if "p99" in params:
            if params["p99"] < params["median"]:
                raise InputError(f"{what} {text!r}: p99 must be >= median")
            params = {"median": params["median"], "sigma": math.log(params["p99"] / params["median"]) / _Z99}
        params.setdefault("sigma", 0.0)
        if params["sigma"] < 0:
            raise InputError(f"{what} {text!r}: sigma must be >= 0")
        return Latency(kind, (("median", params["median"]), ("sigma", params["sigma"])))
    order = {"uniform": ("min", "max"), "exponential": ("mean",), "normal": ("mean", "sd")}[kind]
    return Latency(kind, tuple((k, params[k]) for k in order))


@dataclass(frozen=True)
class Outage:
    """A window ``[start, end)`` seconds after sink start; ``mode`` is refuse, hang or an HTTP status."""

    start: float
    end: float
    mode: str = "503"

    @property
    def status(self) -> int | None:
        return int(self.mode) if self.mode.isdigit() else None

    def describe(self) -> str:
        return f"{format_duration(self.start)}-{format_duration(self.end)}:{self.mode}"


_OUTAGE_RE = re.compile(r"^\s*([^-:]+)\s*-\s*([^-:]+?)\s*(?::\s*(\w+))?\s*$")


def parse_outage(text: str, what: str = "--outage") -> Outage:
    """``10s-40s`` (503), ``10s-40s:refuse``, ``10s-40s:hang``, ``10s-40s:500``."""
    m = _OUTAGE_RE.match(str(text))
    if not m:
        raise InputError(f"{what} {text!r}: use START-END[:refuse|hang|CODE], e.g. 10s-40s:503")
    start = parse_duration(m.group(1), f"{what} start")
    end = parse_duration(m.group(2), f"{what} end")
    if end <= start:
        raise InputError(f"{what} {text!r}: end must be after start")
    mode = (m.group(3) or "503").lower()
    if mode not in OUTAGE_MODES and not (mode.isdigit() and 100 <= int(mode) <= 599):
        raise InputError(f"{what} {text!r}: mode {mode!r} must be refuse, hang or an HTTP status 100-599")
    return Outage(start, end, mode)


@dataclass(frozen=True)
class FaultConfig:
    """Everything the sink does wrong on purpose. The default does nothing wrong."""

    latency: Latency = field(default_factory=Latency)
    latency_per_inflight: float = 0.0
    error_rate: float = 0.0
    error_status: int = 503
    hang_rate: float = 0.0
    hang_for: float = 60.0
    outages: tuple[Outage, ...] = ()
    max_body_bytes: int | None = None
    max_concurrency: int | None = None
    seed: int = 1

    def __post_init__(self) -> None:
        for name in ("error_rate", "hang_rate"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise InputError(f"--{name.replace('_', '-')} {v}: must be between 0 and 1")
        if not 100 <= self.error_status <= 599:
            raise InputError(f"--error-status {self.error_status}: must be an HTTP status 100-599")
        if self.max_concurrency is not None and self.max_concurrency < 1:
            raise InputError(f"--max-concurrency {self.max_concurrency}: must be >= 1")
        if self.max_body_bytes is not None and self.max_body_bytes < 1:
            raise InputError(f"--max-body-bytes {self.max_body_bytes}: must be >= 1")
        if self.latency_per_inflight < 0 or self.hang_for < 0:
            raise InputError("--latency-per-inflight and --hang-for must be >= 0")

    @classmethod
    def from_flags(cls, latency: str = "0s", latency_per_inflight: str = "0s", error_rate: float = 0.0,
                   error_status: int = 503, hang_rate: float = 0.0, hang_for: str = "60s",
                   outages: list[str] | tuple[str, ...] = (), max_body_bytes: str | None = None,
                   max_concurrency: int | None = None, seed: int = 1) -> FaultConfig:
        """Build from CLI strings (``--latency 200ms --outage 10s-40s:refuse --max-body-bytes 12MiB``)."""
        return cls(
            latency=parse_latency(latency),
            latency_per_inflight=parse_duration(latency_per_inflight, "--latency-per-inflight"),
            error_rate=float(error_rate), error_status=int(error_status),
            hang_rate=float(hang_rate), hang_for=parse_duration(hang_for, "--hang-for"),
            outages=tuple(parse_outage(o) for o in outages),
            max_body_bytes=parse_size(max_body_bytes, "--max-body-bytes") if max_body_bytes else None,
            max_concurrency=max_concurrency, seed=int(seed),
        )

    def to_dict(self) -> JsonObject:
        d: JsonObject = asdict(self)
        d["latency"] = self.latency.describe()
        d["outages"] = [o.describe() for o in self.outages]
        return d


@dataclass(frozen=True)
class Decision:
    """What to do with one request: wait ``delay`` s, then answer ``status`` (None = store and 200),
    or ``drop`` (close the connection without an answer)."""

    delay: float = 0.0
    status: int | None = None
    drop: bool = False
    reason: str = ""


class FaultInjector:
    """Draws a :class:`Decision` per request from a :class:`FaultConfig` and the sink's state."""

    def __init__(self, config: FaultConfig) -> None:
        self.config = config
        self.rng = np.random.default_rng(config.seed)

    def outage_at(self, t: float) -> Outage | None:
        for o in self.config.outages:
            if o.start <= t < o.end:
                return o
        return None

    def decide(self, t: float, inflight: int, body_bytes: int) -> Decision:
        """``t``: seconds since sink start; ``inflight``: requests in flight including this one."""
        c = self.config
        o = self.outage_at(t)
        if o is not None:
            if o.mode == "refuse":
                return Decision(drop=True, reason="outage-refuse")
            if o.mode == "hang":
                return Decision(delay=o.end - t, drop=True, reason="outage-hang")
            return Decision(status=o.status, reason="outage")
        if c.max_concurrency is not None and inflight > c.max_concurrency:
            return Decision(status=429, reason="max-concurrency")
        if c.max_body_bytes is not None and body_bytes > c.max_body_bytes:
            return Decision(status=413, reason="max-body-bytes")
        delay = c.latency.sample(self.rng) + c.latency_per_inflight * max(0, inflight - 1)
        if c.hang_rate and self.rng.random() < c.hang_rate:
            return Decision(delay=c.hang_for, drop=True, reason="hang")
        if c.error_rate and self.rng.random() < c.error_rate:
            return Decision(delay=delay, status=c.error_status, reason="error-rate")
        return Decision(delay=delay)
