"""The PromQL of a snapshot, one named builder per quantity (see ``docs/snapshot.md``).

Every query is scoped by the same matchers (cluster label, ``--instance``, ``--selector``) and
grouped by instance (and the cluster label when there is one). ``WINDOW`` stands for the whole
window's range; the client substitutes it (or splits the window when Prometheus refuses it).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from audit_tune.analysis.prom_client import WINDOW as W
from audit_tune.analysis.prom_client import prom_duration, window

AUDIT = "apiserver_audit_event_total"
AUDIT_FILTER = 'filter="audit"'
POST = 'method="POST"'


def escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"')


def regex_alternatives(values: list[str]) -> str:
    return "|".join(re.escape(v).replace("\\", "\\\\") for v in values)


@dataclass(frozen=True)
class Queries:
    matchers: str            # comma-separated label matchers, '' for none
    cluster_label: str | None

    def sel(self, extra: str = "") -> str:
        return "{" + ",".join(p for p in (self.matchers, extra) if p) + "}"

    @property
    def by(self) -> str:
        return f"instance{', ' + self.cluster_label if self.cluster_label else ''}"

    # -- discovery ------------------------------------------------------------------------------
    def cluster_probe(self) -> str:
        return (f"count by (cluster) (last_over_time(apiserver_request_total{self.sel()}[{W}])) or "
                f"count by (cluster) (last_over_time({AUDIT}{self.sel()}[{W}]))")

    def present(self, metric: str) -> str:
        return f"count by ({self.by}) (last_over_time({metric}{self.sel()}[{W}]))"

    def scrape_jobs(self) -> str:
        return f"count by ({self.by}, job) (last_over_time({AUDIT}{self.sel()}[{W}]))"

    def presence(self) -> str:
        """Evaluated as a coarse range query: where in the window the audit counter has data."""
        return f"count({AUDIT}{self.sel()})"

    def raw_samples(self, look: float) -> str:
        return f"{AUDIT}{self.sel()}[{window(look)}]"

    # -- audit events ---------------------------------------------------------------------------
    def event_rate(self, rate_range: float) -> str:
        return f"sum by ({self.by}) (rate({AUDIT}{self.sel()}[{window(rate_range)}]))"

    def event_peak(self, scrape: float, step: float) -> str:
        return (f"max_over_time((sum by ({self.by}) (irate({AUDIT}{self.sel()}[{window(3 * scrape)}])))"
                f"[{window(step)}:{prom_duration(scrape)}])")

    def events_increase(self) -> str:
        return f"sum by ({self.by}) (increase({AUDIT}{self.sel()}[{W}]))"

    def event_resets(self) -> str:
        return f"sum by ({self.by}) (resets({AUDIT}{self.sel()}[{W}]))"

    def errors_increase(self) -> str:
        return f"sum by ({self.by}, plugin) (increase(apiserver_audit_error_total{self.sel()}[{W}]))"

    def levels_increase(self) -> str:
        return f"sum by ({self.by}, level) (increase(apiserver_audit_level_total{self.sel()}[{W}]))"

    def rejected_increase(self) -> str:
        return f"sum by ({self.by}) (increase(apiserver_audit_requests_rejected_total{self.sel()}[{W}]))"

    # -- requests, memory -----------------------------------------------------------------------
    def request_rate(self, rate_range: float) -> str:
        return f"sum by ({self.by}) (rate(apiserver_request_total{self.sel()}[{window(rate_range)}]))"

    def requests_by_verb(self) -> str:
        return f"sum by ({self.by}, verb) (increase(apiserver_request_total{self.sel()}[{W}]))"

    def memory(self) -> str:
        return f"max by ({self.by}) (process_resident_memory_bytes{self.sel()})"

    def filter_latency_buckets(self) -> str:
        return (f"sum by ({self.by}, le) (increase(apiserver_request_filter_duration_seconds_bucket"
                f"{self.sel(AUDIT_FILTER)}[{W}]))")

    def filter_latency(self, part: str) -> str:
        return (f"sum by ({self.by}) (increase(apiserver_request_filter_duration_seconds_{part}"
                f"{self.sel(AUDIT_FILTER)}[{W}]))")

    # -- the webhook (the apiserver's rest client POSTs) ------------------------------------------
    def post_hosts(self) -> str:
        return f"sum by ({self.by}, host) (increase(rest_client_requests_total{self.sel(POST)}[{W}]))"

    def _hosts(self, hosts: list[str], verb_label: str) -> str:
        return self.sel(f'{verb_label}="POST",host=~"{regex_alternatives(hosts)}"')

    def webhook_latency_buckets(self, hosts: list[str]) -> str:
        return (f"sum by ({self.by}, host, le) (increase(rest_client_request_duration_seconds_bucket"
                f"{self._hosts(hosts, 'verb')}[{W}]))")

    def webhook_latency(self, hosts: list[str], part: str) -> str:
        return (f"sum by ({self.by}, host) (increase(rest_client_request_duration_seconds_{part}"
                f"{self._hosts(hosts, 'verb')}[{W}]))")

    def webhook_size_buckets(self, hosts: list[str]) -> str:
        return (f"sum by ({self.by}, host, le) (increase(rest_client_request_size_bytes_bucket"
                f"{self._hosts(hosts, 'verb')}[{W}]))")

    def webhook_size(self, hosts: list[str], part: str) -> str:
        return (f"sum by ({self.by}, host) (increase(rest_client_request_size_bytes_{part}"
                f"{self._hosts(hosts, 'verb')}[{W}]))")

    def webhook_codes(self, hosts: list[str]) -> str:
        return f"sum by ({self.by}, host, code) (increase(rest_client_requests_total{self._hosts(hosts, 'method')}[{W}]))"

    def webhook_retries(self, hosts: list[str]) -> str:
        """Round trips after the first inside one request (client-go ``rest/with_retry.go``: Retry-After retries)."""
        return (f"sum by ({self.by}, host, code) (increase(rest_client_request_retries_total"
                f"{self._hosts(hosts, 'verb')}[{W}]))")
