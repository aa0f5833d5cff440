"""The Prometheus snapshot: everything the recommender needs, read once, stored as JSON.

``tune snapshot`` (``analysis.prom``) reads a Prometheus and writes one file in the format
``audit-tune-snapshot/v1`` (documented field by field in ``docs/snapshot.md``). The recommender
(``analysis.recommend``) consumes it without talking to Prometheus, so its math is testable offline.

API::

    snap = Snapshot.load("snap.json")         # InputError (exit 1) naming the file and field if invalid
    for name, inst in snap.instances.items():
        inst.event_rate.v                       # events/s, fine resolution
        inst.errors_increase.buffered           # events already dropped for a full buffer
        inst.webhook.p(0.99) if inst.webhook else None
    snap.missing                                # [Missing(instance, item, why, fix), ...]
    snap.save("copy.json")                      # atomic (temp file + rename)

Every number is a plain float (counts may be fractional: ``increase()`` extrapolates). Series are
``Series(t=[unix seconds], v=[values])`` of equal length, sorted by time, with no NaN/Inf.
Absent data is ``None`` in the instance *and* explained in ``missing``; it is never a silent 0.
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from audit_tune.analysis.snapshot_doc import (
    BucketsDoc,
    HistogramDoc,
    InstanceDoc,
    MissingDoc,
    PeakSeriesDoc,
    SeriesDoc,
    SnapshotDoc,
    SourceDoc,
    WebhookDoc,
)
from audit_tune.basics import files, jsondata, yamlsafe
from audit_tune.basics.errors import InputError
from audit_tune.basics.jsondata import JsonObject, JsonValue
from audit_tune.basics.output import write_atomic
from audit_tune.loadgen.metrics_text import bucket_quantile

FORMAT = "audit-tune-snapshot/v1"
ERROR_PLUGINS = ("buffered", "webhook", "log", "truncate")
LEVELS = ("None", "Metadata", "Request", "RequestResponse")
# optional top-level sections other readers own: the request mix (analysis.policy_impact) and what an
# audit log added (analysis.auditlog.build); kept through load and save, validated by their readers
EXTRA_KEYS = ("request_mix", "audit_log")

T = TypeVar("T")

MAX_VALUE = 1e15  # above any rate, count, size or timestamp a snapshot can hold


def _num(v: JsonValue, where: str) -> float:
    """A finite, non-negative, plausible number: every value in a snapshot is a timestamp, a rate,
    a counter increase, a size or a bucket bound, none of which is negative."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise InputError(f"{where}: want a number, got {type(v).__name__}")
    try:
        f = float(v)
    except OverflowError:
        f = math.inf
    if not math.isfinite(f):
        raise InputError(f"{where}: {v!r} is not a finite number")
    if f < 0:
        raise InputError(f"{where}: {f:g} is negative; rates, counter increases and times cannot be")
    if f > MAX_VALUE:
        raise InputError(f"{where}: {f:g} is implausibly large (above {MAX_VALUE:g})")
    return f


def _obj(d: JsonValue, where: str) -> JsonObject:
    if not isinstance(d, dict):
        raise InputError(f"{where}: want an object, got {type(d).__name__}")
    return d


def _nums(v: JsonValue, where: str) -> list[float]:
    if not isinstance(v, list):
        raise InputError(f"{where}: want a list of numbers")
    return [_num(x, f"{where}[{i}]") for i, x in enumerate(v)]


@dataclass
class Series:
    """A time series: ``t`` unix seconds (ascending), ``v`` values (same length)."""

    t: list[float] = field(default_factory=list)
    v: list[float] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.t)

    @property
    def max(self) -> float:
        return max(self.v) if self.v else 0.0

    @property
    def mean(self) -> float:
        return sum(self.v) / len(self.v) if self.v else 0.0

    def to_dict(self) -> SeriesDoc:
        return {"t": list(self.t), "v": list(self.v)}

    @classmethod
    def from_dict(cls, d: JsonValue, where: str) -> Series:
        o = _obj(d, where)
        t, v = _nums(o.get("t"), f"{where}.t"), _nums(o.get("v"), f"{where}.v")
        if len(t) != len(v):
            raise InputError(f"{where}: t has {len(t)} points but v has {len(v)}")
        if any(b < a for a, b in zip(t, t[1:])):
            raise InputError(f"{where}.t: timestamps must be ascending")
        return cls(t, v)


@dataclass
class PeakSeries(Series):
    """A short-window rate series (``window`` e.g. "10s"): peaks the fine series would average away."""

    window: str = "10s"

    def to_dict(self) -> PeakSeriesDoc:  # type: ignore[override]
        return {"window": self.window, "t": list(self.t), "v": list(self.v)}

    @classmethod
    def from_dict(cls, d: JsonValue, where: str) -> PeakSeries:
        s = Series.from_dict(d, where)
        w = _obj(d, where).get("window")
        if not isinstance(w, str) or not w:
            raise InputError(f"{where}.window: want a duration string such as '10s'")
        return cls(s.t, s.v, w)


@dataclass
class Histogram:
    """A Prometheus histogram: upper bounds ``le`` (ascending, last may be inf) and cumulative counts."""

    le: list[float] = field(default_factory=list)
    cum: list[float] = field(default_factory=list)
    sum: float = 0.0
    count: float = 0.0

    def quantile(self, q: float) -> float | None:
        """``histogram_quantile`` semantics (linear inside a bucket); None when empty."""
        return bucket_quantile(q, list(zip(self.le, self.cum)))

    @property
    def mean(self) -> float | None:
        return self.sum / self.count if self.count > 0 else None

    def buckets(self) -> BucketsDoc:
        return {"le": [_le_out(x) for x in self.le], "cum": list(self.cum)}

    def to_dict(self) -> HistogramDoc:
        return {"le": [_le_out(x) for x in self.le], "cum": list(self.cum), "sum": self.sum, "count": self.count}

    @classmethod
    def from_dict(cls, d: JsonValue, where: str) -> Histogram:
        o = _obj(d, where)
        return cls.from_parts(o.get("le"), o.get("cum"), o.get("sum", 0.0), o.get("count", 0.0), where)

    @classmethod
    def from_parts(cls, le: JsonValue, cum: JsonValue, s: JsonValue, c: JsonValue, where: str) -> Histogram:
        if not isinstance(le, list):
            raise InputError(f"{where}.le: want a list of bucket bounds")
        les = [_le_in(x, f"{where}.le[{i}]") for i, x in enumerate(le)]
        cums = _nums(cum, f"{where}.cum")
        if len(les) != len(cums):
            raise InputError(f"{where}: le has {len(les)} bounds but cum has {len(cums)}")
        if any(b <= a for a, b in zip(les, les[1:])):
            raise InputError(f"{where}.le: bounds must be strictly ascending")
        return cls(les, cums, _num(s, f"{where}.sum"), _num(c, f"{where}.count"))


def _le_out(x: float) -> float | str:
    return "+Inf" if math.isinf(x) else x


def _le_in(x: JsonValue, where: str) -> float:
    if x in ("+Inf", "Inf", "inf"):
        return math.inf
    return _num(x, where)


@dataclass
class Errors:
    """``increase(apiserver_audit_error_total[window])`` by plugin: events lost, by cause."""

    buffered: float = 0.0
    webhook: float = 0.0
    log: float = 0.0
    truncate: float = 0.0

    @property
    def total(self) -> float:
        return self.buffered + self.webhook + self.log + self.truncate

    def to_dict(self) -> dict[str, float]:
        return {p: getattr(self, p) for p in ERROR_PLUGINS}

    @classmethod
    def from_dict(cls, d: JsonValue, where: str) -> Errors:
        o = _obj(d, where)
        return cls(**{p: _num(o.get(p, 0.0), f"{where}.{p}") for p in ERROR_PLUGINS})


@dataclass
class Webhook:
    """What the apiserver's rest client saw of the audit webhook (``host`` = ``host:port``).

    ``duration`` is ``rest_client_request_duration_seconds{verb="POST",host}`` (one observation per
    outer attempt, including Retry-After retries, excluding backoff sleeps); ``size`` is
    ``rest_client_request_size_bytes`` (batch body bytes); ``requests_by_code`` is
    ``rest_client_requests_total`` by ``code`` (``<error>`` = transport error), every round trip;
    ``retries_by_code`` is ``rest_client_request_retries_total{verb="POST",host}`` by ``code``, the
    round trips after the first inside one attempt (Retry-After retries, ``analysis/retries.py``),
    ``None`` when Prometheus has no such series. All are increases over the window.
    """

    host: str
    duration: Histogram
    requests_by_code: dict[str, float]
    size: Histogram | None = None
    retries_by_code: dict[str, float] | None = None

    def p(self, q: float) -> float | None:
        return self.duration.quantile(q)

    @property
    def error_ratio(self) -> float:
        total = sum(self.requests_by_code.values())
        bad = sum(v for k, v in self.requests_by_code.items() if not k.startswith("2"))
        return bad / total if total > 0 else 0.0

    def to_dict(self) -> WebhookDoc:
        size = self.size
        return {"host": self.host, "duration_buckets": self.duration.buckets(),
                "duration_sum": self.duration.sum, "duration_count": self.duration.count,
                "requests_by_code": dict(self.requests_by_code),
                "retries_by_code": dict(self.retries_by_code) if self.retries_by_code is not None else None,
                "size_buckets": size.buckets() if size is not None else None,
                "size_sum": size.sum if size is not None else None,
                "size_count": size.count if size is not None else None}

    @classmethod
    def from_dict(cls, dv: JsonValue, where: str) -> Webhook:
        d = _obj(dv, where)
        host = d.get("host")
        if not isinstance(host, str) or not host:
            raise InputError(f"{where}.host: want 'host:port'")
        db = _obj(d.get("duration_buckets"), f"{where}.duration_buckets")
        dur = Histogram.from_parts(db.get("le"), db.get("cum"), d.get("duration_sum", 0.0),
                                   d.get("duration_count", 0.0), f"{where}.duration")
        codes = {str(k): _num(v, f"{where}.requests_by_code.{k}")
                 for k, v in _obj(d.get("requests_by_code", {}), f"{where}.requests_by_code").items()}
        size = None
        if d.get("size_buckets") is not None:
            sb = _obj(d["size_buckets"], f"{where}.size_buckets")
            size = Histogram.from_parts(sb.get("le"), sb.get("cum"), d.get("size_sum", 0.0),
                                        d.get("size_count", 0.0), f"{where}.size")
        retries = None
        if d.get("retries_by_code") is not None:
            retries = {str(k): _num(v, f"{where}.retries_by_code.{k}")
                       for k, v in _obj(d["retries_by_code"], f"{where}.retries_by_code").items()}
        return cls(host, dur, codes, size, retries)


@dataclass
class InstanceData:
    """One kube-apiserver (Prometheus ``instance`` label). See docs/snapshot.md for each field."""

    cluster: str = ""
    event_rate: Series = field(default_factory=Series)
    event_rate_peak: PeakSeries | None = None
    events_increase: float = 0.0
    errors_increase: Errors = field(default_factory=Errors)
    level_increase: dict[str, float] = field(default_factory=lambda: {lv: 0.0 for lv in LEVELS})
    requests_rejected_increase: float = 0.0
    request_rate: Series | None = None
    requests_by_verb: dict[str, float] | None = None
    webhook: Webhook | None = None
    audit_filter_latency: Histogram | None = None
    memory_bytes: Series | None = None

    @property
    def long_running_share(self) -> float | None:
        """Share of requests that are long-running (watch, connect); None without verb data."""
        if not self.requests_by_verb:
            return None
        total = sum(self.requests_by_verb.values())
        lr = sum(v for k, v in self.requests_by_verb.items() if k.lower() in ("watch", "connect"))
        return lr / total if total > 0 else None

    def to_dict(self) -> InstanceDoc:
        return {
            "cluster": self.cluster,
            "event_rate": self.event_rate.to_dict(),
            "event_rate_peak": self.event_rate_peak.to_dict() if self.event_rate_peak else None,
            "events_increase": self.events_increase,
            "errors_increase": self.errors_increase.to_dict(),
            "level_increase": {lv: self.level_increase.get(lv, 0.0) for lv in LEVELS},
            "requests_rejected_increase": self.requests_rejected_increase,
            "request_rate": self.request_rate.to_dict() if self.request_rate else None,
            "requests_by_verb": dict(self.requests_by_verb) if self.requests_by_verb is not None else None,
            "webhook": self.webhook.to_dict() if self.webhook else None,
            "audit_filter_latency": self.audit_filter_latency.to_dict() if self.audit_filter_latency else None,
            "memory_bytes": self.memory_bytes.to_dict() if self.memory_bytes else None,
        }

    @classmethod
    def from_dict(cls, dv: JsonValue, where: str) -> InstanceData:
        d = _obj(dv, where)

        def opt(key: str, fn: Callable[[JsonValue, str], T]) -> T | None:
            v = d.get(key)
            return None if v is None else fn(v, f"{where}.{key}")

        lv = _obj(d.get("level_increase", {}), f"{where}.level_increase")
        verbs = opt("requests_by_verb", lambda v, w: {str(k): _num(x, f"{w}.{k}") for k, x in _obj(v, w).items()})
        cluster = d.get("cluster", "")
        if not isinstance(cluster, str):
            raise InputError(f"{where}.cluster: want a string")
        if "event_rate" not in d:
            raise InputError(f"{where}.event_rate: missing")
        return cls(
            cluster=cluster,
            event_rate=Series.from_dict(d["event_rate"], f"{where}.event_rate"),
            event_rate_peak=opt("event_rate_peak", PeakSeries.from_dict),
            events_increase=_num(d.get("events_increase", 0.0), f"{where}.events_increase"),
            errors_increase=Errors.from_dict(d.get("errors_increase", {}), f"{where}.errors_increase"),
            level_increase={k: _num(lv.get(k, 0.0), f"{where}.level_increase.{k}") for k in LEVELS},
            requests_rejected_increase=_num(d.get("requests_rejected_increase", 0.0),
                                            f"{where}.requests_rejected_increase"),
            request_rate=opt("request_rate", Series.from_dict),
            requests_by_verb=verbs,
            webhook=opt("webhook", Webhook.from_dict),
            audit_filter_latency=opt("audit_filter_latency", Histogram.from_dict),
            memory_bytes=opt("memory_bytes", Series.from_dict),
        )


@dataclass
class Missing:
    """One explained gap: ``instance`` (or ``*`` for all), the ``item`` (series), ``why``, and ``fix``."""

    instance: str
    item: str
    why: str
    fix: str = ""

    def __str__(self) -> str:
        who = "all instances" if self.instance == "*" else f"instance {self.instance}"
        return f"{self.item} ({who}): {self.why}" + (f"; fix: {self.fix}" if self.fix else "")

    def to_dict(self) -> MissingDoc:
        return {"instance": self.instance, "item": self.item, "why": self.why, "fix": self.fix}

    @classmethod
    def from_dict(cls, dv: JsonValue, where: str) -> Missing:
        d = _obj(dv, where)
        vals: dict[str, str] = {}
        for k in ("instance", "item", "why", "fix"):
            v = d.get(k, "")
            if not isinstance(v, str):
                raise InputError(f"{where}.{k}: want a string")
            vals[k] = v
        if not vals["item"] or not vals["why"]:
            raise InputError(f"{where}: item and why are required")
        return cls(**vals)


@dataclass
class Window:
    start: float
    end: float
    step: float

    @property
    def seconds(self) -> float:
        return self.end - self.start


@dataclass
class Source:
    prometheus_url: str
    window: Window
    cluster_label: str | None = None
    selector: str = ""

    def to_dict(self) -> SourceDoc:
        return {"prometheus_url": self.prometheus_url,
                "window": {"start": self.window.start, "end": self.window.end, "step": self.window.step},
                "cluster_label": self.cluster_label, "selector": self.selector}


@dataclass
class Snapshot:
    """A whole snapshot file. ``instances`` keyed by the Prometheus ``instance`` label."""

    source: Source
    instances: dict[str, InstanceData] = field(default_factory=dict)
    missing: list[Missing] = field(default_factory=list)
    tool_version: str = ""
    recorded_at: float = 0.0
    format: str = FORMAT
    extras: dict[str, JsonObject] = field(default_factory=dict)  # optional top-level keys kept as read (EXTRA_KEYS)

    @property
    def usable(self) -> bool:
        """At least one instance with audit event data."""
        return any(len(i.event_rate) > 0 for i in self.instances.values())

    def clusters(self) -> dict[str, list[str]]:
        """Instance names grouped by cluster value."""
        out: dict[str, list[str]] = {}
        for name, inst in sorted(self.instances.items()):
            out.setdefault(inst.cluster, []).append(name)
        return out

    def missing_for(self, instance: str) -> list[Missing]:
        return [m for m in self.missing if m.instance in (instance, "*")]

    def to_dict(self) -> dict[str, Any]:
        """The document (:class:`~analysis.snapshot_doc.SnapshotDoc`) as a plain dict, which callers
        extend with sections of their own (``request_mix``)."""
        d: SnapshotDoc = {"format": self.format, "tool_version": self.tool_version, "recorded_at": self.recorded_at,
                          "source": self.source.to_dict(),
                          "instances": {k: v.to_dict() for k, v in sorted(self.instances.items())},
                          "missing": [m.to_dict() for m in self.missing]}
        if "request_mix" in self.extras:
            d["request_mix"] = self.extras["request_mix"]
        if "audit_log" in self.extras:
            d["audit_log"] = self.extras["audit_log"]
        return dict(d)

    def dumps(self) -> str:
        return json.dumps(self.to_dict(), indent=1, allow_nan=False) + "\n"

    def save(self, path: str | os.PathLike) -> None:
        """Write atomically: a temp file in the same folder, fsync, rename."""
        write_atomic(Path(path), self.dumps())

    @classmethod
    def from_dict(cls, dv: JsonValue, where: str = "snapshot") -> Snapshot:
        d = _obj(dv, where)
        fmt = d.get("format")
        if fmt != FORMAT:
            raise InputError(f"{where}: format {fmt!r} is not {FORMAT!r} (record it again with 'tune snapshot')")
        src = _obj(d.get("source"), f"{where}.source")
        w = _obj(src.get("window"), f"{where}.source.window")
        url = src.get("prometheus_url", "")
        cl = src.get("cluster_label")
        if cl is not None and not isinstance(cl, str):
            raise InputError(f"{where}.source.cluster_label: want a string or null")
        source = Source(str(url), Window(_num(w.get("start"), f"{where}.source.window.start"),
                                         _num(w.get("end"), f"{where}.source.window.end"),
                                         _num(w.get("step"), f"{where}.source.window.step")),
                        cl, str(src.get("selector", "") or ""))
        if source.window.step <= 0:
            raise InputError(f"{where}.source.window.step: {source.window.step:g} must be > 0")
        if source.window.end <= source.window.start:
            raise InputError(f"{where}.source.window.end: {source.window.end:g} is not after start "
                             f"{source.window.start:g}")
        insts = {str(k): InstanceData.from_dict(v, f"{where}.instances.{k}")
                 for k, v in _obj(d.get("instances", {}), f"{where}.instances").items()}
        miss = d.get("missing", [])
        if not isinstance(miss, list):
            raise InputError(f"{where}.missing: want a list")
        return cls(source=source, instances=insts,
                   missing=[Missing.from_dict(m, f"{where}.missing[{i}]") for i, m in enumerate(miss)],
                   tool_version=str(d.get("tool_version", "")),
                   recorded_at=_num(d.get("recorded_at", 0.0), f"{where}.recorded_at"), format=FORMAT,
                   extras={k: _obj(d[k], f"{where}.{k}") for k in EXTRA_KEYS if d.get(k) is not None})

    @classmethod
    def load(cls, path: str | os.PathLike) -> Snapshot:
        p = Path(path)
        if not p.exists():
            raise InputError(f"snapshot {p}: no such file (record one with 'tune snapshot -p URL -o {p}')")
        text = yamlsafe.decode(files.read_bytes(p, "snapshot"), f"snapshot {p}")
        d = jsondata.loads(text, f"snapshot {p}", constants=True)  # from_dict names a non-finite field
        return cls.from_dict(d, str(p))


def sample_path() -> Path:
    """The bundled sample snapshot (``analysis/data/sample-snapshot.json``)."""
    return Path(__file__).parent / "data" / "sample-snapshot.json"
