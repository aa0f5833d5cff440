"""``tune loadtest``: offer an open-loop request load to a kube-apiserver and record what happened.

Thin: flags -> :class:`loadgen.loadtest.LoadTestConfig` + :class:`loadgen.kubetarget.Target`,
safety check, run, then the record (:mod:`loadgen.record`) to stdout or ``-o FILE``.

Exit codes: 0 ok; 1 bad input, unsafe target, unreachable apiserver; 3 with ``--fail-on-drops``
when the apiserver counted dropped audit events (``apiserver_audit_error_total``) in the window;
4 with ``--fail-if-behind`` when the generator could not offer the requested load;
130 interrupted (the record is still written and the objects cleaned up).

``--verify`` (needs ``--sink-url``) replays the run through the simulator with the same flags and
policy (:mod:`loadgen.verify`), prints observed vs predicted on stderr, adds the report to the
record as ``verify``, and exits 3 when observed drops exceed ``--max-drops``, when prediction and
observation disagree beyond the tolerance, or when events were lost.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, List, Optional

import typer

if TYPE_CHECKING:
    from audit_tune.loadgen.faults import FaultConfig
    from audit_tune.loadgen.quiet import AuditTotals
    from audit_tune.loadgen.sink_stats import SinkStats
    from audit_tune.loadgen.verify_result import VerifyReport

from audit_tune.basics import files
from audit_tune.basics.errors import InputError, NotEnoughData, ObjectiveViolated, TuneError

PANEL = "Load testing"
TGT = "Target"
LOAD = "Load"
OUT = "Output"
VERIFY = "Verification"

HELP = """Offer an open-loop load (configmaps/secrets create/get/list/update/patch/delete/watch) to a kube-apiserver
and write a run record: requested vs achieved rate, send lag, latency, status codes, the apiserver's audit
counter deltas, the sink's counts, and the request trace.

Only loopback or kind clusters unless --i-understand-this-is-not-a-test-cluster.

Example:  [bold]tune loadtest --kubeconfig ~/.cache/audit-tune/clusters/demo/kubeconfig --rate 300 --duration 60s --sink-url http://127.0.0.1:8443 -o run.json[/bold]
"""


def register(app: typer.Typer) -> None:
    app.command("loadtest", help=HELP, rich_help_panel=PANEL)(loadtest_cmd)


def loadtest_cmd(
    kubeconfig: Optional[Path] = typer.Option(None, "--kubeconfig", help="Kubeconfig (client cert/key + CA, or token). Default $KUBECONFIG or ~/.kube/config unless --server.", rich_help_panel=TGT),
    context: Optional[str] = typer.Option(None, "--context", help="Kubeconfig context (default: current-context).", rich_help_panel=TGT),
    server: Optional[str] = typer.Option(None, "--server", help="API server URL instead of a kubeconfig.", rich_help_panel=TGT),
    client_cert: Optional[Path] = typer.Option(None, "--client-cert", rich_help_panel=TGT),
    client_key: Optional[Path] = typer.Option(None, "--client-key", rich_help_panel=TGT),
    ca_file: Optional[Path] = typer.Option(None, "--ca-file", rich_help_panel=TGT),
    token_file: Optional[Path] = typer.Option(None, "--token-file", help="Bearer token file (never printed).", rich_help_panel=TGT),
    insecure: bool = typer.Option(False, "--insecure-skip-tls-verify", rich_help_panel=TGT),
    not_test_ok: bool = typer.Option(False, "--i-understand-this-is-not-a-test-cluster", help="Allow a server that is not loopback and not kind.", rich_help_panel=TGT),
    rate: str = typer.Option("100", "--rate", help="300 | ramp:100..1000 | step:100,200,400@10s | burst:100,2000@10s/1s | replay:FILE.csv (t,rate)", rich_help_panel=LOAD),
    duration: Optional[str] = typer.Option(None, "--duration", help="Measured window (default 60s; replay: the file's span).", rich_help_panel=LOAD),
    arrivals: str = typer.Option("constant", "--arrivals", help="constant (evenly spaced) | poisson.", rich_help_panel=LOAD),
    mix: str = typer.Option("create=1,get=4,list=1,update=1,patch=1,delete=1", "--mix", help="Verb weights over create,get,list,update,patch,delete,watch.", rich_help_panel=LOAD),
    resources: str = typer.Option("configmaps,secrets", "--resources", help="Resource weights, e.g. configmaps=3,secrets=1.", rich_help_panel=LOAD),
    namespaces: int = typer.Option(1, "--namespaces", help="Namespaces to create and spread requests over.", rich_help_panel=LOAD),
    namespace_prefix: str = typer.Option("audit-tune-lt", "--namespace-prefix", rich_help_panel=LOAD),
    object_size: str = typer.Option("1KiB", "--object-size", help="Approximate JSON size of created/updated objects.", rich_help_panel=LOAD),
    preseed: int = typer.Option(20, "--preseed", help="Objects created per namespace and resource before the window.", rich_help_panel=LOAD),
    watch_duration: str = typer.Option("10s", "--watch-duration", rich_help_panel=LOAD),
    list_limit: int = typer.Option(100, "--list-limit", help="?limit= on lists (0 = none).", rich_help_panel=LOAD),
    max_inflight: int = typer.Option(1024, "--max-inflight", help="Most requests on the wire at once; waiting for a slot shows as send lag.", rich_help_panel=LOAD),
    request_timeout: str = typer.Option("30s", "--request-timeout", rich_help_panel=LOAD),
    drain_timeout: str = typer.Option("30s", "--drain-timeout", help="After the window, wait at most this long for in-flight requests, then cancel them: the run ends by --duration + this.", rich_help_panel=LOAD),
    max_lag: str = typer.Option("100ms", "--max-lag", help="Send-lag p99 above this means the generator fell behind.", rich_help_panel=LOAD),
    max_late: str = typer.Option("1s", "--max-late", help="A request this late behind its scheduled time is shed (not sent, counted): no catch-up storm.", rich_help_panel=LOAD),
    workers: Optional[int] = typer.Option(None, "--workers", help="Generator processes sharing the schedule (default: the cores available).", rich_help_panel=LOAD),
    seed: int = typer.Option(1, "--seed", rich_help_panel=LOAD),
    no_cleanup: bool = typer.Option(False, "--no-cleanup", help="Keep the objects and namespaces.", rich_help_panel=LOAD),
    no_metrics: bool = typer.Option(False, "--no-metrics", help="Do not scrape the apiserver's /metrics.", rich_help_panel=LOAD),
    sink_url: Optional[str] = typer.Option(None, "--sink-url", help="The audit sink's base URL (reads /stats before and after).", rich_help_panel=OUT),
    sink_ca: Optional[Path] = typer.Option(None, "--sink-ca", help="CA to trust for an HTTPS sink.", rich_help_panel=OUT),
    webhook_host: Optional[str] = typer.Option(None, "--webhook-host", help="host:port of the webhook as the apiserver sees it (default: from --sink-url).", rich_help_panel=OUT),
    settle: str = typer.Option("0s", "--settle", help="After the window, wait up to this long for the sink's count to stop growing.", rich_help_panel=OUT),
    audit_flag: List[str] = typer.Option([], "--audit-flag", help="An --audit-* flag in force, echoed in the record (repeatable).", rich_help_panel=OUT),
    flags_file: Optional[Path] = typer.Option(None, "--flags-file", help="File of the --audit-* flags in force.", rich_help_panel=OUT),
    fmt: str = typer.Option("json", "-f", "--format", help="json | yaml | table", rich_help_panel=OUT),
    output: Optional[str] = typer.Option(None, "-o", "--output", help="Write the record here (atomically); a large trace goes to FILE.trace.csv.", rich_help_panel=OUT),
    trace_inline_max: int = typer.Option(2000, "--trace-inline-max", help="Inline the trace up to this many requests.", rich_help_panel=OUT),
    fail_if_behind: bool = typer.Option(False, "--fail-if-behind", help="Exit 4 if the requested load was not offered.", rich_help_panel=OUT),
    fail_on_drops: bool = typer.Option(False, "--fail-on-drops", help="Exit 3 if the apiserver counted dropped audit events.", rich_help_panel=OUT),
    no_progress: bool = typer.Option(False, "--no-progress", rich_help_panel=OUT),
    verify: bool = typer.Option(False, "--verify", help="Replay the run through the simulator and compare (needs --sink-url); exit 3 on drops above --max-drops, a prediction off by more than the tolerance, or lost events.", rich_help_panel=VERIFY),
    max_drops: float = typer.Option(0, "--max-drops", help="--verify: most dropped audit events allowed.", rich_help_panel=VERIFY),
    policy: Optional[Path] = typer.Option(None, "--policy", help="--verify: the audit policy in force (default: the audit-tune cluster's, else the bundled default).", rich_help_panel=VERIFY),
    sink_error_rate: float = typer.Option(0.0, "--sink-error-rate", help="--verify: the sink's --error-rate.", rich_help_panel=VERIFY),
    sink_error_status: int = typer.Option(503, "--sink-error-status", help="--verify: the sink's --error-status.", rich_help_panel=VERIFY),
    sink_outage: List[str] = typer.Option([], "--sink-outage", help="--verify: the sink's --outage START-END[:MODE] (sink-relative, as given to the sink; repeatable).", rich_help_panel=VERIFY),
) -> int:
    from audit_tune.basics.output import Progress, log, render, write_output
    from audit_tune.loadgen import kubetarget
    from audit_tune.loadgen.loadtest import LoadTestConfig, available_cores, run_loadtest
    from audit_tune.loadgen.record import write_record
    from audit_tune.sim.units import parse_duration, parse_size

    if fmt not in ("json", "yaml", "table"):
        raise InputError(f"--format {fmt}: use json, yaml or table")
    token = None
    if token_file is not None:
        token = files.read_text(token_file, "--token-file", "a bearer token", files.SECRET_BYTES).strip()
    if server:
        if kubeconfig:
            raise InputError("--server and --kubeconfig are exclusive")
        target = kubetarget.from_flags(server, str(client_cert) if client_cert else None,
                                       str(client_key) if client_key else None,
                                       str(ca_file) if ca_file else None, token, insecure)
    else:
        target = kubetarget.from_kubeconfig(kubeconfig, context)
        if token:
            target.token = token
    why = kubetarget.check_safe(target, not_test_ok)
    if why == "override":
        log(f"warning: load-testing {target.server}, which is not a local or kind cluster (you said so)")
    flags = list(audit_flag)
    if flags_file is not None:
        text = files.read_text(flags_file, "--flags-file", "one --audit-... flag per line")
        flags += [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    cfg = LoadTestConfig(
        rate=rate, duration=parse_duration(duration, "--duration") if duration else None, arrivals=arrivals,
        mix=mix, resources=resources, namespaces=namespaces, namespace_prefix=namespace_prefix,
        object_size=parse_size(object_size, "--object-size"), preseed=preseed,
        watch_duration=parse_duration(watch_duration, "--watch-duration"), list_limit=list_limit,
        max_inflight=max_inflight, request_timeout=parse_duration(request_timeout, "--request-timeout"),
        drain_timeout=parse_duration(drain_timeout, "--drain-timeout"), max_lag=parse_duration(max_lag, "--max-lag"),
        max_late=parse_duration(max_late, "--max-late"),
        workers=workers if workers is not None else min(available_cores(), max_inflight),
        seed=seed, cleanup=not no_cleanup, scrape_metrics=not no_metrics, sink_url=sink_url,
        sink_ca=str(sink_ca) if sink_ca else None, webhook_host=webhook_host,
        settle=parse_duration(settle, "--settle"), audit_flags=tuple(flags),
    )
    pre = None
    if verify:
        if not sink_url:
            raise InputError("--verify needs --sink-url (the sink's latencies, counts and store)")
        pre = _verify_before(target, sink_url, str(sink_ca) if sink_ca else None, flags)
    bar: Progress | None = None

    def progress(t: float, total: float, sent: int, inflight: int) -> None:
        nonlocal bar
        if bar is None:
            bar = Progress(total, "loadtest", enabled=not no_progress)
        bar.update(t)

    try:
        record, trace = run_loadtest(cfg, target, progress=progress, handle_signals=True)
    finally:
        if bar is not None:
            bar.close()
    report = None
    verify_error: Exception | None = None
    if pre is not None and sink_url and not record.get("interrupted"):
        try:
            from audit_tune.loadgen.faults import FaultConfig

            faults = FaultConfig.from_flags(error_rate=sink_error_rate, error_status=sink_error_status,
                                            outages=list(sink_outage))
            report = _verify_after(record, trace, target, sink_url, str(sink_ca) if sink_ca else None, pre, policy,
                                   faults, max_drops)
            record["verify"] = report.to_dict()
        except (TuneError, OSError, ValueError, KeyError) as e:  # the record is still written; raised after
            verify_error = e
            record["verify"] = {"error": str(e)}
    if fmt == "json":
        text = write_record(record, trace, output, trace_inline_max)
        if output is None:
            write_output(text, None)
    else:
        write_record(record, trace, None, 0 if fmt == "table" else trace_inline_max)
        text = _table(record) if fmt == "table" else render(record, fmt)
        write_output(text, output)
    load = record["load"]
    log(f"loadtest: {load['sent']} requests, achieved {load['achieved_rate']:.1f} of "
        f"{load['requested_rate']:.1f} req/s, shed {load.get('shed', 0)}, {load.get('workers', 1)} worker(s), lag p99 {_ms(record['lag_s']['p99'])}, "
        f"latency p99 {_ms(record['latency_s']['p99'])}, cleanup leftover "
        f"{(record.get('cleanup') or {}).get('leftover', '?')}")
    if not load["kept_up"]:
        log(f"warning: the generator did not keep up: {load['behind_reason']}")
    if record.get("interrupted"):
        log("loadtest: interrupted; partial record written")
        return 130
    if fail_on_drops:
        dropped = (record.get("audit") or {}).get("dropped_events")
        if dropped is None:
            raise NotEnoughData("--fail-on-drops: no apiserver_audit_error_total in /metrics, cannot tell drops")
        if dropped > 0:
            raise ObjectiveViolated(f"the apiserver dropped {dropped:.0f} audit events during the run "
                                    f"({record['audit']['error_total_by_plugin']})")
    if fail_if_behind and not load["kept_up"]:
        raise NotEnoughData(f"--fail-if-behind: requested load not offered: {load['behind_reason']}")
    if verify_error is not None:
        raise verify_error if isinstance(verify_error, TuneError) else NotEnoughData(f"--verify: {verify_error}")
    if report is not None and not report.ok:
        raise ObjectiveViolated("--verify: " + "; ".join(report.failures))
    return 0


def _verify_before(target, sink_url: str, sink_ca: str | None, flags: list) -> tuple[AuditTotals, SinkStats]:
    """Wait until the audit pipeline is idle and the throttle's bucket full again (the replay starts
    that way), then read the absolute apiserver audit counters and sink stats (for the accounting check)."""
    from audit_tune.basics.errors import ServiceError
    from audit_tune.loadgen.loadtest import cluster_state
    from audit_tune.loadgen.quiet import read_baseline, wait_quiet
    from audit_tune.loadgen.runinfo import state_flags
    from audit_tune.loadgen.sink import fetch_stats
    from audit_tune.sim.config import parse_flags

    in_force = parse_flags(list(flags or state_flags(cluster_state(target))), ignore_unknown=True)
    wait_quiet(lambda: fetch_stats(sink_url, ca=sink_ca), in_force, timeout=60, retries=False, refill=True)
    try:
        return read_baseline(target, lambda: fetch_stats(sink_url, ca=sink_ca))
    except OSError as e:
        raise ServiceError(f"--verify: cannot read {target.server}/metrics ({e})") from None


def _verify_after(record: dict, trace, target, sink_url: str, sink_ca: str | None, pre: tuple[AuditTotals, SinkStats],
                  policy: Optional[Path], faults: FaultConfig, max_drops: float) -> VerifyReport:
    import sys

    from audit_tune.loadgen.loadtest import cluster_state
    from audit_tune.loadgen.local import DEFAULT_POLICY
    from audit_tune.loadgen.verify import render, verify_live

    pol = str(policy) if policy else str(cluster_state(target).get("policy") or DEFAULT_POLICY)
    report = verify_live(record, trace, target, sink_url, pre, sink_ca=sink_ca, policy=pol,
                         faults=faults, max_drops=max_drops)
    sys.stderr.write(render(report))
    return report


def _ms(x: float | None) -> str:
    return "n/a" if x is None else f"{1000 * x:.3f} ms"


def _table(r: dict) -> str:
    load, lat, lag = r["load"], r["latency_s"], r["lag_s"]
    lines = [
        f"run        {r['run_id']}  target {r['target']['server']}",
        f"window     {r['window']['start_unix']:.3f} .. {r['window']['end_unix']:.3f}  ({r['window']['duration_s']:g} s)",
        f"rate       requested {load['requested_rate']:.1f}/s  achieved {load['achieved_rate']:.1f}/s  "
        f"({100 * load['achieved_ratio']:.1f}% of schedule)  kept up: {'yes' if load['kept_up'] else 'NO: ' + str(load['behind_reason'])}",
        f"send lag   p50 {_ms(lag['p50'])}  p99 {_ms(lag['p99'])}  max {_ms(lag['max'])}",
        f"latency    p50 {_ms(lat['p50'])}  p90 {_ms(lat['p90'])}  p99 {_ms(lat['p99'])}  max {_ms(lat['max'])}",
        "status     " + "  ".join(f"{k}:{v}" for k, v in r["status_codes"].items()),
    ]
    a = r.get("audit") or {}
    if "error" in a:
        lines.append(f"audit      not read: {a['error']}")
    else:
        lines.append(f"audit      events {a.get('event_total')}  dropped {a.get('dropped_events')}  "
                     f"errors {a.get('error_total_by_plugin')}  levels {a.get('level_total_by_level')}")
        if a.get("webhook"):
            lines.append(f"webhook    {a['webhook']['host']}  attempts {a['webhook']['requests_by_code']}")
    s = r.get("sink") or {}
    if s.get("delta"):
        lines.append(f"sink       events stored {s['delta']['events_stored']}  batches {s['delta']['batches']}")
    c = r.get("cleanup") or {}
    lines.append(f"cleanup    created {c.get('objects_created')}  leftover {c.get('leftover')}  "
                 f"errors {len(c.get('errors') or [])}")
    return "\n".join(lines) + "\n"
