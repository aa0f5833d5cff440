"""The ``audit-tune-snapshot/v1`` document as plain data: one ``TypedDict`` per object of the file.

``analysis.snapshot`` validates a file into dataclasses and writes them back as these documents; the
calibration (``analysis.calibrate``) and the policy impact read the documents. Each key is described
in ``docs/snapshot.md``. The optional top-level sections other readers own (``request_mix``,
``audit_log``) stay plain JSON here; their readers validate them.
"""
from __future__ import annotations

from typing import NotRequired, TypedDict

from audit_tune.basics.jsondata import JsonObject


class SeriesDoc(TypedDict):
    t: list[float]  # unix seconds, ascending
    v: list[float]


class PeakSeriesDoc(SeriesDoc):
    window: str  # the short rate window, e.g. "10s"


class BucketsDoc(TypedDict):
    le: list[float | str]  # upper bounds, the last one may be "+Inf"
    cum: list[float]  # cumulative counts


class HistogramDoc(BucketsDoc):
    sum: float
    count: float


class WebhookDoc(TypedDict):
    host: str
    duration_buckets: BucketsDoc
    duration_sum: float
    duration_count: float
    requests_by_code: dict[str, float]
    retries_by_code: NotRequired[dict[str, float] | None]
    size_buckets: BucketsDoc | None
    size_sum: float | None
    size_count: float | None


class InstanceDoc(TypedDict):
    cluster: str
    event_rate: SeriesDoc
    event_rate_peak: PeakSeriesDoc | None
    events_increase: float
    errors_increase: dict[str, float]
    level_increase: dict[str, float]
    requests_rejected_increase: float
    request_rate: SeriesDoc | None
    requests_by_verb: dict[str, float] | None
    webhook: WebhookDoc | None
    audit_filter_latency: HistogramDoc | None
    memory_bytes: SeriesDoc | None


class WindowDoc(TypedDict):
    start: float
    end: float
    step: float


class SourceDoc(TypedDict):
    prometheus_url: str
    window: WindowDoc
    cluster_label: str | None
    selector: str


class MissingDoc(TypedDict):
    instance: str
    item: str
    why: str
    fix: str


class ProjectedInstanceDoc(TypedDict):
    events_factor: float
    event_size_factor: float
    method: str


class ProjectionDoc(TypedDict):
    """What ``tune recommend --policy`` scaled (``analysis.policy_impact.project_snapshot``)."""

    policy: str
    current_policy: str | None
    instances: dict[str, ProjectedInstanceDoc]


class SnapshotDoc(TypedDict):
    format: str
    tool_version: str
    recorded_at: float
    source: SourceDoc
    instances: dict[str, InstanceDoc]
    missing: list[MissingDoc]
    request_mix: NotRequired[JsonObject]  # analysis.policy_impact
    audit_log: NotRequired[JsonObject]  # analysis.auditlog.build
    projection: NotRequired[ProjectionDoc]  # analysis.policy_impact, never written to a file
