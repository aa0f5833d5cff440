"""``tune simulate``: run one scenario through the simulator and print what happened."""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import typer

from audit_tune.basics.errors import ObjectiveViolated

if TYPE_CHECKING:
    from audit_tune.sim.scenario import Scenario

PANEL_WL = "Workload"
PANEL_RCV = "Receiver (webhook) and log writer"
PANEL_OUT = "Output"
PANEL_SD = "Shutdown and restarts (kube-apiserver flags where they are its own)"


def register(app: typer.Typer) -> None:
    app.command(
        "simulate",
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
        rich_help_panel="Simulate",
        help=(
            "Simulate the audit pipeline for given kube-apiserver audit flags and load.\n\n"
            "Audit flags are passed verbatim, as kube-apiserver spells them.\n\n"
            "Example: [bold]tune simulate --audit-webhook-batch-max-size=400 --rate 6000 --duration 2m[/bold]\n\n"
            "With no workload option it runs a built-in demo: 6,000 events/s for 2 minutes on the default "
            "flags, which drain at most 10 x 400 = 4,000 events/s, so events are dropped."
        ),
    )(simulate)


def simulate(
    ctx: typer.Context,
    scenario: Optional[str] = typer.Option(None, "--scenario", help="Scenario file (JSON or YAML) instead of the options.", rich_help_panel=PANEL_WL),
    flags_file: Optional[str] = typer.Option(None, "--flags-file", help="File of kube-apiserver flags, or a kube-apiserver static pod manifest.", rich_help_panel=PANEL_WL),
    rate: Optional[str] = typer.Option(None, "--rate", help="Audit events/s per cluster (all instances), e.g. 5000 or 5k.", rich_help_panel=PANEL_WL),
    request_rate: Optional[str] = typer.Option(None, "--request-rate", help="API requests/s instead of events/s.", rich_help_panel=PANEL_WL),
    duration: str = typer.Option("2m", "--duration", help="Simulated time, e.g. 10m.", rich_help_panel=PANEL_WL),
    arrivals: str = typer.Option("poisson", "--arrivals", help="poisson or deterministic arrivals.", rich_help_panel=PANEL_WL),
    profile: Optional[str] = typer.Option(None, "--profile", help="Step rate profile, events/s: '0s:1000,60s:8000'.", rich_help_panel=PANEL_WL),
    ramp: bool = typer.Option(False, "--ramp", help="Interpolate --profile linearly (a ramp).", rich_help_panel=PANEL_WL),
    burst: Optional[str] = typer.Option(None, "--burst", help="On/off bursts, events/s: 'on=20000,off=2000,mean-on=5s,mean-off=55s'.", rich_help_panel=PANEL_WL),
    trace: Optional[str] = typer.Option(None, "--trace", help="Arrival trace file: one request per line, 'time[,instance]'.", rich_help_panel=PANEL_WL),
    audit_log: list[str] = typer.Option([], "--audit-log", help="Replay audit log arrivals exactly: [INSTANCE=]PATH, a file or a folder of rotated (.gz) files (repeatable: one apiserver each); 'sample' = the bundled sample.", rich_help_panel=PANEL_WL),
    jobs: Optional[int] = typer.Option(None, "-j", "--jobs", min=1, help="With --audit-log: processes reading the log files in parallel (default: the cores available).", rich_help_panel=PANEL_WL),
    rate_series: Optional[str] = typer.Option(None, "--rate-series", help="Rate series file 'timestamp,rate' (events/s), replayed.", rich_help_panel=PANEL_WL),
    instances: int = typer.Option(1, "--instances", help="Number of apiservers behind the load balancer.", rich_help_panel=PANEL_WL),
    weights: Optional[str] = typer.Option(None, "--weights", help="Load balancer weights, e.g. 2,1,1.", rich_help_panel=PANEL_WL),
    event_size: Optional[str] = typer.Option(None, "--event-size", help="Bytes per event, e.g. 1.2KiB (default: by level and stage).", rich_help_panel=PANEL_WL),
    level: str = typer.Option("Metadata", "--level", help="Audit level of the requests.", rich_help_panel=PANEL_WL),
    omit_stages: list[str] = typer.Option([], "--omit-stages", help="Policy omitStages (repeatable), e.g. RequestReceived.", rich_help_panel=PANEL_WL),
    long_running_fraction: float = typer.Option(0.0, "--long-running-fraction", help="Share of requests that are watches (3 events).", rich_help_panel=PANEL_WL),
    webhook_latency: str = typer.Option("50ms", "--webhook-latency", help="Receiver latency: 200ms, lognormal:median=100ms,p99=1s, ...", rich_help_panel=PANEL_RCV),
    webhook_latency_per_inflight: str = typer.Option("0s", "--webhook-latency-per-inflight", help="Extra latency per concurrent POST.", rich_help_panel=PANEL_RCV),
    webhook_latency_per_kib: str = typer.Option("0s", "--webhook-latency-per-kib", help="Extra latency per KiB of batch body.", rich_help_panel=PANEL_RCV),
    webhook_failure_rate: float = typer.Option(0.0, "--webhook-failure-rate", help="Probability an attempt fails.", rich_help_panel=PANEL_RCV),
    webhook_error_status: int = typer.Option(500, "--webhook-error-status", help="Status of failed attempts.", rich_help_panel=PANEL_RCV),
    webhook_outage: list[str] = typer.Option([], "--webhook-outage", help="Outage window START-END[:refuse|hang|STATUS] (repeatable).", rich_help_panel=PANEL_RCV),
    webhook_retry_after: Optional[str] = typer.Option(None, "--webhook-retry-after", help="Retry-After (whole seconds) on the outages' 429/5xx answers; the webhook's REST client retries inside the attempt (client-go rest/with_retry.go).", rich_help_panel=PANEL_RCV),
    webhook_max_body: Optional[str] = typer.Option(None, "--webhook-max-body", help="Receiver body limit (413 above), e.g. 12MiB for Falco.", rich_help_panel=PANEL_RCV),
    log_write_latency: str = typer.Option("0s", "--log-write-latency", help="Cost of one log write (log backend).", rich_help_panel=PANEL_RCV),
    backends: Optional[str] = typer.Option(None, "--backends", help="Enabled backends: webhook, log or log,webhook (default: webhook, plus log when --audit-log-path is set).", rich_help_panel=PANEL_RCV),
    shutdown_delay: str = typer.Option("0s", "--shutdown-delay-duration", help="kube-apiserver flag: keep serving this long after SIGTERM.", rich_help_panel=PANEL_SD),
    watch_grace: str = typer.Option("0s", "--shutdown-watch-termination-grace-period", help="kube-apiserver flag: wait at most this long for watches at shutdown (0: not at all).", rich_help_panel=PANEL_SD),
    request_timeout: str = typer.Option("60s", "--request-timeout", help="kube-apiserver flag: non-long-running request timeout (504, or a closed connection once the answer is written), also the HTTP server's shutdown timeout.", rich_help_panel=PANEL_SD),
    restart_at: Optional[str] = typer.Option(None, "--restart-at", help="Restart the apiserver(s) at these times: SIGTERM, kill after --kill-after, e.g. 5m,20m.", rich_help_panel=PANEL_SD),
    kill_after: str = typer.Option("30s", "--kill-after", help="Kubelet grace period (terminationGracePeriodSeconds): SIGKILL this long after SIGTERM.", rich_help_panel=PANEL_SD),
    restart_gap: str = typer.Option("5s", "--restart-gap", help="From the old process's exit until the new one serves.", rich_help_panel=PANEL_SD),
    seed: int = typer.Option(1, "--seed", help="Random seed.", rich_help_panel=PANEL_OUT),
    engine: str = typer.Option("fast", "--engine", help="fast (default), reference or oracle.", rich_help_panel=PANEL_OUT),
    no_drain: bool = typer.Option(False, "--no-drain", help="Stop at --duration instead of shutting down like the apiserver.", rich_help_panel=PANEL_OUT),
    max_drops: Optional[int] = typer.Option(None, "--max-drops", help="Exit 3 when more events than this are lost.", rich_help_panel=PANEL_OUT),
    fmt: str = typer.Option("table", "-f", "--format", help="table, json or yaml.", rich_help_panel=PANEL_OUT),
    output: Optional[str] = typer.Option(None, "-o", "--output", help="Write to FILE instead of stdout.", rich_help_panel=PANEL_OUT),
    series: bool = typer.Option(False, "--series", help="Include batch sizes and occupancy series in JSON/YAML.", rich_help_panel=PANEL_OUT),
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress output on stderr.", rich_help_panel=PANEL_OUT),
    force: bool = typer.Option(False, "--force", help="Run a workload of more than 1e9 audit events (hours of CPU).", rich_help_panel=PANEL_OUT),
) -> int:
    from dataclasses import replace

    from audit_tune.basics.output import Progress, log, render, write_output
    from audit_tune.sim.api import run
    from audit_tune.sim.build import (
        ReceiverOptions,
        ShutdownCliOptions,
        WorkloadOptions,
        build_flags,
        build_scenario,
        build_shutdown,
    )
    from audit_tune.sim.scenario import Scenario

    audit_args = list(ctx.args)
    flags = build_flags(audit_args, flags_file)
    if scenario:
        sc = Scenario.load(scenario)
        if restart_at or shutdown_delay != "0s" or watch_grace != "0s" or request_timeout != "60s":
            sd, rt = build_shutdown(ShutdownCliOptions(delay=shutdown_delay, watch_grace=watch_grace,
                                                       request_timeout=request_timeout, restart_at=restart_at,
                                                       kill_after=kill_after, restart_gap=restart_gap))
            sc = replace(sc, shutdown=sd, request_timeout=rt).validate()
        if audit_args or flags_file:
            sc = sc.with_flags(build_flags(audit_args, flags_file) if flags_file else
                               __import__("audit_tune.sim.config", fromlist=["parse_flags"]).parse_flags(audit_args, base=sc.flags))
    else:
        wo = WorkloadOptions(rate=rate, request_rate=request_rate, duration=duration, arrivals=arrivals, profile=profile,
                             ramp=ramp, burst=burst, trace=trace, rate_series=rate_series, instances=instances,
                             weights=weights, event_size=event_size, level=level, omit_stages=list(omit_stages),
                             long_running_fraction=long_running_fraction)
        ro = ReceiverOptions(latency=webhook_latency, per_kib=webhook_latency_per_kib,
                             per_inflight=webhook_latency_per_inflight, failure_rate=webhook_failure_rate,
                             error_status=webhook_error_status, outages=list(webhook_outage), max_body=webhook_max_body,
                             retry_after=webhook_retry_after, log_write_latency=log_write_latency)
        bl = [b.strip() for b in backends.split(",")] if backends else None
        if audit_log:  # the logged arrivals replace the workload options (tune/auditlog_input.py)
            sc = _from_audit_log(audit_log, flags, wo, ro, seed, bl, no_drain, (jobs, not no_progress),
                                 [rate, request_rate, profile, burst, trace, rate_series])
        else:
            so = ShutdownCliOptions(delay=shutdown_delay, watch_grace=watch_grace, request_timeout=request_timeout,
                                    restart_at=restart_at, kill_after=kill_after, restart_gap=restart_gap)
            sc = build_scenario(flags, wo, ro, seed=seed, backends=bl, drain=not no_drain, so=so)
        if not any([rate, request_rate, profile, burst, trace, rate_series, scenario, audit_log]):
            log("tune simulate: no workload given; running the built-in demo (6,000 events/s for 2m on the given flags)")
    from audit_tune.sim.limits import check_size

    check_size(sc.workload, force)
    spin = sc.flags.spin_warning(sc.enabled)
    if spin:
        log(f"tune simulate: {spin}")
    bar = Progress(1.0, f"simulate ({engine})", enabled=not no_progress and sc.workload.duration >= 600)
    try:
        res = run(sc, engine=engine, progress=bar.update)
    finally:
        bar.close()
    data = res.to_dict(series=series)
    text = render(data, fmt) if fmt != "table" else _table(data)
    write_output(text, output)
    lost = sum(v for k, v in data["errors"].items())
    lost += sum(v for k, v in (data.get("restart_loss") or {}).items() if k not in ("not-emitted", "blocking-call-at-exit"))
    lost += data.get("blocking_calls_at_exit", 0)  # restarts' and the run's end's
    if max_drops is not None and lost > max_drops:
        raise ObjectiveViolated(f"{lost} audit events lost (errors {data['errors']}, restart_loss "
                                f"{data.get('restart_loss')}, blocking_calls_at_exit "
                                f"{data.get('blocking_calls_at_exit', 0)}), above --max-drops {max_drops}")
    return 0


def _from_audit_log(specs: list[str], flags, wo, ro, seed: int, backends, no_drain: bool, reading: tuple[Optional[int], bool],
                    others: list) -> Scenario:
    import dataclasses

    from audit_tune.basics.errors import InputError
    from audit_tune.basics.output import log
    from audit_tune.cli import auditlog_input
    from audit_tune.sim.build import build_scenario

    if any(others):
        raise InputError("--audit-log: replays the logged arrivals; drop --rate, --request-rate, --profile, --burst, "
                         "--trace and --rate-series")
    wl, info = auditlog_input.simulate_workload(specs, auditlog_input.ReadOptions(*reading))
    if reading[1]:
        log(f"tune simulate: replaying {info['events']:,} logged events of {', '.join(info['instances'])} exactly "
            f"({wl.duration:.1f}s, {info['event_size_bytes']} B each, the logs' mean)")
    sc = build_scenario(flags, dataclasses.replace(wo, rate="1", duration="1s"), ro, seed=seed, backends=backends,
                        drain=not no_drain)
    return dataclasses.replace(sc, workload=wl).validate()


def _table(d: dict) -> str:
    from io import StringIO

    from rich.console import Console
    from rich.table import Table

    from audit_tune.sim.units import format_size

    buf = StringIO()
    con = Console(file=buf, width=110, force_terminal=False, color_system=None, soft_wrap=True)
    cfg = d["config"]
    con.print(f"audit-tune {cfg['tool_version']} simulate  engine={d['engine']}  seed={d['seed']}  "
              f"simulated={d['simulated_seconds']:.1f}s  wall={d['wall_seconds']:.2f}s")
    changed = cfg["flags_changed"]
    con.print("flags: " + (" ".join(changed) if changed else "kube-apiserver defaults"))
    t = Table(show_header=True, header_style="bold")
    t.add_column("metric")
    t.add_column("value", justify="right")
    ev = d["events_total"]
    lost = sum(d["errors"].values())
    t.add_row("events_total", f"{ev:,}")
    t.add_row("delivered", f"{d['delivered']:,}")
    for k, v in d["errors"].items():
        pct = f"  ({100 * v / ev:.2f}%)" if ev and v else ""
        t.add_row(f"errors.{k}", f"{v:,}{pct}")
    if d["in_flight_at_end"]:
        t.add_row("in_flight_at_end", f"{d['in_flight_at_end']:,}")
    t.add_row("requests_rejected", f"{d['requests_rejected']:,}")
    if d.get("requests_timed_out"):
        t.add_row("requests_timed_out (at --request-timeout)", f"{d['requests_timed_out']:,}")
        t.add_row("  answered 504", f"{d['requests_timed_out_504']:,}")
        t.add_row("  connection closed, no complete answer", f"{d['requests_closed_at_timeout']:,}")
    if d.get("requests_rejected_after_timeout"):
        late = d["rejected_after_timeout_seconds"]
        t.add_row("requests_rejected_after_timeout (after the 504)", f"{d['requests_rejected_after_timeout']:,}")
        t.add_row("  rejection counted after arrival p50 / max", f"{late['p50']:.3f}s / {late['max']:.3f}s")
    if d.get("events_not_emitted"):
        t.add_row("events_not_emitted (after exit)", f"{d['events_not_emitted']:,}")
    if d.get("blocking_calls_at_exit"):
        t.add_row("blocking_calls_at_exit (cut off, never delivered)", f"{d['blocking_calls_at_exit']:,}")
    if d.get("events_refused"):
        t.add_row("events_refused (no apiserver up)", f"{d['events_refused']:,}")
    for cause, v in (d.get("restart_loss") or {}).items():
        if v:
            t.add_row(f"restart_loss.{cause}", f"{v:,}")
    t.add_row("batches", f"{d['batches']:,}")
    bs = d["batch_size"]
    if bs["count"]:
        t.add_row("batch size mean / max", f"{bs['mean']:.1f} / {bs['max']}")
    lat = d["delivery_latency_seconds"]
    if lat["p50"] is not None:
        t.add_row("delivery latency p50 / p99 / max", f"{lat['p50']:.3f}s / {lat['p99']:.3f}s / {lat['max']:.3f}s")
    unmeasured = set((d.get("oracle") or {}).get("not_measured") or ())  # the oracle cannot see these

    def row(name: str, text: str) -> None:
        t.add_row(name, "not measured (oracle)" if name in unmeasured else text)

    row("max_buffer_occupancy", f"{d['max_buffer_occupancy']:,}")
    row("max_inflight_batches", f"{d['max_inflight_batches']:,}")
    row("peak_memory_bytes", f"{d['peak_memory_bytes']:,} ({format_size(d['peak_memory_bytes'])})")
    row("throttle_wait_seconds_total", f"{d['throttle_wait_seconds_total']:.1f}")
    if d["request_added_latency_seconds"]["p50"] is not None:
        a = d["request_added_latency_seconds"]
        t.add_row("request latency added p50 / p99", f"{a['p50']:.3f}s / {a['p99']:.3f}s")
    con.print(t)
    killed = sum(v for k, v in (d.get("restart_loss") or {}).items() if k not in ("not-emitted", "blocking-call-at-exit"))
    if lost:
        con.print(f"LOST {lost:,} of {ev:,} audit events ({100 * lost / ev:.2f}%).")
    elif not killed and not d.get("blocking_calls_at_exit"):
        con.print("No audit events lost.")
    if killed:
        con.print(f"Restarts killed {killed:,} accepted audit events before delivery (restart_loss).")
    if d.get("blocking_calls_at_exit"):
        con.print(f"{d['blocking_calls_at_exit']:,} events lost in blocking audit calls the process's exit cut off.")
    if d.get("events_not_emitted"):
        con.print(f"{d['events_not_emitted']:,} events never emitted: their requests outlived the apiserver process.")
    if len(d["instances"]) > 1:
        it = Table(title="per instance")
        for c in ("instance", "events", "buffered drops", "webhook drops", "delivered", "max occupancy"):
            it.add_column(c, justify="right")
        for i in d["instances"]:
            it.add_row(i["name"], f"{i['events_total']:,}", f"{i['errors']['buffered']:,}", f"{i['errors']['webhook']:,}",
                       f"{i['delivered']:,}", f"{i['max_buffer_occupancy']:,}")
        con.print(it)
    return buf.getvalue()
