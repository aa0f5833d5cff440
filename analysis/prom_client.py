"""Queries against Prometheus' HTTP API with one-line errors.

:class:`PromClient` runs instant (``/api/v1/query``) and range (``/api/v1/query_range``) queries
through :class:`~audit_tune.analysis.prom_http.Transport` and checks every answer: HTTP errors,
malformed JSON, a wrong result type, NaN/Inf samples and more than :data:`MAX_SERIES` series each
become one :class:`~audit_tune.basics.errors.ServiceError` line (exit 1); a query that does not
finish within ``--prometheus-timeout`` is :class:`~audit_tune.basics.errors.TimeoutExceeded`
(exit 2). When Prometheus refuses a query for loading too many samples (``--query.max-samples``),
window queries are split into chunks and range queries into shorter ranges.
"""
from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from typing import Any

from audit_tune.analysis.prom_http import Transport
from audit_tune.analysis.prom_settings import PromSettings
from audit_tune.analysis.snapshot import Series
from audit_tune.basics.errors import ServiceError
from audit_tune.basics.jsondata import JsonValue
from audit_tune.basics.output import log as stderr_log

WINDOW = "__WINDOW__"       # placeholder for the whole window's range in window-wide queries
MAX_SERIES = 10_000         # series in one answer; more means the selector is far too wide


class TooManySamples(ServiceError):
    """Prometheus refused a query that would load more samples than its ``--query.max-samples``."""


def prom_duration(seconds: float) -> str:
    """A duration Prometheus accepts: whole milliseconds (``15s``, ``24983ms``), at least 1ms."""
    ms = max(1, int(round(seconds * 1000)))
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


def window(seconds: float) -> str:
    """A range selector's duration: whole seconds, rounded up."""
    return f"{int(math.ceil(seconds))}s"


class PromClient:
    """Queries with one-line errors. ``query`` (instant vector) and ``query_range`` (matrix)."""

    def __init__(self, settings: PromSettings, log: Callable[[str], None] | None = None) -> None:
        self.s = settings.validate()
        self.log: Callable[[str], None] = lambda m: None   # take_snapshot points it at its progress log
        self.http = Transport(self.s, log or stderr_log)
        self.queries = 0
        self._chunk_said: set[Any] = set()
        if self.s._verify is False and not getattr(self.s, "_tls_notice_said", False):
            self.s._tls_notice_said = True  # type: ignore[attr-defined]  # once per command
            (log or stderr_log)(f"tune: TLS certificate verification of prometheus {self.s.display_url} is off "
                                "(--insecure-skip-tls-verify)")

    # -- one request ----------------------------------------------------------------------------
    def _call(self, path: str, params: dict[str, str], what: str, promql: str) -> JsonValue:
        self.queries += 1
        url = self.s.display_url
        reply = self.http.get(path, params, what)
        if reply.status != 200:
            msg = self._http_error(reply.status, reply.body, what, promql)
            if "too many samples" in msg:
                raise TooManySamples(msg)
            raise ServiceError(msg)
        try:
            doc = json.loads(reply.body)
        except (ValueError, RecursionError):
            raise ServiceError(f"prometheus {url} answered {what} with malformed JSON: is --prometheus-url the "
                               f"Prometheus API root (not a UI or proxy login page)?") from None
        data = doc.get("data") if isinstance(doc, dict) else None
        result = data.get("result") if isinstance(data, dict) else None
        if result is None:
            raise ServiceError(f"prometheus {url} answered {what} with JSON that is not a Prometheus API answer "
                               f"(no data.result): is --prometheus-url the Prometheus API root?")
        if isinstance(result, list) and len(result) > MAX_SERIES:
            raise ServiceError(f"prometheus {url} answered {what} with {len(result):,} series (more than "
                               f"{MAX_SERIES:,}): narrow it with -l/--instance/--selector")
        return result

    def _http_error(self, code: int, body: bytes, what: str, promql: str) -> str:
        url = self.s.display_url
        em = re.search(rb'"error"\s*:\s*"((?:[^"\\]|\\.)*)"', body[:65536])
        detail = self.s.mask(em.group(1).decode("utf-8", "replace") if em else "")[:200]
        if code in (401, 403):
            return (f"prometheus {url} refused {what}: HTTP {code}: check --prometheus-auth-header, "
                    f"--prometheus-bearer-token-file / PROMETHEUS_BEARER_TOKEN or --prometheus-user")
        if code == 404:
            return f"prometheus {url}: HTTP 404 for {what}: is --prometheus-url the Prometheus root (e.g. without /graph)?"
        if code >= 500 or code == 429:
            return (f"prometheus {url} failed {what}: HTTP {code} after {self.s.retries + 1} attempts"
                    + (f" ({detail})" if detail else ""))
        if 300 <= code < 400:
            return f"prometheus {url} answered {what} with HTTP {code} and no usable Location"
        return f"prometheus {url} rejected {what}: HTTP {code}" + (f": {detail}" if detail else "") + f" [query: {promql[:160]}]"

    @staticmethod
    def _check_number(x: JsonValue, what: str, url: str) -> float:
        try:
            if not isinstance(x, (str, int, float)):
                raise TypeError(type(x).__name__)
            v = float(x)
        except (TypeError, ValueError, OverflowError):
            raise ServiceError(f"prometheus {url} answered {what} with a non-number sample {str(x)[:20]!r}") from None
        if not math.isfinite(v):
            raise ServiceError(f"prometheus {url} answered {what} with {x} (NaN/Inf): the query or the scraped "
                               f"series is broken; check the series in Prometheus")
        return v

    # -- query kinds ----------------------------------------------------------------------------
    def query(self, promql: str, at: float, what: str = "a query") -> list[tuple[dict[str, str], float]]:
        """Instant query at ``at``; ``[(labels, value)]``. Checks the result is an instant vector."""
        res = self._call("/api/v1/query", {"query": promql, "time": f"{at:.3f}"}, what, promql)
        url = self.s.display_url
        if not isinstance(res, list):
            raise ServiceError(f"prometheus {url} answered {what} with a {_kind(res)}, not an instant vector")
        out = []
        for s in res:
            if not isinstance(s, dict) or "value" not in s or not isinstance(s.get("metric"), dict):
                raise ServiceError(f"prometheus {url} answered {what} with a {_kind(s)} result, not an instant vector")
            val = s["value"]
            if not isinstance(val, list) or len(val) != 2:
                raise ServiceError(f"prometheus {url} answered {what} with a malformed sample {str(val)[:40]}")
            out.append((_labels(s["metric"], what, url), self._check_number(val[1], what, url)))
        return out

    def query_over(self, promql: str, end: float, history: float, what: str,
                   log: Callable[[str], None] | None = None) -> list[tuple[dict[str, str], float]]:
        """Instant query at ``end`` of a window-wide expression (``WINDOW`` stands for the range).

        Additive expressions only (``increase``, ``resets``, ``count``): when Prometheus refuses the
        whole window (``--query.max-samples``), the window is split into 2, 4, ... 128 chunks, evaluated
        as one range query with step = range = chunk, and the chunks are summed per series."""
        try:
            return self.query(promql.replace(WINDOW, window(history)), end, what)
        except TooManySamples:
            pass
        n = 2
        while True:
            chunk = math.ceil(history / n)
            try:
                res = self.query_range(promql.replace(WINDOW, window(chunk)), end - (n - 1) * chunk, end, chunk, what)
            except TooManySamples:
                if n >= 128:
                    raise TooManySamples(f"prometheus {self.s.display_url} refuses {what} even in 128 chunks of the "
                                         f"window (its --query.max-samples): shorten --history or narrow with "
                                         f"--instance/-l") from None
                n *= 2
                continue
            if n not in self._chunk_said:
                self._chunk_said.add(n)
                (log or self.log)(f"tune snapshot: window queries split into {n} chunks (Prometheus' --query.max-samples)")
            out: dict[tuple[tuple[str, str], ...], tuple[dict[str, str], float]] = {}
            for lbl, ser in res:
                key = tuple(sorted(lbl.items()))
                prev = out.get(key, (lbl, 0.0))[1]
                out[key] = (lbl, prev + sum(ser.v))
            return list(out.values())

    def query_range(self, promql: str, start: float, end: float, step: float,
                    what: str = "a range query", _depth: int = 0) -> list[tuple[dict[str, str], Series]]:
        """Range query; ``[(labels, Series)]``. Checks the result is a matrix.

        When Prometheus refuses it for loading too many samples (``--query.max-samples``), the time range
        is halved (on the step grid) and the halves merged, down to 1/64 of the range."""
        try:
            return self._query_range_once(promql, start, end, step, what)
        except TooManySamples:
            n = int((end - start) // step) + 1
            if n < 2 or _depth >= 6:
                raise
        if _depth == 0 and "range" not in self._chunk_said:
            self._chunk_said.add("range")
            self.log("tune snapshot: range queries split into shorter time ranges (Prometheus' --query.max-samples)")
        mid = start + ((n - 1) // 2) * step
        merged: dict[tuple[tuple[str, str], ...], tuple[dict[str, str], Series]] = {}
        for a, b in ((start, mid), (mid + step, end)):
            for lbl, ser in self.query_range(promql, a, b, step, what, _depth + 1):
                key = tuple(sorted(lbl.items()))
                have = merged.setdefault(key, (lbl, Series()))[1]
                have.t.extend(ser.t)
                have.v.extend(ser.v)
        return list(merged.values())

    def _query_range_once(self, promql: str, start: float, end: float, step: float,
                          what: str) -> list[tuple[dict[str, str], Series]]:
        params = {"query": promql, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": prom_duration(step)}
        res = self._call("/api/v1/query_range", params, what, promql)
        url = self.s.display_url
        if not isinstance(res, list):
            raise ServiceError(f"prometheus {url} answered {what} with a {_kind(res)}, not a matrix")
        out = []
        for s in res:
            values = s.get("values") if isinstance(s, dict) else None
            if not isinstance(s, dict) or not isinstance(values, list) or not isinstance(s.get("metric"), dict):
                raise ServiceError(f"prometheus {url} answered {what} with a {_kind(s)} result, not a matrix")
            t, v = [], []
            for p in values:
                if not isinstance(p, list) or len(p) != 2:
                    raise ServiceError(f"prometheus {url} answered {what} with a malformed point {str(p)[:40]}")
                t.append(self._check_number(p[0], what, url))
                v.append(self._check_number(p[1], what, url))
            out.append((_labels(s["metric"], what, url), Series(t, v)))
        return out

    def raw_samples(self, promql_range: str, at: float, what: str) -> list[tuple[dict[str, str], list[float]]]:
        """Instant query of a range selector: the raw sample timestamps per series."""
        res = self._call("/api/v1/query", {"query": promql_range, "time": f"{at:.3f}"}, what, promql_range)
        url = self.s.display_url
        out: list[tuple[dict[str, str], list[float]]] = []
        if not isinstance(res, list):
            raise ServiceError(f"prometheus {url} answered {what} with a {_kind(res)}, not a range vector")
        for s in res:
            values = s.get("values") if isinstance(s, dict) else None
            if not isinstance(s, dict) or not isinstance(values, list):
                raise ServiceError(f"prometheus {url} answered {what} with a {_kind(s)} result, not a range vector")
            m = s.get("metric")
            metric = _labels(m, what, url) if isinstance(m, dict) else {}
            out.append((metric, [self._check_number(p[0] if isinstance(p, list) and p else p, what, url)
                                 for p in values]))
        return out


def _labels(m: JsonValue, what: str, url: str) -> dict[str, str]:
    """A series' labels (Prometheus gives every label value as a string)."""
    if not isinstance(m, dict) or not all(isinstance(v, str) for v in m.values()):
        raise ServiceError(f"prometheus {url} answered {what} with malformed labels {str(m)[:60]}")
    return {k: str(v) for k, v in m.items()}


def _kind(x: JsonValue) -> str:
    if isinstance(x, dict):
        return "vector sample" if "value" in x else ("matrix series" if "values" in x else "object")
    if isinstance(x, list):
        return "scalar or string" if len(x) == 2 and not isinstance(x[0], dict) else "list"
    return type(x).__name__
