"""What a sink's ``GET /stats`` answers (:meth:`loadgen.sink.SinkServer.stats`), as the load test
and ``tune sink`` read it back over HTTP (:func:`loadgen.sink_client.fetch_stats`)."""
from __future__ import annotations

from typing import NotRequired, TypedDict, final


class LatencySummary(TypedDict):
    """Per-request handling latency of the sink, seconds (None while no request was handled)."""

    count: int
    mean: float | None
    p50: float | None
    p90: float | None
    p99: float | None
    max: float | None


@final
class SinkStats(TypedDict):
    url: str
    started_unix: float
    uptime_s: float
    requests: int
    batches: int
    events_received: int
    events_stored: int
    bytes_received: int
    responses: dict[str, int]
    faults_applied: dict[str, int]
    inflight: int
    max_inflight: int
    store: str | None
    latency_s: LatencySummary
    latency_samples_s: NotRequired[list[float]]


@final
class StatsUnread(TypedDict):
    """Why a sink's stats could not be read; recorded in their place."""

    error: str
