"""``tune snapshot``: read the audit history from Prometheus into an ``audit-tune-snapshot/v1`` file."""
from __future__ import annotations

import time
from typing import Optional

import typer

from audit_tune.analysis.prom import PromSettings
from audit_tune.cli.auditlog_input import HELP as AUDIT_LOG_HELP
from audit_tune.cli.auditlog_input import ReadOptions
from audit_tune.cli.inputs import parse_end, take_snapshot_or_say_missing
from audit_tune.cli.options import prometheus_options

PANEL = "Snapshot"


def register(app: typer.Typer) -> None:
    app.command(
        "snapshot",
        rich_help_panel="Recommend",
        help=(
            "Read kube-apiserver audit metrics from Prometheus into a snapshot file for 'tune recommend'.\n\n"
            "Example: [bold]tune snapshot -p http://prometheus.monitoring:9090 -o snap.json --history 7d[/bold]\n\n"
            "Missing series are explained per instance (stderr and the file's 'missing' list). Exit 4 when no "
            "instance has apiserver_audit_event_total. Format: docs/snapshot.md.\n\n"
            "From audit logs instead (or as well): [bold]tune snapshot --audit-log apiserver-0=/var/log/kubernetes/audit/ "
            "-o snap.json[/bold] (docs/audit-log.md)."
        ),
    )(snapshot)


@prometheus_options
def snapshot(
    prom: PromSettings,
    output: str = typer.Option(..., "-o", "--output", help="Snapshot file to write (JSON; '-' for stdout).", rich_help_panel=PANEL),
    history: str = typer.Option("7d", "--history", help="How far back to read, e.g. 7d, 24h.", rich_help_panel=PANEL),
    step: str = typer.Option("15s", "--step", help="Resolution of the rate series; raised to the scrape interval and to "
                                                    "stay under 11,000 points.", rich_help_panel=PANEL),
    end: Optional[str] = typer.Option(None, "--end", help="End of the window: unix seconds or RFC 3339 (default: now).",
                                      rich_help_panel=PANEL),
    instance: list[str] = typer.Option([], "--instance", help="Only this apiserver (the 'instance' label; repeatable).",
                                       rich_help_panel=PANEL),
    selector: Optional[str] = typer.Option(None, "--selector", help="Extra label matchers for every query, e.g. "
                                                                    "'job=\"apiserver\"'.", rich_help_panel=PANEL),
    webhook_host: Optional[str] = typer.Option(None, "--webhook-host", help="host:port of the audit webhook "
                                               "(default: the non-loopback POST host of the apiserver's rest client).",
                                               rich_help_panel=PANEL),
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress output on stderr.", rich_help_panel=PANEL),
    audit_log: list[str] = typer.Option([], "--audit-log", help=AUDIT_LOG_HELP, rich_help_panel=PANEL),
    audit_log_mode: str = typer.Option("blocking", "--audit-log-mode", help="The mode the log backend ran in "
                                       "(blocking: the log is complete; batch: it may miss dropped events).",
                                       rich_help_panel=PANEL),
    jobs: Optional[int] = typer.Option(None, "-j", "--jobs", min=1, help="With --audit-log: processes reading the log "
                                       "files in parallel (default: the cores available).", rich_help_panel=PANEL),
) -> int:
    from audit_tune.analysis.prom import PromClient, SnapshotRequest, human_duration
    from audit_tune.basics.errors import InputError
    from audit_tune.basics.output import log, write_output
    from audit_tune.sim.units import parse_duration

    if audit_log:  # audit log files (analysis.auditlog), with Prometheus for what a log cannot see
        return _from_audit_log(prom, audit_log, audit_log_mode, output, step, selector, webhook_host,
                               ReadOptions(jobs, not no_progress))
    prom.validate()
    req = SnapshotRequest(history=parse_duration(history, "--history"), step=parse_duration(step, "--step"),
                          end=parse_end(end) if end else None, instances=list(instance), selector=selector or "",
                          webhook_host=webhook_host)
    if req.step <= 0:
        raise InputError("--step: must be > 0s, e.g. 15s")
    if webhook_host and ":" not in webhook_host:
        raise InputError(f"--webhook-host {webhook_host!r}: want host:port as in the webhook kubeconfig")
    say = (lambda m: None) if no_progress else log
    say(f"tune snapshot: reading {human_duration(req.history)} from {prom.display_url}"
        + (f" (cluster {prom.cluster_label}={prom.cluster})" if prom.cluster else ""))
    client = PromClient(prom)
    t0 = time.monotonic()
    snap = take_snapshot_or_say_missing(client, req, "snapshot", say)
    for m in snap.missing:
        log(f"tune snapshot: missing: {m}")
    write_output(snap.dumps(), output)
    say(f"tune snapshot: {len(snap.instances)} instance(s), {len(snap.missing)} missing item(s), "
        f"{client.queries} queries in {time.monotonic() - t0:.1f}s"
        + (f" -> {output}" if output not in ("-", "") else ""))
    return 0


def _from_audit_log(prom: PromSettings, specs: list[str], log_mode: str, output: str, step: str,
                    selector: Optional[str], webhook_host: Optional[str], opts: ReadOptions) -> int:
    import json

    from audit_tune.basics.jsondata import as_list, as_object
    from audit_tune.basics.output import log, write_output
    from audit_tune.cli import auditlog_input
    from audit_tune.sim.units import parse_duration

    prom.validate(require_url=False)
    say = (lambda m: log(f"tune snapshot: {m}")) if opts.progress else (lambda m: None)
    snap = auditlog_input.snapshot(specs, "snapshot", parse_duration(step, "--step"), log_mode, prom if prom.url else None,
                                   selector or "", webhook_host, opts, say=say)
    write_output(json.dumps(snap, indent=1, allow_nan=False) + "\n", output)
    say(f"{len(as_object(snap['instances'], 'instances'))} instance(s) from the audit log, "
        f"{len(as_list(snap['missing'], 'missing'))} missing item(s)"
        + (f" -> {output}" if output not in ("-", "") else ""))
    return 0

