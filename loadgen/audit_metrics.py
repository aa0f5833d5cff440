"""The apiserver's audit counters, read from its ``/metrics`` before and after a run (spec §6).

:func:`audit_delta` reduces two scrapes to what the load test reports:

* ``apiserver_audit_event_total`` (events generated; counted before any backend sees them),
* ``apiserver_audit_error_total`` by ``plugin`` (``buffered`` = buffer full, ``webhook`` = batch
  dropped after 5 attempts, ``log``, ``truncate``); kube-apiserver exports no series for it until
  the first error, so when ``apiserver_audit_event_total`` is there, absence reads as 0,
* ``apiserver_audit_level_total`` by ``level`` (per request, including ``None``),
* ``apiserver_audit_requests_rejected_total`` (blocking-strict only),
* the audit webhook client's ``rest_client_requests_total`` by ``code`` and
  ``rest_client_request_duration_seconds`` (one observation per attempt), filtered to
  ``host=<webhook host:port>`` (and ``verb``/``method`` ``POST``) because the loopback client and
  other webhooks feed the same series.

A metric missing from the scrape is reported as ``null`` with a reason, never as 0.
"""
from __future__ import annotations

from typing import NotRequired, TypedDict

from audit_tune.basics.jsondata import JsonObject
from audit_tune.loadgen import metrics_text as mt

AUDIT_METRICS = ("apiserver_audit_event_total", "apiserver_audit_error_total", "apiserver_audit_level_total",
                 "apiserver_audit_requests_rejected_total")
REST_METRICS = ("rest_client_requests_total", "rest_client_request_duration_seconds_bucket",
                "rest_client_request_duration_seconds_sum", "rest_client_request_duration_seconds_count",
                "rest_client_request_size_bytes_sum", "rest_client_request_size_bytes_count")


class WebhookDelta(TypedDict):
    """kube-apiserver's client-side view of its POSTs to the webhook host in the window."""

    host: str
    requests_by_code: dict[str, float]
    attempt_duration_s: JsonObject
    request_bytes: float
    note: NotRequired[str]


class AuditDelta(TypedDict):
    """The audit counters' increase over the window (None: the metric is not exported)."""

    event_total: float | None
    error_total_by_plugin: dict[str, float] | None
    level_total_by_level: dict[str, float] | None
    requests_rejected_total: float | None
    counter_resets: list[str]
    webhook: WebhookDelta | None
    rest_client_hosts_seen: list[str]
    missing: list[str]
    dropped_events: float | None


def audit_delta(before: mt.Metrics, after: mt.Metrics, webhook_host: str | None) -> AuditDelta:
    d = mt.delta(before, after, AUDIT_METRICS + REST_METRICS)
    missing: list[str] = []

    def scalar(name: str) -> float | None:
        if not after.has(name):
            missing.append(name)
            return None
        return d.total(name)

    def labelled(name: str, label: str) -> dict[str, float] | None:
        # A labelled counter has no series until its first increment: with the audit pipeline
        # present (event_total exported), absence means "0 so far", not "unknown".
        if not after.has(name):
            if after.has("apiserver_audit_event_total"):
                return {}
            missing.append(name)
            return None
        return d.by_label(name, label)

    # in this order, so ``missing`` lists the metrics in the order of the record's keys
    event_total = scalar("apiserver_audit_event_total")
    error_total = labelled("apiserver_audit_error_total", "plugin")
    level_total = labelled("apiserver_audit_level_total", "level")
    rejected = scalar("apiserver_audit_requests_rejected_total")
    out = AuditDelta(
        event_total=event_total,
        error_total_by_plugin=error_total,
        level_total_by_level=level_total,
        requests_rejected_total=rejected,
        counter_resets=d.resets,
        webhook=None,
        rest_client_hosts_seen=[],
        missing=[],
        dropped_events=float(sum(error_total.values())) if error_total is not None else None,
    )
    if webhook_host:
        codes = d.by_label("rest_client_requests_total", "code", host=webhook_host, method="POST")
        webhook = out["webhook"] = WebhookDelta(
            host=webhook_host,
            requests_by_code=codes,
            attempt_duration_s=mt.histogram_from_delta(d, "rest_client_request_duration_seconds",
                                                       host=webhook_host, verb="POST"),
            request_bytes=d.total("rest_client_request_size_bytes_sum", host=webhook_host, verb="POST"),
        )
        if not codes and not after.select("rest_client_requests_total", host=webhook_host):
            webhook["note"] = (f"no rest_client_requests_total series for host={webhook_host}: "
                                      "no webhook attempt in the window, or a different host:port in the webhook kubeconfig")
    out["rest_client_hosts_seen"] = sorted({s.label("host") for s in after.select("rest_client_requests_total")})
    out["missing"] = [f"{m}: not in the apiserver's /metrics (is an audit policy set? is the metric enabled?)"
                      for m in missing]
    return out
