"""Synthetic kube-apiserver metric histories, written as OpenMetrics for ``promtool`` backfill.

Each :class:`Scenario` describes a few apiservers (``instance`` label, optional ``cluster`` label)
over a fixed past window, scraped every ``scrape`` seconds. :func:`generate` turns it into
counters that are consistent with each other, the way kube-apiserver would expose them:

* requests per verb are Poisson draws around a rate profile (steady, diurnal, bursty);
* each request gets a policy level (``None`` 20 %); non-``None`` requests make 2 audit events,
  long-running ones (``WATCH``, ``CONNECT``) 3, so ``apiserver_audit_event_total`` and
  ``apiserver_audit_level_total`` agree;
* the buffered backend is a fluid queue: a buffer of ``buffer`` events drained at ``capacity``
  events/s (``qps x max-size``); what overflows is counted in
  ``apiserver_audit_error_total{plugin="buffered"}``;
* the webhook client sends batches of at most ``batch`` events; its latency histogram
  (``rest_client_request_duration_seconds``, kube-apiserver's buckets) follows a lognormal, filled
  deterministically (cumulative bucket = floor(posts x CDF(le))), body sizes likewise;
* ``process_resident_memory_bytes`` grows with the queued events.

:func:`write_openmetrics` writes one ``# EOF``-terminated file with timestamps; :class:`Truth`
keeps what the generator used (event totals, drops, posts) for tests. :func:`backfilled_prometheus`
loads files with ``promtool tsdb create-blocks-from openmetrics`` and starts the real Prometheus
(``loadgen.prometheus``) on the blocks.
"""
from __future__ import annotations

import contextlib
import math
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# A fixed past: scenario k ends at END0 + k * 10 days, so they can share one TSDB without overlap.
END0 = 1_780_000_020  # 2026-05-28, a multiple of 60
SCENARIO_SPACING = 10 * 86400

VERBS = {"GET": 0.45, "LIST": 0.10, "WATCH": 0.05, "CREATE": 0.15, "UPDATE": 0.12, "PATCH": 0.08, "DELETE": 0.05}
LONG_RUNNING = ("WATCH", "CONNECT")
NONE_SHARE = 0.2
LEVEL_SPLIT = {"Metadata": 0.75, "Request": 0.19, "RequestResponse": 0.06}
DURATION_LE = [0.005, 0.025, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60]
SIZE_LE = [64.0 * 4 ** i for i in range(8)]
FILTER_LE = [0.0001, 0.0003, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1, 5, 10, 15, 30]
LOOPBACK = "127.0.0.1:6443"


def events_per_request() -> float:
    """Mean audit events per API request for the verb mix and level split above."""
    lr = sum(s for v, s in VERBS.items() if v in LONG_RUNNING)
    return (1 - NONE_SHARE) * (2 * (1 - lr) + 3 * lr)


@dataclass
class Inst:
    """One apiserver in a scenario. ``rate`` is the target audit events/s at time offset t (seconds)."""

    name: str
    rate: Callable[[np.ndarray], np.ndarray]
    cluster: str = ""
    capacity: float = 1e12          # webhook drain, events/s (qps x max-size)
    buffer: float = 10000           # --audit-webhook-batch-buffer-size
    batch: int = 400                # --audit-webhook-batch-max-size
    webhook_host: str | None = "audit-sink.example:8443"
    latency_median: float = 0.05
    latency_sigma: float = 0.5
    webhook_fail_share: float = 0.0  # share of batches that fail for good (events lost: plugin webhook)
    audit: bool = True               # False: no audit policy -> no audit series at all
    requests_metrics: bool = True
    filter_latency: bool = True
    memory: bool = True
    size_metrics: bool = True
    data_from: float = 0.0           # offset (s) where this instance's data starts (short data)
    reset_at: float | None = None    # offset (s) of an apiserver restart (all counters reset)
    other_post_hosts: dict[str, float] = field(default_factory=dict)  # e.g. admission webhooks: host -> POSTs/s
    extra_jobs: tuple[str, ...] = ()  # the same apiserver scraped again by these jobs (a common misconfiguration)
    data_until: float | None = None  # offset (s) where this instance's data ends (data ending before --end)
    gaps: tuple[tuple[float, float], ...] = ()  # offsets [from, to) with no samples (scrape failures)
    jitter: float = 0.0              # scrape timestamps moved by up to +-jitter seconds (millisecond resolution)
    retry_after: float = 0.0         # > 0: a share of attempts is answered 503 with Retry-After: this many seconds
    retry_after_share: float = 0.0   # that share of POST attempts; the client retries each until its 30 s timeout
    retries_metric: bool = True      # False: no rest_client_request_retries_total (an apiserver without it)


@dataclass
class Scenario:
    name: str
    index: int
    duration: float
    scrape: float
    insts: list[Inst]
    seed: int = 1
    description: str = ""

    @property
    def end(self) -> float:
        return float(END0 + self.index * SCENARIO_SPACING)

    @property
    def start(self) -> float:
        return self.end - self.duration


@dataclass
class InstTruth:
    cluster: str
    events: float                  # increase of apiserver_audit_event_total over the window
    mean_rate: float               # events / duration
    peak_rate: float               # highest per-scrape rate
    drops_buffered: float
    drops_webhook: float
    levels: dict[str, float]
    requests: float
    requests_by_verb: dict[str, float]
    posts: float
    posts_by_code: dict[str, float]
    latency_mean: float
    webhook_host: str | None
    audit: bool
    data_from: float
    retries_by_code: dict[str, float] | None = None  # rest_client_request_retries_total as exported
    retried_attempts: float = 0.0  # attempts whose first answer was 503 with Retry-After


@dataclass
class Truth:
    scenario: str
    start: float
    end: float
    scrape: float
    instances: dict[str, InstTruth] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _const(r: float) -> Callable[[np.ndarray], np.ndarray]:
    return lambda t: np.full_like(t, r, dtype=float)


def _diurnal(mean: float, amp: float = 0.6) -> Callable[[np.ndarray], np.ndarray]:
    return lambda t: mean * (1 + amp * np.sin(2 * np.pi * t / 86400.0))


def _bursty(base: float, peak: float, every: float = 600.0, length: float = 30.0) -> Callable[[np.ndarray], np.ndarray]:
    return lambda t: np.where((t % every) < length, peak, base)


def scenarios() -> dict[str, Scenario]:
    """The fixture scenarios, by name."""
    sc = [
        Scenario("steady", 0, 6 * 3600, 30, [Inst("10.0.1.1:6443", _const(800.0), reset_at=2 * 3600 + 17)],
                 description="one apiserver at 800 events/s, one restart (counter reset) after 2h"),
        Scenario("diurnal", 1, 2 * 86400, 60, [Inst("10.0.2.1:6443", _diurnal(1500.0))],
                 description="1,500 events/s +-60% over a day, two days"),
        Scenario("bursty", 2, 3 * 3600, 5, [Inst("10.0.3.1:6443", _bursty(300.0, 6000.0))],
                 description="300 events/s with 30 s bursts at 6,000 events/s every 10 min; 5 s scrapes"),
        Scenario("skewed", 3, 3 * 3600, 15, [Inst("10.0.4.1:6443", _const(3000.0)),
                                             Inst("10.0.4.2:6443", _const(1000.0)),
                                             Inst("10.0.4.3:6443", _const(1000.0))],
                 description="three apiservers, load 3:1:1 (long-lived connections stuck on one)"),
        Scenario("webhook-slow", 4, 3 * 3600, 15,
                 [Inst("10.0.5.1:6443", _const(2000.0), latency_median=0.8, latency_sigma=0.9,
                       webhook_fail_share=0.002, other_post_hosts={"kyverno-svc.kyverno.svc:443": 1.0})],
                 description="webhook median 800 ms, heavy tail; 0.2% of batches fail for good; an admission webhook "
                             "also POSTs (1/s)"),
        Scenario("drops", 5, 2 * 3600, 5,
                 [Inst("10.0.6.1:6443", _bursty(1500.0, 5500.0, every=900, length=60), capacity=4000.0,
                       buffer=10000.0, latency_median=0.25),
                  Inst("10.0.6.2:6443", _const(1500.0), capacity=4000.0, latency_median=0.25)],
                 description="default flags (10 x 400 = 4,000 events/s); bursts at 5,500/s on one apiserver "
                             "overflow the 10,000-event buffer"),
        Scenario("missing", 6, 3 * 3600, 15,
                 [Inst("10.0.7.1:6443", _const(500.0), audit=False),
                  Inst("10.0.7.2:6443", _const(500.0), webhook_host=None, filter_latency=False, memory=False,
                       size_metrics=False),
                  Inst("10.0.7.3:6443", _const(500.0), requests_metrics=False, data_from=2 * 3600)],
                 description="no audit policy on .1; log backend only and no filter/memory metrics on .2; "
                             ".3 only scraped for the last hour and without apiserver_request_total"),
        Scenario("clusters", 7, 2 * 3600, 30,
                 [Inst("10.1.0.1:6443", _const(1000.0), cluster="prod-eu"),
                  Inst("10.1.0.2:6443", _const(900.0), cluster="prod-eu"),
                  Inst("10.2.0.1:6443", _const(400.0), cluster="prod-us"),
                  Inst("10.2.0.2:6443", _const(300.0), cluster="prod-us"),
                  Inst("10.3.0.1:6443", _const(50.0), cluster="staging"),
                  Inst("10.3.0.2:6443", _const(60.0), cluster="staging")],
                 description="three clusters behind one Prometheus, told apart by the 'cluster' label"),
        Scenario("duplicate", 8, 2 * 3600, 15,
                 [Inst("10.4.0.1:6443", _const(700.0), extra_jobs=("kubernetes-apiservers",)),
                  Inst("10.4.0.2:6443", _const(700.0))],
                 description="one apiserver scraped by two jobs: every series twice (select one with --selector)"),
        Scenario("retry-after", 10, 2 * 3600, 15,
                 [Inst("10.6.0.1:6443", _const(1000.0), retry_after=5.0, retry_after_share=0.01),
                  Inst("10.6.0.2:6443", _const(1000.0), retry_after=5.0, retry_after_share=0.01,
                       retries_metric=False)],
                 description="1% of webhook attempts answered 503 with Retry-After: 5 until the client's 30 s "
                             "timeout (5 in-attempt retries each); .2 does not export rest_client_request_retries_total"),
        Scenario("wild", 9, 6 * 3600, 15,
                 [Inst("10.5.0.1:6443", _const(600.0), jitter=0.004, reset_at=3 * 3600 + 7),
                  Inst("10.5.0.2:6443", _const(400.0), gaps=((3600, 5400),), data_until=4 * 3600),
                  Inst("10.5.0.3:6443", _const(300.0), extra_jobs=("kube-apiserver-again",), data_from=3600)],
                 description="Prometheus as found: millisecond jitter and a restart on .1; a 30 min gap and data "
                             "ending 2h before the end on .2; .3 scraped by a second job and only from 1h in"),
    ]
    return {s.name: s for s in sc}


# ---------------------------------------------------------------------------------------------
# Generation


@dataclass
class _Series:
    family: str
    kind: str          # counter, gauge, histogram
    name: str          # sample name
    labels: dict[str, str]
    t: np.ndarray
    v: np.ndarray


def _lognorm_cdf(x: float, median: float, sigma: float) -> float:
    if math.isinf(x):
        return 1.0
    return 0.5 * (1 + math.erf((math.log(x) - math.log(median)) / (sigma * math.sqrt(2))))


def _cum_with_resets(incr: np.ndarray, reset_idx: int | None) -> np.ndarray:
    """Counter values from per-tick increments; at ``reset_idx`` the counter restarts from 0."""
    c = np.cumsum(incr)
    if reset_idx is not None and 0 < reset_idx < len(c):
        c[reset_idx:] -= c[reset_idx - 1]
    return c


def _generate_inst(sc: Scenario, inst: Inst, rng: np.random.Generator) -> tuple[list[_Series], InstTruth]:
    n = int(round(sc.duration / sc.scrape)) + 1
    off = np.arange(n) * sc.scrape
    t = sc.start + off
    if inst.jitter:
        t = t + np.round(rng.uniform(-inst.jitter, inst.jitter, n), 3)
    keep = off >= inst.data_from
    if inst.data_until is not None:
        keep &= off < inst.data_until
    for g0, g1 in inst.gaps:
        keep &= (off < g0) | (off >= g1)
    dt = sc.scrape
    ev_target = np.maximum(inst.rate(off), 0.0)
    req_rate = ev_target / events_per_request()
    reset_idx = None
    if inst.reset_at is not None:
        reset_idx = int(np.searchsorted(off, inst.reset_at))
    base = {"instance": inst.name, "job": "apiserver"}
    if inst.cluster:
        base["cluster"] = inst.cluster
    out: list[_Series] = []

    # Requests per verb, levels, events. Tick 0 has no increments (the window starts there).
    by_verb: dict[str, np.ndarray] = {}
    events = np.zeros(n)
    levels = {lv: np.zeros(n) for lv in ("None", *LEVEL_SPLIT)}
    for verb, share in VERBS.items():
        lam = req_rate * share * dt
        lam[0] = 0.0
        r = rng.poisson(lam).astype(float)
        by_verb[verb] = r
        non_none = rng.binomial(r.astype(np.int64), 1 - NONE_SHARE).astype(float)
        levels["None"] += r - non_none
        split = np.array(list(LEVEL_SPLIT.values()))
        parts = np.array([rng.multinomial(int(k), split) for k in non_none]).reshape(n, 3)
        for j, lv in enumerate(LEVEL_SPLIT):
            levels[lv] += parts[:, j]
        events += non_none * (3 if verb in LONG_RUNNING else 2)

    # The buffered webhook backend: a fluid queue.
    q = 0.0
    drops = np.zeros(n)
    drained = np.zeros(n)
    queued = np.zeros(n)
    has_webhook = inst.webhook_host is not None
    cap = inst.capacity * dt
    for i in range(n):
        if not has_webhook:
            break
        q += events[i]
        d = min(q, cap)
        q -= d
        over = max(0.0, q - inst.buffer)
        q -= over
        drops[i], drained[i], queued[i] = over, d, q
    posts = np.ceil(drained / inst.batch)
    fails = np.floor(posts * inst.webhook_fail_share + rng.random(n)) if inst.webhook_fail_share else np.zeros(n)
    fails = np.minimum(fails, posts)
    lost_webhook = np.minimum(fails * np.minimum(drained / np.maximum(posts, 1), inst.batch), drained).round()

    def emit(family: str, kind: str, name: str, labels: dict[str, str], incr: np.ndarray, counter: bool = True) -> None:
        v = _cum_with_resets(incr, reset_idx) if counter else incr
        out.append(_Series(family, kind, name, {**base, **labels}, t[keep], v[keep]))

    # Truth is over the part of the window that has data (the counter's increase between samples).
    def inc(x: np.ndarray) -> float:
        k = np.flatnonzero(keep)
        return float(x[k[0] + 1:k[-1] + 1].sum()) if len(k) > 1 else 0.0

    if inst.audit:
        emit("apiserver_audit_event", "counter", "apiserver_audit_event_total", {}, events)
        for p, arr in (("buffered", drops), ("webhook", lost_webhook)):
            if has_webhook:
                emit("apiserver_audit_error", "counter", "apiserver_audit_error_total", {"plugin": p}, arr)
        emit("apiserver_audit_requests_rejected", "counter", "apiserver_audit_requests_rejected_total", {}, np.zeros(n))
    for lv, arr in levels.items():
        if inst.audit:
            emit("apiserver_audit_level", "counter", "apiserver_audit_level_total", {"level": lv}, arr)
    if inst.requests_metrics:
        for verb, arr in by_verb.items():
            emit("apiserver_request", "counter", "apiserver_request_total",
                 {"verb": verb, "code": "200", "resource": "pods"}, arr)

    # rest client: the loopback client always, the webhook when configured.
    loop_req = rng.poisson(np.full(n, 2.0 * dt)).astype(float)
    loop_req[0] = 0
    emit("rest_client_requests", "counter", "rest_client_requests_total",
         {"code": "200", "method": "GET", "host": LOOPBACK}, loop_req)
    emit("rest_client_requests", "counter", "rest_client_requests_total",
         {"code": "201", "method": "POST", "host": LOOPBACK}, np.round(loop_req / 4))
    err = np.diff(np.floor(np.cumsum(fails) / 2), prepend=0.0)
    for oh, orate in inst.other_post_hosts.items():
        o = rng.poisson(np.full(n, orate * dt)).astype(float)
        o[0] = 0
        emit("rest_client_requests", "counter", "rest_client_requests_total",
             {"code": "200", "method": "POST", "host": oh}, o)
    lat_mean = math.exp(math.log(inst.latency_median) + inst.latency_sigma ** 2 / 2)
    if has_webhook and inst.audit:
        host = inst.webhook_host
        err = np.diff(np.floor(np.cumsum(fails) / 2), prepend=0.0)   # every other failure is a transport error
        emit("rest_client_requests", "counter", "rest_client_requests_total",
             {"code": "200", "method": "POST", "host": host}, posts - fails)
        if inst.webhook_fail_share:
            emit("rest_client_requests", "counter", "rest_client_requests_total",
                 {"code": "500", "method": "POST", "host": host}, fails - err)
            emit("rest_client_requests", "counter", "rest_client_requests_total",
                 {"code": "<error>", "method": "POST", "host": host}, err)
        if inst.retry_after:
            # attempts answered 503 + Retry-After N: the client POSTs again every N s until the 30 s
            # timeout (k retries, all 503 here), then the attempt fails (the webhook retries the batch later)
            ra, k_ra = _retried(posts, inst)
            emit("rest_client_requests", "counter", "rest_client_requests_total",
                 {"code": "503", "method": "POST", "host": host}, ra * (k_ra + 1))
            if inst.retries_metric:
                emit("rest_client_request_retries", "counter", "rest_client_request_retries_total",
                     {"code": "503", "verb": "POST", "host": host}, ra * k_ra)
        cum_posts = np.cumsum(posts)
        if reset_idx is not None and 0 < reset_idx < n:
            cum_posts[reset_idx:] -= cum_posts[reset_idx - 1]
        for le in [*DURATION_LE, math.inf]:
            frac = _lognorm_cdf(le, inst.latency_median, inst.latency_sigma)
            out.append(_Series("rest_client_request_duration_seconds", "histogram",
                               "rest_client_request_duration_seconds_bucket",
                               {**base, "verb": "POST", "host": host, "le": _fmt_le(le)},
                               t[keep], np.floor(cum_posts * frac + 1e-9)[keep]))
        emit("rest_client_request_duration_seconds", "histogram", "rest_client_request_duration_seconds_sum",
             {"verb": "POST", "host": host}, posts * lat_mean)
        emit("rest_client_request_duration_seconds", "histogram", "rest_client_request_duration_seconds_count",
             {"verb": "POST", "host": host}, posts)
        if inst.size_metrics:
            body = 1200.0 * np.minimum(drained / np.maximum(posts, 1), inst.batch)   # bytes per post
            size_sum = posts * body
            med = max(float(np.median(body[posts > 0])) if (posts > 0).any() else 1200.0, 1.0)
            for le in [*SIZE_LE, math.inf]:
                frac = _lognorm_cdf(le, med, 0.3)
                out.append(_Series("rest_client_request_size_bytes", "histogram", "rest_client_request_size_bytes_bucket",
                                   {**base, "verb": "POST", "host": host, "le": _fmt_le(le)},
                                   t[keep], np.floor(cum_posts * frac + 1e-9)[keep]))
            emit("rest_client_request_size_bytes", "histogram", "rest_client_request_size_bytes_sum",
                 {"verb": "POST", "host": host}, size_sum)
            emit("rest_client_request_size_bytes", "histogram", "rest_client_request_size_bytes_count",
                 {"verb": "POST", "host": host}, posts)
    if inst.filter_latency and inst.audit:
        nreq = sum(by_verb.values())
        cum_req = _cum_with_resets(nreq, reset_idx)
        fmed, fsig = 0.0004 + (0.002 if inst.capacity < 1e9 else 0.0), 0.8
        for le in [*FILTER_LE, math.inf]:
            frac = _lognorm_cdf(le, fmed, fsig)
            out.append(_Series("apiserver_request_filter_duration_seconds", "histogram",
                               "apiserver_request_filter_duration_seconds_bucket",
                               {**base, "filter": "audit", "le": _fmt_le(le)}, t[keep],
                               np.floor(cum_req * frac + 1e-9)[keep]))
        emit("apiserver_request_filter_duration_seconds", "histogram", "apiserver_request_filter_duration_seconds_sum",
             {"filter": "audit"}, nreq * math.exp(math.log(fmed) + fsig ** 2 / 2))
        emit("apiserver_request_filter_duration_seconds", "histogram", "apiserver_request_filter_duration_seconds_count",
             {"filter": "audit"}, nreq)
    if inst.memory:
        mem = 1.2e9 + queued * 6000.0 + rng.normal(0, 5e6, n)
        emit("process_resident_memory_bytes", "gauge", "process_resident_memory_bytes", {}, np.round(mem), counter=False)

    for job in inst.extra_jobs:
        out += [_Series(x.family, x.kind, x.name, {**x.labels, "job": job}, x.t, x.v) for x in list(out)
                if x.labels.get("job") == "apiserver"]
    k = np.flatnonzero(keep)
    per_tick = events[k[1:]] / dt if len(k) > 1 else np.zeros(1)
    dur = (k[-1] - k[0]) * dt if len(k) > 1 else 0.0
    ev = inc(events) if inst.audit else 0.0
    posts_total = inc(posts) if has_webhook and inst.audit else 0.0
    truth = InstTruth(
        cluster=inst.cluster, events=ev, mean_rate=ev / dur if dur else 0.0,
        peak_rate=float(per_tick.max()) if inst.audit else 0.0,
        drops_buffered=inc(drops) if inst.audit else 0.0, drops_webhook=inc(lost_webhook) if inst.audit else 0.0,
        levels={lv: inc(a) for lv, a in levels.items()} if inst.audit else {},
        requests=inc(sum(by_verb.values())) if inst.requests_metrics else 0.0,
        requests_by_verb={v: inc(a) for v, a in by_verb.items()} if inst.requests_metrics else {},
        posts=posts_total,
        posts_by_code=({"200": inc(posts - fails), "500": inc(fails - err), "<error>": inc(err)}
                       if inst.webhook_fail_share else {"200": inc(posts)}) if has_webhook and inst.audit else {},
        latency_mean=lat_mean, webhook_host=inst.webhook_host if inst.audit else None, audit=inst.audit,
        data_from=sc.start + inst.data_from)
    if inst.retry_after and has_webhook and inst.audit:
        ra, k_ra = _retried(posts, inst)
        truth.posts_by_code["503"] = inc(ra * (k_ra + 1))
        truth.retried_attempts = inc(ra)
        truth.retries_by_code = {"503": inc(ra * k_ra)} if inst.retries_metric else None
    return out, truth


def _retried(posts: np.ndarray, inst: Inst) -> tuple[np.ndarray, int]:
    """Attempts per tick answered 503 + Retry-After (the share of POSTs, whole counts spread evenly),
    and the retries each makes before the client's 30 s timeout (at most client-go's 10)."""
    ra = np.diff(np.floor(np.cumsum(posts * inst.retry_after_share) + 1e-9), prepend=0.0)
    return ra, min(10, math.ceil(30.0 / inst.retry_after) - 1)


def _fmt_le(le: float) -> str:
    return "+Inf" if math.isinf(le) else repr(float(le))


def generate(sc: Scenario) -> tuple[list[_Series], Truth]:
    rng = np.random.default_rng(sc.seed + 1000 * sc.index)
    series: list[_Series] = []
    truth = Truth(sc.name, sc.start, sc.end, sc.scrape)
    for inst in sc.insts:
        s, tr = _generate_inst(sc, inst, rng)
        series += s
        truth.instances[inst.name] = tr
    return series, truth


def _labels(d: dict[str, str]) -> str:
    def esc(v: str) -> str:
        return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

    return "{" + ",".join(f'{k}="{esc(v)}"' for k, v in d.items()) + "}"


def write_openmetrics(series: list[_Series], path: Path) -> None:
    """One OpenMetrics file: families grouped, each series in time order, ``# EOF`` at the end."""
    fams: dict[str, list[_Series]] = {}
    kinds: dict[str, str] = {}
    for s in series:
        fams.setdefault(s.family, []).append(s)
        kinds[s.family] = s.kind
    with open(path, "w") as f:
        for fam, ss in fams.items():
            f.write(f"# TYPE {fam} {kinds[fam]}\n")
            for s in ss:
                prefix = s.name + _labels(s.labels) + " "
                f.write("".join(f"{prefix}{_fmt_v(v)} {_fmt_ts(ts)}\n" for ts, v in zip(s.t, s.v)))
        f.write("# EOF\n")


def _fmt_ts(ts: float) -> str:
    return str(int(ts)) if float(ts).is_integer() else f"{ts:.3f}"


def _fmt_v(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(float(v))


def write_scenario(sc: Scenario, outdir: Path) -> tuple[Path, Truth]:
    series, truth = generate(sc)
    outdir.mkdir(parents=True, exist_ok=True)
    path = outdir / f"{sc.name}.om.txt"
    write_openmetrics(series, path)
    return path, truth


def backfill(files: list[Path], tsdb: Path) -> None:
    """``promtool tsdb create-blocks-from openmetrics FILE TSDB`` for each file."""
    from audit_tune.basics.errors import ServiceError
    from audit_tune.loadgen.prometheus import promtool

    tsdb.mkdir(parents=True, exist_ok=True)
    for f in files:
        r = subprocess.run(["nice", "-n", "10", promtool(), "tsdb", "create-blocks-from", "openmetrics",
                            "--max-block-duration=24h", str(f), str(tsdb)], capture_output=True, text=True, timeout=900)
        if r.returncode != 0:
            raise ServiceError(f"promtool backfill of {f} failed: {(r.stderr or r.stdout).strip()[-500:]}")


@contextlib.contextmanager
def backfilled_prometheus(names: list[str] | None = None, workdir: Path | None = None,
                          prom_args: tuple[str, ...] = ()) -> Iterator[tuple[Any, dict[str, Truth]]]:
    """Generate scenarios, backfill one TSDB, start the real Prometheus on it; yields (prom, truths)."""
    from audit_tune.loadgen.prometheus import Prometheus, scrape_config

    own = workdir is None
    wd = Path(tempfile.mkdtemp(prefix="audit-tune-promfix-")) if own else Path(workdir)
    try:
        all_sc = scenarios()
        files, truths = [], {}
        for name in names or list(all_sc):
            p, tr = write_scenario(all_sc[name], wd / "om")
            files.append(p)
            truths[name] = tr
        backfill(files, wd / "prom" / "data")
        for f in files:
            f.unlink()
        prom = Prometheus(scrape_config(None), workdir=wd / "prom", retention="36500d", extra_args=prom_args)
        with prom:
            yield prom, truths
    finally:
        if own:
            shutil.rmtree(wd, ignore_errors=True)
