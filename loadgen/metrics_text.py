"""Prometheus text exposition format (version 0.0.4): parse it, diff it, and write it.

Parsing: kube-apiserver's ``/metrics`` (and the sink's) is a list of samples, one per line::

    # HELP apiserver_audit_event_total [ALPHA] Counter of audit events generated and sent to the audit backend.
    # TYPE apiserver_audit_event_total counter
    apiserver_audit_event_total 1234
    apiserver_audit_error_total{plugin="webhook"} 0
    rest_client_request_duration_seconds_bucket{host="127.0.0.1:9443",verb="POST",le="0.005"} 3

:func:`parse` turns that into :class:`Sample` tuples (name, labels, value), keeping ``# TYPE``
lines so histograms can be regrouped. :func:`select`, :func:`total` and :func:`delta` answer the
questions the load test asks ("how many audit events between before and after, by level").
Counters that reset between two scrapes (apiserver restart) show as a negative delta; callers
should treat that as "unknown", :func:`delta` reports it in ``resets``.

Writing: :class:`Registry` holds a few counters, gauges and histograms and renders them; it is
all the sink needs, so the project does not depend on ``prometheus_client``.
"""
from __future__ import annotations

import bisect
import math
import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from audit_tune.basics.errors import InputError

Labels = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Sample:
    """One exposition line: metric name, sorted label pairs, value."""

    name: str
    labels: Labels
    value: float

    def label(self, key: str, default: str = "") -> str:
        for k, v in self.labels:
            if k == key:
                return v
        return default


@dataclass
class Metrics:
    """A parsed scrape: samples plus the ``# TYPE`` of each metric family."""

    samples: list[Sample] = field(default_factory=list)
    types: dict[str, str] = field(default_factory=dict)

    def select(self, name: str, **match: str) -> list[Sample]:
        """Samples named ``name`` whose labels equal every ``match`` item."""
        return [s for s in self.samples if s.name == name and all(s.label(k) == v for k, v in match.items())]

    def total(self, name: str, **match: str) -> float:
        return float(sum(s.value for s in self.select(name, **match)))

    def by_label(self, name: str, label: str, **match: str) -> dict[str, float]:
        out: dict[str, float] = {}
        for s in self.select(name, **match):
            key = s.label(label)
            out[key] = out.get(key, 0.0) + s.value
        return out

    def has(self, name: str) -> bool:
        return any(s.name == name for s in self.samples)


_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_LINE_RE = re.compile(rf"^({_NAME})(\{{(.*)\}})?\s+(\S+)(\s+\S+)?\s*$")
_LABEL_RE = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?')
_UNESCAPE = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}


def _unescape(s: str) -> str:
    return re.sub(r'\\[\\"n]', lambda m: _UNESCAPE[m.group(0)], s)


def _parse_value(text: str, where: str) -> float:
    t = text.strip()
    special = {"+Inf": math.inf, "-Inf": -math.inf, "NaN": math.nan, "Inf": math.inf}
    if t in special:
        return special[t]
    try:
        return float(t)
    except ValueError:
        raise InputError(f"{where}: {text!r} is not a sample value") from None


def parse_labels(body: str, where: str = "metrics") -> Labels:
    pairs: list[tuple[str, str]] = []
    pos = 0
    while pos < len(body):
        if body[pos:].strip() == "":
            break
        m = _LABEL_RE.match(body, pos)
        if not m:
            raise InputError(f"{where}: cannot parse labels {{{body}}}")
        pairs.append((m.group(1), _unescape(m.group(2))))
        pos = m.end()
    return tuple(sorted(pairs))


def parse(text: str, source: str = "metrics") -> Metrics:
    """Parse exposition text. Raises :class:`InputError` naming ``source`` and the line number."""
    out = Metrics()
    for no, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            parts = line.split(None, 3)
            if len(parts) >= 4 and parts[1] == "TYPE":
                out.types[parts[2]] = parts[3].strip()
            continue
        m = _LINE_RE.match(line)
        if not m:
            raise InputError(f"{source} line {no}: not a Prometheus sample: {line[:80]!r}")
        labels = parse_labels(m.group(3) or "", f"{source} line {no}")
        out.samples.append(Sample(m.group(1), labels, _parse_value(m.group(4), f"{source} line {no}")))
    return out


@dataclass
class Delta:
    """``after - before`` of every counter sample, by (name, labels); ``resets`` lists negative ones."""

    values: dict[tuple[str, Labels], float]
    resets: list[str]

    def total(self, name: str, **match: str) -> float:
        return float(sum(v for (n, labels), v in self.values.items()
                         if n == name and all(dict(labels).get(k, "") == w for k, w in match.items())))

    def by_label(self, name: str, label: str, **match: str) -> dict[str, float]:
        out: dict[str, float] = {}
        for (n, labels), v in self.values.items():
            d = dict(labels)
            if n == name and all(d.get(k, "") == w for k, w in match.items()):
                out[d.get(label, "")] = out.get(d.get(label, ""), 0.0) + v
        return out


def delta(before: Metrics, after: Metrics, names: Iterable[str] | None = None) -> Delta:
    """Per-series difference. A series absent before counts from 0 (it appeared during the run)."""
    wanted = set(names) if names is not None else None
    prev = {(s.name, s.labels): s.value for s in before.samples}
    values: dict[tuple[str, Labels], float] = {}
    resets: list[str] = []
    for s in after.samples:
        if wanted is not None and s.name not in wanted and _family(s.name) not in wanted:
            continue
        d = s.value - prev.get((s.name, s.labels), 0.0)
        if d < 0:
            resets.append(s.name + "{" + ",".join(f'{k}="{v}"' for k, v in s.labels) + "}")
        values[(s.name, s.labels)] = d
    return Delta(values, resets)


def _family(name: str) -> str:
    for suffix in ("_bucket", "_sum", "_count", "_total"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def histogram_from_delta(d: Delta, name: str, **match: str) -> dict:
    """Regroup ``name_bucket/_sum/_count`` deltas into ``{"buckets": [[le, cum], ...], "count", "sum",
    "mean", "p50", "p90", "p99"}`` (quantiles by linear interpolation inside buckets, as PromQL's
    ``histogram_quantile`` does)."""
    buckets: dict[float, float] = {}
    for (n, labels), v in d.values.items():
        if n != f"{name}_bucket":
            continue
        ld = dict(labels)
        if not all(ld.get(k, "") == w for k, w in match.items()):
            continue
        le = _parse_value(ld.get("le", "+Inf"), name)
        buckets[le] = buckets.get(le, 0.0) + v
    count = d.total(f"{name}_count", **match)
    total = d.total(f"{name}_sum", **match)
    pairs = sorted(buckets.items())
    out: dict = {"buckets": [[("+Inf" if math.isinf(le) else le), c] for le, c in pairs],
                 "count": count, "sum": total, "mean": (total / count) if count else None}
    for q in (0.5, 0.9, 0.99):
        out[f"p{int(q * 100)}"] = bucket_quantile(q, pairs)
    return out


def bucket_quantile(q: float, cumulative: list[tuple[float, float]]) -> float | None:
    """PromQL ``histogram_quantile`` over sorted ``(le, cumulative count)`` pairs."""
    if not cumulative or cumulative[-1][1] <= 0:
        return None
    rank = q * cumulative[-1][1]
    lo_le, lo_c = 0.0, 0.0
    for le, c in cumulative:
        if c >= rank:
            if math.isinf(le):
                return lo_le
            if c == lo_c:
                return le
            return lo_le + (le - lo_le) * (rank - lo_c) / (c - lo_c)
        lo_le, lo_c = le, c
    return lo_le


# --------------------------------------------------------------------------------------- writing

def _fmt(v: float) -> str:
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if v == int(v) and abs(v) < 1e15:
        return str(int(v))
    return repr(float(v))


def _esc(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels_text(labels: Mapping[str, str] | Labels) -> str:
    items = labels.items() if isinstance(labels, Mapping) else labels
    items = list(items)
    if not items:
        return ""
    return "{" + ",".join(f'{k}="{_esc(str(v))}"' for k, v in items) + "}"


class _Family:
    def __init__(self, name: str, help_: str, kind: str, label_names: tuple[str, ...]) -> None:
        self.name, self.help, self.kind, self.label_names = name, help_, kind, label_names

    def _key(self, labels: Mapping[str, str]) -> Labels:
        if set(labels) != set(self.label_names):
            raise ValueError(f"{self.name}: labels {sorted(labels)} != {sorted(self.label_names)}")
        return tuple((k, str(labels[k])) for k in self.label_names)


class Counter(_Family):
    """Monotonic counter, optionally labelled."""

    def __init__(self, name: str, help_: str, label_names: tuple[str, ...] = ()) -> None:
        super().__init__(name, help_, "counter", label_names)
        self.values: dict[Labels, float] = {} if label_names else {(): 0.0}
        self._lock = threading.Lock()

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        key = self._key(labels)
        with self._lock:
            self.values[key] = self.values.get(key, 0.0) + amount

    def get(self, **labels: str) -> float:
        return self.values.get(self._key(labels), 0.0)

    def lines(self) -> list[str]:
        with self._lock:
            items = sorted(self.values.items())
        return [f"{self.name}{_labels_text(k)} {_fmt(v)}" for k, v in items]


class Gauge(Counter):
    """A value that goes up and down."""

    def __init__(self, name: str, help_: str, label_names: tuple[str, ...] = ()) -> None:
        super().__init__(name, help_, label_names)
        self.kind = "gauge"

    def set(self, value: float, **labels: str) -> None:
        with self._lock:
            self.values[self._key(labels)] = float(value)


class Histogram(_Family):
    """Cumulative-bucket histogram (``_bucket{le}``, ``_sum``, ``_count``), unlabelled."""

    def __init__(self, name: str, help_: str, buckets: Iterable[float]) -> None:
        super().__init__(name, help_, "histogram", ())
        self.bounds = sorted(float(b) for b in buckets)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0
        self._lock = threading.Lock()

    def observe(self, value: float) -> None:
        with self._lock:
            self.counts[bisect.bisect_left(self.bounds, value)] += 1
            self.sum += value

    def lines(self) -> list[str]:
        with self._lock:
            counts, total = list(self.counts), self.sum
        out, cum = [], 0
        for le, c in zip(self.bounds + [math.inf], counts):
            cum += c
            out.append(f'{self.name}_bucket{{le="{_fmt(le)}"}} {cum}')
        out.append(f"{self.name}_sum {_fmt(total)}")
        out.append(f"{self.name}_count {cum}")
        return out


class Registry:
    """An ordered set of metric families rendered as one exposition document."""

    CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

    def __init__(self) -> None:
        self.families: list[_Family] = []

    def add(self, family: _Family) -> _Family:
        self.families.append(family)
        return family

    def render(self) -> str:
        out: list[str] = []
        for f in self.families:
            out.append(f"# HELP {f.name} {f.help}")
            out.append(f"# TYPE {f.name} {f.kind}")
            out.extend(f.lines())  # type: ignore[attr-defined]
        return "\n".join(out) + "\n"
