"""``tune snapshot``: read the audit history from Prometheus into an ``audit-tune-snapshot/v1`` file."""
from __future__ import annotations

import time
from typing import Optional

import typer

from audit_tune.analysis.prom import PromSettings
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
            "instance has apiserver_audit_event_total. Format: docs/snapshot.md."
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
) -> int:
    from audit_tune.analysis.prom import PromClient, SnapshotRequest, human_duration, partial_snapshot, take_snapshot
    from audit_tune.basics.errors import InputError, NotEnoughData
    from audit_tune.sim.units import parse_duration
    from audit_tune.basics.output import log, write_output

    prom.validate()
    req = SnapshotRequest(history=parse_duration(history, "--history"), step=parse_duration(step, "--step"),
                          end=_parse_end(end) if end else None, instances=list(instance), selector=selector or "",
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
    try:
        snap = take_snapshot(client, req, log=say)
    except NotEnoughData as e:
        part = partial_snapshot(e)
        for m in (part.missing if part else []):
            log(f"tune snapshot: missing: {m}")
        raise
    for m in snap.missing:
        log(f"tune snapshot: missing: {m}")
    write_output(snap.dumps(), output)
    say(f"tune snapshot: {len(snap.instances)} instance(s), {len(snap.missing)} missing item(s), "
        f"{client.queries} queries in {time.monotonic() - t0:.1f}s"
        + (f" -> {output}" if output not in ("-", "") else ""))
    return 0


def _parse_end(text: str) -> float:
    from datetime import datetime

    from audit_tune.basics.errors import InputError

    try:
        return float(text)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise InputError(f"--end {text!r}: want unix seconds or RFC 3339 such as 2026-05-28T12:00:00Z") from None
