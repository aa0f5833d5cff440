"""The result of ``tune policy impact``: :class:`PolicyImpact`, built once by
:func:`analysis.policy_impact.impact_report` and rendered by the formatters registered for it
(:mod:`analysis.render.policy_impact`); :meth:`PolicyImpact.to_dict` is the ``-f json`` document.
"""
from __future__ import annotations

from dataclasses import dataclass

from audit_tune.basics.jsondata import JsonObject


@dataclass(frozen=True)
class ClassRow:
    """One request class under the policy: its level (rule), and its events (assumed and range)."""

    label: str
    scope: str
    requests: float
    rule_index: int | None
    level: str
    levels_possible: list[str]
    events: float
    events_range: list[float]
    bytes: float

    def to_dict(self) -> dict[str, object]:
        return {"class": self.label, "scope": self.scope, "requests": self.requests, "rule_index": self.rule_index,
                "level": self.level, "levels_possible": self.levels_possible, "events": self.events,
                "events_range": self.events_range, "bytes": self.bytes}


@dataclass(frozen=True)
class Peak:
    """The estimate at the observed burstiness (average x ``factor``)."""

    factor: float
    events_per_s: float
    bytes_per_s: float
    events_per_s_range: list[float]


@dataclass(frozen=True)
class RateEstimate:
    """One policy's estimate for one instance, as rates (per second of the window)."""

    policy: str
    assume_user: str
    window_seconds: float
    events_per_s: float
    bytes_per_s: float
    events_per_s_range: list[float]
    bytes_per_s_range: list[float]
    requests_per_s_by_level: dict[str, float]
    events_per_s_by_stage: dict[str, float]
    events_per_s_by_level: dict[str, float]
    mean_event_bytes: float | None
    size_factor: float
    peak: Peak | None = None

    def to_dict(self) -> dict[str, object]:
        d: dict[str, object] = {
            "policy": self.policy, "assume_user": self.assume_user, "window_seconds": self.window_seconds,
            "events_per_s": self.events_per_s, "bytes_per_s": self.bytes_per_s,
            "events_per_s_range": self.events_per_s_range, "bytes_per_s_range": self.bytes_per_s_range,
            "requests_per_s_by_level": self.requests_per_s_by_level,
            "events_per_s_by_stage": self.events_per_s_by_stage,
            "events_per_s_by_level": self.events_per_s_by_level,
            "mean_event_bytes": self.mean_event_bytes, "size_factor": self.size_factor,
        }
        if self.peak is not None:
            d["peak_factor"] = self.peak.factor
            d["events_per_s_peak"] = self.peak.events_per_s
            d["bytes_per_s_peak"] = self.peak.bytes_per_s
            d["events_per_s_peak_range"] = self.peak.events_per_s_range
        return d


@dataclass(frozen=True)
class LevelCheck:
    """Requests/s at one audit level: observed (``apiserver_audit_level_total``) and estimated."""

    observed_requests_per_s: float
    estimated_requests_per_s: float
    error: float | None

    def to_dict(self) -> dict[str, object]:
        return {"observed_requests_per_s": self.observed_requests_per_s,
                "estimated_requests_per_s": self.estimated_requests_per_s, "error": self.error}


@dataclass(frozen=True)
class Check:
    """The estimate for the policy in force against the observed audit counters."""

    policy: str
    observed_events_per_s: float | None
    estimated_events_per_s: float
    error: float | None
    observed_within_range: bool | None
    estimated_range: list[float]
    levels: dict[str, LevelCheck]
    note: str | None = None

    def to_dict(self) -> dict[str, object]:
        d: dict[str, object] = {
            "policy": self.policy, "observed_events_per_s": self.observed_events_per_s,
            "estimated_events_per_s": self.estimated_events_per_s, "error": self.error,
            "observed_within_range": self.observed_within_range, "estimated_range": self.estimated_range,
            "levels": {k: v.to_dict() for k, v in self.levels.items()},
        }
        if self.note is not None:
            d["note"] = self.note
        return d


@dataclass(frozen=True)
class Change:
    """POLICY's estimate over the ``--against`` policy's, on the same request mix."""

    events_ratio: float | None
    bytes_ratio: float | None

    def to_dict(self) -> dict[str, object]:
        return {"events_ratio": self.events_ratio, "bytes_ratio": self.bytes_ratio}


@dataclass(frozen=True)
class InstanceImpact:
    """One apiserver: POLICY's estimate, the ``--against`` one and the change, the check, the classes."""

    requests_per_s: float
    estimate: RateEstimate
    peak_source: str
    event_size_source: str
    classes: list[ClassRow]
    against: RateEstimate | None = None
    change: Change | None = None
    check: Check | None = None

    def to_dict(self) -> dict[str, object]:
        d: dict[str, object] = {
            "requests_per_s": self.requests_per_s, "estimate": self.estimate.to_dict(),
            "peak_source": self.peak_source, "event_size_source": self.event_size_source,
            "classes": [c.to_dict() for c in self.classes],
        }
        if self.against is not None:
            d["against"] = self.against.to_dict()
        if self.change is not None:
            d["change"] = self.change.to_dict()
        if self.check is not None:
            d["check"] = self.check.to_dict()
        return d


@dataclass(frozen=True)
class PolicyImpact:
    """What POLICY does to the audit load of every apiserver with a request mix."""

    tool: str
    policy: str
    against: str | None
    source: dict[str, object]
    window: JsonObject  # the snapshot's source.window
    assume_user: str
    instances: dict[str, InstanceImpact]
    notes: list[str]
    missing: list[str]

    def to_dict(self) -> dict[str, object]:
        return {"tool": self.tool, "policy": self.policy, "against": self.against, "source": self.source,
                "window": self.window, "assume_user": self.assume_user,
                "instances": {k: v.to_dict() for k, v in self.instances.items()}, "notes": self.notes,
                "missing": self.missing}
