"""When the audit pipeline is quiet, and the accounting check over a run: the apiserver's absolute
audit counters (``/metrics``) and the sink's stats, read before and after
(``events_total = delivered + drops (+ in flight)``, ``docs/verification.md``).
"""
from __future__ import annotations

import ssl
import time
import urllib.request
from collections.abc import Callable
from typing import NotRequired, TypedDict

from audit_tune.loadgen import metrics_text as mt
from audit_tune.loadgen.kubetarget import Target
from audit_tune.loadgen.sink_stats import SinkStats
from audit_tune.sim.config import AuditFlags


class AuditTotals(TypedDict):
    """The apiserver's absolute audit counters at one moment (``at``, unix s)."""

    event_total: float
    errors: dict[str, float]
    at: float


class Accounting(TypedDict):
    """``events_total = delivered + drops + residual`` over a run; ``lost`` is a positive residual."""

    events_total: float
    delivered: int
    drops_by_plugin: dict[str, float]
    residual: float
    lost: float
    quiet_reached: NotRequired[bool]


def scrape_totals(target: Target, timeout: float = 30.0) -> AuditTotals:
    """Absolute ``apiserver_audit_event_total`` and ``apiserver_audit_error_total`` by plugin."""
    ctx = target.ssl_context()
    req = urllib.request.Request(target.server.rstrip("/") + "/metrics", headers=target.headers())
    context = ctx if isinstance(ctx, ssl.SSLContext) else None
    with urllib.request.urlopen(req, timeout=timeout, context=context) as r:  # noqa: S310 - the user's apiserver
        m = mt.parse(r.read().decode(errors="replace"))
    errs = m.by_label("apiserver_audit_error_total", "plugin") if m.has("apiserver_audit_error_total") else {}
    return AuditTotals(event_total=m.total("apiserver_audit_event_total"),
                       errors={k: float(v) for k, v in errs.items()}, at=time.time())


def read_baseline(target: Target, read_sink: Callable[[], SinkStats]) -> tuple[AuditTotals, SinkStats]:
    """The counters a run's accounting starts from: the sink's stats first, then the apiserver's.

    In this order an event can only make the residual negative: one counted before ``a0`` and stored
    between the two reads is in ``delivered`` but not in ``events_total``. In the other order an event
    counted after ``a0`` (the scrape's own event, the apiserver's background requests) can join a
    partial batch whose max-wait is about to expire and be stored before ``s0`` is read: counted in
    ``events_total`` but in neither ``delivered`` nor the drops, it would show as one event lost."""
    s0 = read_sink()
    return scrape_totals(target), s0


def quiet_window(flags: AuditFlags, retries: bool = True, refill: bool = False) -> float:
    """How long nothing may reach the sink before the pipeline is taken as quiet: a partial batch
    waits up to max-wait; with ``retries`` (the sink failed some attempts, or has faults configured)
    a failing batch may also be sleeping up to ``1.2 x initial x 1.5^3`` before its next attempt.
    With ``refill`` also until the throttle's token bucket is full again (``burst / qps``): the
    replay starts with a full bucket, as the apiserver does at start-up."""
    b = flags.webhook.batch
    w = max(2.0, b.max_batch_wait + 1.0)
    if retries:
        w = max(w, 1.2 * flags.webhook_initial_backoff * 1.5 ** 3 + 1.0)
    if refill and b.throttle_enable and b.effective_qps > 0:
        w = max(w, b.throttle_burst / b.effective_qps + 0.5)
    return w


def sink_failed_attempts(s0: SinkStats | None, s1: SinkStats) -> int:
    """Responses other than 200 (including ``dropped`` connections) the sink gave between two stats."""
    r0, r1 = (s0.get("responses") or {}) if s0 else {}, s1.get("responses") or {}
    return int(sum(v - r0.get(k, 0) for k, v in r1.items() if k != "200"))


def wait_quiet(read_sink: Callable[[], SinkStats], flags: AuditFlags, timeout: float = 120.0, poll: float = 0.5,
               retries: bool | None = None, since: SinkStats | None = None,
               refill: bool = False) -> tuple[SinkStats, bool]:
    """Poll the sink (not the apiserver: each scrape is itself an audit event) until nothing has
    reached it for :func:`quiet_window` seconds; returns (last stats, quiet reached). ``retries``
    None: decided from the sink's failed responses since ``since``."""
    deadline = time.monotonic() + timeout
    last = read_sink()
    t_last = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(poll)
        s = read_sink()
        if (s.get("requests"), s.get("events_stored")) != (last.get("requests"), last.get("events_stored")) \
                or s.get("inflight"):
            t_last = time.monotonic()
        last = s
        r = retries if retries is not None else sink_failed_attempts(since, s) > 0
        if time.monotonic() - t_last >= quiet_window(flags, r, refill):
            return last, True
    return last, False


def accounting(a0: AuditTotals, a1: AuditTotals, s0: SinkStats, s1: SinkStats) -> Accounting:
    """``events_total = delivered + drops (+ in flight)`` over [a0, a1] (apiserver) and [s0, s1] (sink).

    ``s1`` is read after ``a1`` once the pipeline is quiet, so every event counted in ``a1`` has had
    its chance to be delivered or dropped: a positive residual is events **lost** (neither stored nor
    counted as dropped). A negative residual is events that were already in the pipeline at ``a0``
    (counted before it, delivered after ``s0``), or generated after ``a1`` (this scrape's own event,
    apiserver background traffic) and delivered before ``s1``."""
    ev = a1["event_total"] - a0["event_total"]
    plugins = set(a0["errors"]) | set(a1["errors"])
    drops = {p: a1["errors"].get(p, 0.0) - a0["errors"].get(p, 0.0) for p in sorted(plugins)}
    stored = s1["events_stored"] - s0["events_stored"]
    residual = ev - stored - sum(drops.values())
    return Accounting(events_total=ev, delivered=stored, drops_by_plugin=drops, residual=residual,
                      lost=max(0.0, residual))
