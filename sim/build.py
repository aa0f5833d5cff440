"""Build a :class:`Scenario` from command-line style options (shared by ``tune simulate`` and others)."""
from __future__ import annotations

from dataclasses import dataclass, field, replace

from audit_tune.basics.errors import InputError
from audit_tune.sim.config import AuditFlags, load_flags_file, parse_flags
from audit_tune.sim.latency import parse_latency
from audit_tune.sim.receiver import LogWriter, Outage, Receiver
from audit_tune.sim.scenario import Scenario
from audit_tune.sim.shutdown import ShutdownOptions
from audit_tune.sim.units import parse_duration, parse_rate, parse_size
from audit_tune.sim.workload import (
    STAGES,
    Arrivals,
    OnOff,
    RateProfile,
    RequestClass,
    Workload,
)
from audit_tune.sim.workload_files import read_rate_series, read_trace

# The built-in demo: 6,000 audit events/s on one apiserver for 2 minutes, default flags.
# Defaults drain 10 qps x 400 = 4,000 events/s, so the buffer fills and events are dropped.
DEMO_RATE = 6000.0
DEMO_DURATION = 120.0


@dataclass
class WorkloadOptions:
    rate: str | None = None  # audit events/s
    request_rate: str | None = None
    duration: str = "2m"
    arrivals: str = "poisson"  # poisson | deterministic
    profile: str | None = None  # "0s:100,60s:5000" step, or ramp with --ramp
    ramp: bool = False
    burst: str | None = None  # onoff: "on=20000,off=2000,mean-on=5s,mean-off=55s" (events/s)
    trace: str | None = None
    rate_series: str | None = None
    rate_series_unit: str = "events"
    instances: int = 1
    weights: str | None = None
    event_size: str | None = None
    level: str = "Metadata"
    omit_stages: list[str] = field(default_factory=list)
    long_running_fraction: float = 0.0
    watch_duration: str = "5m"
    request_duration: str = "0s"


def _parse_profile(text: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    ts, rs = [], []
    for part in text.split(","):
        t, sep, r = part.partition(":")
        if not sep:
            raise InputError(f"--profile {text}: expected 'time:rate,...' like 0s:1000,60s:5000")
        ts.append(parse_duration(t, "--profile time"))
        rs.append(parse_rate(r, "--profile rate"))
    if any(b <= a for a, b in zip(ts, ts[1:])):
        raise InputError(f"--profile {text}: times must increase")
    return tuple(ts), tuple(rs)


def build_workload(o: WorkloadOptions) -> Workload:
    level = o.level
    if level not in ("None", "Metadata", "Request", "RequestResponse"):
        raise InputError(f"--level {level}: use None, Metadata, Request or RequestResponse")
    for s in o.omit_stages:
        if s not in STAGES:
            raise InputError(f"--omit-stages {s}: unknown stage; valid: {', '.join(STAGES)}")
    sizes = None
    if o.event_size:
        sz = parse_size(o.event_size, "--event-size")
        if sz <= 0:
            raise InputError("--event-size: must be > 0 bytes")
        sizes = (sz, sz, sz, sz)
    if not 0 <= o.long_running_fraction < 1:
        raise InputError("--long-running-fraction: must be within [0, 1)")
    classes = [RequestClass("normal", 1.0 - o.long_running_fraction, level,
                            duration=parse_duration(o.request_duration, "--request-duration"), sizes=sizes)]
    if o.long_running_fraction > 0:
        classes.append(RequestClass("watch", o.long_running_fraction, level, long_running=True,
                                    duration=parse_duration(o.watch_duration, "--watch-duration"), sizes=sizes))
    omit = frozenset(o.omit_stages)
    duration = parse_duration(o.duration, "--duration")
    if duration <= 0:
        raise InputError(f"--duration {o.duration}: must be > 0")
    weights: tuple[float, ...] = ()
    if o.weights:
        try:
            weights = tuple(float(x) for x in o.weights.split(","))
        except ValueError:
            raise InputError(f"--weights {o.weights}: expected numbers like 2,1,1") from None
    probe = Workload(classes=tuple(classes), policy_omit_stages=omit)
    epr = probe.events_per_request()
    if epr <= 0:
        raise InputError("the request mix emits no audit events (level None or every stage omitted)")

    def to_req(ev_rate: float) -> float:
        return ev_rate / epr

    given = [x for x in (o.rate, o.request_rate, o.profile, o.burst, o.trace, o.rate_series) if x]
    if len(given) > 1:
        raise InputError("choose one workload source: --rate, --request-rate, --profile, --burst, --trace or --rate-series")
    if o.arrivals not in ("poisson", "deterministic"):
        raise InputError(f"--arrivals {o.arrivals}: use poisson or deterministic")
    if o.trace:
        times, insts = read_trace(o.trace)
        arrivals = Arrivals("trace", trace=times, trace_instances=insts)
        if insts:
            n = max(insts) + 1
            if n > o.instances:
                o = replace(o, instances=n)
        if not o.duration or duration < times[-1]:
            duration = times[-1] + 1e-9
    elif o.rate_series:
        prof = read_rate_series(o.rate_series)
        if o.rate_series_unit == "events":
            prof = prof.scaled(1.0 / epr)
        arrivals = Arrivals(o.arrivals, prof)
    elif o.burst:
        kv = {}
        for part in o.burst.split(","):
            k, _, v = part.partition("=")
            kv[k.strip()] = v.strip()
        try:
            arrivals = Arrivals("poisson", onoff=OnOff(to_req(parse_rate(kv["on"], "--burst on")),
                                                        to_req(parse_rate(kv["off"], "--burst off")),
                                                        parse_duration(kv["mean-on"], "--burst mean-on"),
                                                        parse_duration(kv["mean-off"], "--burst mean-off")))
        except KeyError as e:
            raise InputError(f"--burst {o.burst}: missing {e.args[0]}; use on=20000,off=2000,mean-on=5s,mean-off=55s") from None
    elif o.profile:
        ts, rs = _parse_profile(o.profile)
        arrivals = Arrivals(o.arrivals, RateProfile(ts, tuple(to_req(r) for r in rs), "linear" if o.ramp else "step"))
    elif o.request_rate:
        arrivals = Arrivals(o.arrivals, RateProfile.constant(parse_rate(o.request_rate, "--request-rate")))
    else:
        rate = parse_rate(o.rate, "--rate") if o.rate else DEMO_RATE
        arrivals = Arrivals(o.arrivals, RateProfile.constant(to_req(rate)))
    return Workload(arrivals, duration, tuple(classes), omit, o.instances, weights).validate()


@dataclass
class ReceiverOptions:
    latency: str = "50ms"
    per_kib: str = "0s"
    per_inflight: str = "0s"
    failure_rate: float = 0.0
    error_status: int = 500
    outages: list[str] = field(default_factory=list)
    retry_after: str | None = None
    max_body: str | None = None
    log_write_latency: str = "0s"
    log_failure_rate: float = 0.0


def parse_outage(text: str) -> Outage:
    span, _, kind = text.partition(":")
    a, sep, b = span.partition("-")
    if not sep:
        raise InputError(f"--webhook-outage {text}: expected START-END[:refuse|hang|STATUS], e.g. 10s-40s:503")
    start, end = parse_duration(a, "--webhook-outage start"), parse_duration(b, "--webhook-outage end")
    if end <= start:
        raise InputError(f"--webhook-outage {text}: end must be after start")
    kind = kind or "503"
    if kind in ("refuse", "hang"):
        return Outage(start, end, kind)
    if not kind.isdigit() or not 100 <= int(kind) <= 599 or 200 <= int(kind) < 300:
        raise InputError(f"--webhook-outage {text}: kind must be refuse, hang or a non-2xx HTTP status")
    return Outage(start, end, "status", int(kind))


def parse_retry_after(text: str, what: str = "--webhook-retry-after") -> int:
    """A Retry-After header value: whole seconds (client-go reads it with ``strconv.Atoi``)."""
    sec = parse_duration(text, what)
    if sec < 0 or sec != int(sec):
        raise InputError(f"{what} {text}: Retry-After carries whole seconds >= 0, e.g. 5s")
    return int(sec)


def build_receiver(o: ReceiverOptions) -> tuple[Receiver, LogWriter]:
    if not 0 <= o.failure_rate <= 1:
        raise InputError(f"--webhook-failure-rate {o.failure_rate}: must be within [0, 1]")
    if not 0 <= o.log_failure_rate <= 1:
        raise InputError(f"--log-failure-rate {o.log_failure_rate}: must be within [0, 1]")
    if not (o.error_status < 200 or o.error_status >= 300) or not 100 <= o.error_status <= 599:
        raise InputError(f"--webhook-error-status {o.error_status}: must be a non-2xx HTTP status")
    rcv = Receiver(latency=parse_latency(o.latency, "--webhook-latency"),
                   per_kib=parse_duration(o.per_kib, "--webhook-latency-per-kib"),
                   per_inflight=parse_duration(o.per_inflight, "--webhook-latency-per-inflight"),
                   error_rate=o.failure_rate, error_status=o.error_status,
                   outages=_with_retry_after(tuple(parse_outage(x) for x in o.outages), o.retry_after),
                   max_body_bytes=parse_size(o.max_body, "--webhook-max-body") if o.max_body else 0)
    lw = LogWriter(per_event=parse_latency(o.log_write_latency, "--log-write-latency"), error_rate=o.log_failure_rate)
    return rcv, lw


def _with_retry_after(outages: tuple[Outage, ...], retry_after: str | None) -> tuple[Outage, ...]:
    if retry_after is None:
        return outages
    ra = parse_retry_after(retry_after)
    if not any(o.kind == "status" for o in outages):
        raise InputError(f"--webhook-retry-after {retry_after}: needs a --webhook-outage that answers a status, e.g. 0s-120s:503")
    return tuple(replace(o, retry_after=ra) if o.kind == "status" else o for o in outages)


@dataclass
class ShutdownCliOptions:
    """kube-apiserver's ``--shutdown-delay-duration``, ``--shutdown-watch-termination-grace-period``
    and ``--request-timeout``, and the restarts (``--restart-at``, ``--kill-after``, ``--restart-gap``)."""

    delay: str = "0s"
    watch_grace: str = "0s"
    request_timeout: str = "60s"
    restart_at: str | None = None
    kill_after: str = "30s"
    restart_gap: str = "5s"


def build_shutdown(o: ShutdownCliOptions) -> tuple[ShutdownOptions, float]:
    """The shutdown options and the request timeout (seconds)."""
    at = tuple(parse_duration(x.strip(), "--restart-at") for x in o.restart_at.split(",") if x.strip()) \
        if o.restart_at else ()
    sd = ShutdownOptions(delay=parse_duration(o.delay, "--shutdown-delay-duration"),
                         watch_grace=parse_duration(o.watch_grace, "--shutdown-watch-termination-grace-period"),
                         restart_at=at, kill_after=parse_duration(o.kill_after, "--kill-after"),
                         restart_gap=parse_duration(o.restart_gap, "--restart-gap"))
    return sd, parse_duration(o.request_timeout, "--request-timeout")


def build_flags(audit_args: list[str], flags_file: str | None = None) -> AuditFlags:
    base = load_flags_file(flags_file) if flags_file else AuditFlags()
    return parse_flags(audit_args, base=base)


def build_scenario(flags: AuditFlags, wo: WorkloadOptions, ro: ReceiverOptions, seed: int = 1,
                   backends: list[str] | None = None, drain: bool = True,
                   so: ShutdownCliOptions | None = None) -> Scenario:
    if backends is None:
        # The webhook is what audit-tune is about; the log joins when --audit-log-path is set.
        backends = ["log", "webhook"] if flags.log_file.path else ["webhook"]
    rcv, lw = build_receiver(ro)
    sd, rt = build_shutdown(so or ShutdownCliOptions())
    return Scenario(flags=flags, workload=build_workload(wo), receiver=rcv, log_writer=lw,
                    backends=tuple(backends), seed=seed, drain=drain, shutdown=sd, request_timeout=rt).validate()
