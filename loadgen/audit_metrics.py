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

from typing import Any

from audit_tune.loadgen import metrics_text as mt

AUDIT_METRICS = ("apiserver_audit_event_total", "apiserver_audit_error_total", "apiserver_audit_level_total",
                 "apiserver_audit_requests_rejected_total")
REST_METRICS = ("rest_client_requests_total", "rest_client_request_duration_seconds_bucket",
                "rest_client_request_duration_seconds_sum", "rest_client_request_duration_seconds_count",
                "rest_client_request_size_bytes_sum", "rest_client_request_size_bytes_count")


def audit_delta(before: mt.Metrics, after: mt.Metrics, webhook_host: str | None) -> dict[str, Any]:
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

    out: dict[str, Any] = {
        "event_total": scalar("apiserver_audit_event_total"),
        "error_total_by_plugin": labelled("apiserver_audit_error_total", "plugin"),
        "level_total_by_level": labelled("apiserver_audit_level_total", "level"),
        "requests_rejected_total": scalar("apiserver_audit_requests_rejected_total"),
        "counter_resets": d.resets,
    }
    if webhook_host:
        codes = d.by_label("rest_client_requests_total", "code", host=webhook_host, method="POST")
        out["webhook"] = {
            "host": webhook_host,
            "requests_by_code": codes,
            "attempt_duration_s": mt.histogram_from_delta(d, "rest_client_request_duration_seconds",
                                                          host=webhook_host, verb="POST"),
            "request_bytes": d.total("rest_client_request_size_bytes_sum", host=webhook_host, verb="POST"),
        }
        if not codes and not after.select("rest_client_requests_total", host=webhook_host):
            out["webhook"]["note"] = (f"no rest_client_requests_total series for host={webhook_host}: "
                                      "no webhook attempt in the window, or a different host:port in the webhook kubeconfig")
    else:
        out["webhook"] = None
    hosts = sorted({s.label("host") for s in after.select("rest_client_requests_total")})
    out["rest_client_hosts_seen"] = hosts
    out["missing"] = [f"{m}: not in the apiserver's /metrics (is an audit policy set? is the metric enabled?)"
                      for m in missing]
    errs = out["error_total_by_plugin"] or {}
    out["dropped_events"] = float(sum(errs.values())) if out["error_total_by_plugin"] is not None else None
    return out
