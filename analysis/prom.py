"""Read kube-apiserver audit history from Prometheus and turn it into a :class:`Snapshot`.

The parts, one module each:

* :mod:`~audit_tune.analysis.prom_settings` -- how to reach Prometheus (:class:`PromSettings`);
* :mod:`~audit_tune.analysis.prom_http` -- the transport (deadline, caps, same-origin redirects);
* :mod:`~audit_tune.analysis.prom_client` -- queries with one-line errors (:class:`PromClient`);
* :mod:`~audit_tune.analysis.promql` -- the PromQL, one named builder per quantity;
* :mod:`~audit_tune.analysis.prom_assemble` -- answers -> one :class:`InstanceData` per apiserver;
* this module -- :func:`take_snapshot`: discovery, the scrape interval and the step, then the rest.

The scrape interval is measured from the data: the median gap between raw sample timestamps of
``apiserver_audit_event_total`` in the hour before its last sample (which may be long before
``--end``), so jittered timestamps, gaps and a history longer than the data do not skew it. The
step is a whole multiple of that interval in whole milliseconds, so it is always a duration
Prometheus accepts. :func:`take_snapshot` explains every missing item per instance
(``Snapshot.missing``) and raises :class:`NotEnoughData` (exit 4) only when no instance has audit
event data.
"""
from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from audit_tune.analysis import prom_assemble as asm
from audit_tune.analysis.prom_assemble import human_duration
from audit_tune.analysis.prom_client import WINDOW, PromClient, TooManySamples, prom_duration
from audit_tune.analysis.prom_settings import LOOPBACK_RE, PromSettings, strip_userinfo
from audit_tune.analysis.promql import Queries, escape, regex_alternatives
from audit_tune.analysis.snapshot import Missing, Snapshot, Source, Window
from audit_tune.basics.errors import InputError, NotEnoughData

__all__ = ["LOOPBACK_RE", "MAX_POINTS", "PromClient", "PromSettings", "SnapshotRequest", "TooManySamples", "WINDOW",
           "check_selector", "human_duration", "partial_snapshot", "strip_userinfo", "take_snapshot"]

MAX_POINTS = 11000          # Prometheus refuses query_range answers above 11,000 points per series
SCRAPE_LOOK = 3600.0        # how far back from the last sample the scrape interval is measured


@dataclass
class SnapshotRequest:
    history: float = 7 * 86400.0
    step: float = 15.0
    end: float | None = None
    instances: list[str] = field(default_factory=list)
    selector: str = ""              # extra matchers, e.g. job="apiserver"
    webhook_host: str | None = None


_MATCHER_RE = re.compile(r'\s*[a-zA-Z_][a-zA-Z0-9_]*\s*(=~|!~|!=|=)\s*"(?:[^"\\]|\\.)*"\s*')


def check_selector(text: str) -> None:
    """``--selector``: comma-separated label matchers such as ``job="apiserver",env!~"dev.*"``."""
    pos = 0
    while pos < len(text):
        m = _MATCHER_RE.match(text, pos)
        if not m:
            raise InputError(f"--selector {text!r}: want label matchers such as 'job=\"apiserver\"' "
                             f"(name, one of = != =~ !~, a double-quoted value; comma-separated)")
        pos = m.end()
        if pos < len(text):
            if text[pos] != ",":
                raise InputError(f"--selector {text!r}: matchers must be separated by commas")
            pos += 1


def check_request(req: SnapshotRequest) -> None:
    """One-line errors for impossible windows: non-finite or non-positive history/step, a bad end."""
    if not math.isfinite(req.history) or req.history <= 0:
        raise InputError("--history: must be > 0, e.g. 7d")
    if req.history > 400 * 86400:
        raise InputError("--history: at most 400d")
    if not math.isfinite(req.step) or req.step <= 0:
        raise InputError("--step: must be > 0s, e.g. 15s")
    if req.end is not None and (not math.isfinite(req.end) or req.end <= 0 or req.end > 4e9):
        raise InputError(f"--end {req.end}: want unix seconds after 1970 (or RFC 3339) before year 2096")


def scrape_interval(client: PromClient, q: Queries, end: float, history: float) -> float:
    """Median gap between raw sample timestamps in the hour before the last sample (0 if unknown),
    in whole milliseconds; within 1% of whole seconds it is whole seconds. The last sample is found
    with a coarse range query (at most 1,000 points), so data ending long before ``end`` is found."""
    last = end
    coarse = float(max(60, math.ceil(history / 1000)))
    try:
        seen = [t for _, ser in client.query_range(q.presence(), end - history, end, coarse, "the data extent query")
                for t in ser.t]
        if seen:
            last = max(seen)
    except TooManySamples:
        pass
    look = min(history, SCRAPE_LOOK)
    gaps: list[float] = []
    for _, ts in client.raw_samples(q.raw_samples(look), last, "the scrape interval query"):
        gaps += [b - a for a, b in zip(ts, ts[1:]) if b > a]
    if not gaps:
        return 0.0
    gaps.sort()
    ms = round(gaps[len(gaps) // 2] * 1000)
    whole = round(ms / 1000) * 1000
    if whole and abs(ms - whole) <= max(5, 0.01 * whole):
        ms = whole
    return max(ms, 1) / 1000


def choose_step(requested: float, scrape: float, history: float, log: Callable[[str], None]) -> float:
    """At least the scrape interval, few enough points for Prometheus, a whole multiple of the
    scrape interval (when known), whole milliseconds."""
    unit = scrape if scrape else 0.001
    step = requested
    if scrape and step < scrape:
        log(f"tune snapshot: --step raised to {prom_duration(scrape)}, the scrape interval")
        step = scrape
    min_step = history / (MAX_POINTS - 1)
    if step < min_step:
        log(f"tune snapshot: --step raised from {prom_duration(step)} to at least {math.ceil(min_step)}s: "
            f"{human_duration(history)} at {prom_duration(step)} would exceed Prometheus' {MAX_POINTS} points per series")
        step = min_step
    step = math.ceil(round(step / unit, 6)) * unit
    return round(step * 1000) / 1000


def _selector(s: PromSettings, req: SnapshotRequest) -> str:
    matchers = []
    if s.cluster:
        matchers.append(f'{s.cluster_label}="{escape(s.cluster)}"')
    if req.instances:
        matchers.append(f'instance=~"{regex_alternatives(req.instances)}"')
    extra = req.selector.strip().strip("{}").strip() if req.selector else ""
    if extra:
        check_selector(extra)
        matchers.append(extra)
    return ",".join(matchers)


def _discover(client: PromClient, q: Queries, end: float, history: float, log: Callable[[str], None]
              ) -> dict[asm.Key, set[str]]:
    has: dict[asm.Key, set[str]] = {}
    for name in ("apiserver_audit_event_total", "apiserver_audit_level_total", "apiserver_request_total"):
        for lbl, _ in client.query_over(q.present(name), end, history, f"the {name} discovery query", log):
            has.setdefault(asm.key_of(lbl, q.cluster_label), set()).add(name)
    return has


def _duplicate_scrapes(client: PromClient, q: Queries, end: float, history: float, log: Callable[[str], None],
                       missing: list[Missing]) -> None:
    jobs: dict[asm.Key, list[str]] = {}
    for lbl, _ in client.query_over(q.scrape_jobs(), end, history, "the duplicate scrape check", log):
        jobs.setdefault(asm.key_of(lbl, q.cluster_label), []).append(lbl.get("job", ""))
    for k, js in sorted(jobs.items()):
        if len(js) > 1:
            missing.append(Missing(k[1], "duplicate scrape",
                                   f"instance {k[1]} is scraped by {len(js)} jobs ({', '.join(sorted(js))}): every "
                                   f"rate and count below is {len(js)}x too high",
                                   f"select one job, e.g. --selector 'job=\"{sorted(js)[0]}\"'"))


def take_snapshot(client: PromClient, req: SnapshotRequest, log: Callable[[str], None] = lambda m: None,
                  now: float | None = None) -> Snapshot:
    """Query Prometheus and build the snapshot (see docs/snapshot.md)."""
    from audit_tune import __version__

    check_request(req)
    s, client.log = client.s, log
    end = float(math.floor(req.end if req.end is not None else (now or time.time())))
    history = float(req.history)
    start, hist_txt = end - history, human_duration(history)
    S = _selector(s, req)
    q = Queries(S, s.cluster_label)
    if q.cluster_label is None and any(lbl.get("cluster") for lbl, _ in client.query_over(
            q.cluster_probe(), end, history, "the cluster label probe", log)):
        q = Queries(S, "cluster")
    has = _discover(client, q, end, history, log)
    where = f" matching {q.sel()}" if S else ""
    source = Source(s.display_url, Window(start, end, float(req.step)), q.cluster_label, S)
    if not has:
        raise NotEnoughData(
            f"no kube-apiserver metrics (apiserver_audit_event_total, apiserver_request_total){where} in prometheus "
            f"{s.display_url} in the last {hist_txt}: is kube-apiserver scraped by this Prometheus? check "
            f"--prometheus-url, -l/--prometheus-cluster-label, --instance and --history")
    missing: list[Missing] = []
    for want in req.instances:
        if not any(k[1] == want for k in has):
            missing.append(Missing(want, "apiserver_request_total",
                                   f"no kube-apiserver metrics for instance {want} in the last {hist_txt}",
                                   "check --instance against the 'instance' label in Prometheus"))
    audit_keys = sorted(k for k, v in has.items() if "apiserver_audit_event_total" in v)
    for k in sorted(has):
        if k not in audit_keys:
            missing.append(Missing(k[1], "apiserver_audit_event_total",
                                   f"no apiserver_audit_event_total for instance {k[1]}"
                                   + (f" (cluster {k[0]})" if k[0] else "") + f" in the last {hist_txt}: "
                                   "is --audit-policy-file set?",
                                   "set --audit-policy-file and an audit backend (--audit-webhook-config-file or "
                                   "--audit-log-path) on this kube-apiserver"))
    if not audit_keys:
        raise NotEnoughData(
            f"no apiserver_audit_event_total{where} in prometheus {s.display_url} in the last {hist_txt} "
            f"(kube-apiserver metrics found for {len(has)} instance(s)): is --audit-policy-file set?",
        ) from _MissingCarrier(Snapshot(source, {}, missing, __version__, time.time()))
    _duplicate_scrapes(client, q, end, history, log, missing)

    scrape = scrape_interval(client, q, end, history)
    step = choose_step(float(req.step), scrape, history, log)
    source.window.step = step
    w = asm.Window(start, end, history, step, scrape, max(step, 2 * scrape if scrape else 2 * step))
    c = asm.collect(client, q, w, log)
    asm.pick_webhook_hosts(c, audit_keys, req.webhook_host, missing)
    asm.collect_webhook(client, q, w, c, log)

    per_inst: dict[str, int] = {}
    for k in audit_keys:
        per_inst[k[1]] = per_inst.get(k[1], 0) + 1
    instances = {}
    for k in audit_keys:
        d = asm.instance(k, c, w, req.webhook_host, missing)
        if d is not None:
            instances[k[1] if per_inst[k[1]] == 1 else f"{k[0]}/{k[1]}"] = d
    snap = Snapshot(source, instances, missing, __version__, round(time.time(), 3))
    if not instances:
        raise NotEnoughData(f"no usable apiserver_audit_event_total{where} in prometheus {s.display_url} in the last "
                            f"{hist_txt}") from _MissingCarrier(snap)
    return snap


class _MissingCarrier(Exception):
    """Carries the partial snapshot (its ``missing`` list) to the CLI on NotEnoughData."""

    def __init__(self, snap: Snapshot) -> None:
        super().__init__("partial snapshot")
        self.snap = snap


def partial_snapshot(e: BaseException) -> Snapshot | None:
    c = e.__cause__
    return c.snap if isinstance(c, _MissingCarrier) else None
