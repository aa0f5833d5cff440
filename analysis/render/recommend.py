"""Renderers for ``tune recommend``: what users paste elsewhere.

Each takes the :class:`~analysis.recommendation.RecommendationReport` and returns text; they
register for that type with :func:`audit_tune.basics.formats.register`, so
``render(report, "kind")`` works (``json`` and ``yaml`` come from the report's ``to_dict``).
Every output starts by echoing the tool version, the seed, the input and the objective (as YAML
comments, or annotations where comments would be lost).

* ``flags``: kube-apiserver flags, one per line (a flags file ``--current-flags`` reads back);
* ``kubeadm`` (v1beta4: ``extraArgs`` is a list of ``{name, value}``) and ``kubeadm-v1beta3`` (map);
* ``kind``: a ``kind.x-k8s.io/v1alpha4`` Cluster with ``kubeadmConfigPatches`` (map form, which kind
  v0.32+ converts for v1beta4) and ``extraMounts`` for the policy and the webhook kubeconfig;
* ``manifest-patch``: a kubeadm ``kube-apiserver+json.yaml`` RFC 6902 patch appending the flags to
  the static pod's command (pflag: a later flag overrides an earlier one);
* ``prometheusrule``: a ``monitoring.coreos.com/v1`` PrometheusRule: drops > 0 by plugin, and event
  rate > 80 % of ``qps x max-size`` per instance;
* ``table``: the human view, coloured like KRR (green ok, yellow warning, red critical).
"""
from __future__ import annotations

import io

import yaml
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from audit_tune.analysis.recommendation import RecommendationReport
from audit_tune.basics.errors import InputError
from audit_tune.basics.formats import register
from audit_tune.sim.config import AuditFlags, parse_flags
from audit_tune.sim.units import format_duration, format_size

POLICY_PATH = "/etc/kubernetes/policies/audit-policy.yaml"
WEBHOOK_KUBECONFIG = "/etc/kubernetes/audit/webhook.kubeconfig"
HEADROOM_ALERT_FRACTION = 0.8


def _flags(report: RecommendationReport) -> list[str]:
    rec = report.recommended
    if not rec:
        raise InputError("no flag set met the objective, so there is nothing to paste; use -f table or -f json to see why")
    return list(rec.flags)


def _pairs(report: RecommendationReport) -> list[tuple[str, str]]:
    return [(a[2:].partition("=")[0], a.partition("=")[2]) for a in _flags(report)]


def header_lines(report: RecommendationReport) -> list[str]:
    c = report.config
    o = c.objective.to_dict()
    src = c.source or {}
    src_txt = src.get("snapshot") or src.get("prometheus_url") or src.get("kind") or "?"
    return [
        f"audit-tune {report.tool_version} recommend  seed={c.seed}  engine={c.engine}  input={src_txt}",
        "objective: " + " ".join(f"{k.replace('_', '-')}={v}" for k, v in o.items() if v not in ("", None, (), [])),
        c.objective.memory_factor.line(),
        *(f"failure scenario: {f.label} ({f.origin})" for f in report.failures.scenarios),
        "current flags (" + c.current_flags_source + "): " + " ".join(c.current_flags),
        f"confidence: {report.confidence}",
    ]


def _comment(report: RecommendationReport) -> str:
    return "".join(f"# {line}\n" for line in header_lines(report))


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (kind's kubeadmConfigPatches) as ``|`` literal blocks, as people write them."""


def _str_repr(dumper: yaml.SafeDumper, data: str) -> yaml.Node:
    if "\n" in data:
        return dumper.represent_scalar("tag:yaml.org,2002:str", data, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", data)


_Dumper.add_representer(str, _str_repr)


def _dump(doc: object) -> str:
    return yaml.dump(doc, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=200)


@register(RecommendationReport, "flags")
def render_flags(report: RecommendationReport) -> str:
    return _comment(report) + "".join(f"{a}\n" for a in _flags(report))


@register(RecommendationReport, "kubeadm")
def render_kubeadm(report: RecommendationReport) -> str:
    doc = {"apiVersion": "kubeadm.k8s.io/v1beta4", "kind": "ClusterConfiguration",
           "apiServer": {"extraArgs": [{"name": n, "value": v} for n, v in _pairs(report)]}}
    return _comment(report) + "# merge into your ClusterConfiguration (kubeadm v1beta4: extraArgs is a list)\n" + _dump(doc)


@register(RecommendationReport, "kubeadm-v1beta3")
def render_kubeadm_v1beta3(report: RecommendationReport) -> str:
    doc = {"apiVersion": "kubeadm.k8s.io/v1beta3", "kind": "ClusterConfiguration",
           "apiServer": {"extraArgs": {n: v for n, v in _pairs(report)}}}
    return _comment(report) + "# merge into your ClusterConfiguration (kubeadm v1beta3: extraArgs is a map)\n" + _dump(doc)


@register(RecommendationReport, "kind")
def render_kind(report: RecommendationReport) -> str:
    args = {"audit-policy-file": POLICY_PATH, "audit-webhook-config-file": WEBHOOK_KUBECONFIG}
    args.update(dict(_pairs(report)))
    patch = {"kind": "ClusterConfiguration",
             "apiServer": {"extraArgs": args,
                           "extraVolumes": [
                               {"name": "audit-policies", "hostPath": "/etc/kubernetes/policies",
                                "mountPath": "/etc/kubernetes/policies", "readOnly": True, "pathType": "DirectoryOrCreate"},
                               {"name": "audit-webhook", "hostPath": "/etc/kubernetes/audit",
                                "mountPath": "/etc/kubernetes/audit", "readOnly": True, "pathType": "DirectoryOrCreate"}]}}
    doc = {"kind": "Cluster", "apiVersion": "kind.x-k8s.io/v1alpha4",
           "nodes": [{"role": "control-plane",
                      "kubeadmConfigPatches": [_dump(patch)],
                      "extraMounts": [
                          {"hostPath": "./audit-policy.yaml", "containerPath": POLICY_PATH, "readOnly": True},
                          {"hostPath": "./audit-webhook.kubeconfig", "containerPath": WEBHOOK_KUBECONFIG, "readOnly": True}]}]}
    return (_comment(report) + "# kind create cluster --config this.yaml  (needs ./audit-policy.yaml and "
            "./audit-webhook.kubeconfig; the webhook must be reachable from the node container)\n"
            + _dump(doc))


@register(RecommendationReport, "manifest-patch")
def render_manifest_patch(report: RecommendationReport) -> str:
    ops = [{"op": "add", "path": "/spec/containers/0/command/-", "value": a} for a in _flags(report)]
    return (_comment(report) + "# kubeadm patch for /etc/kubernetes/manifests/kube-apiserver.yaml: save as\n"
            "# <patches-dir>/kube-apiserver+json.yaml and run kubeadm with --patches <patches-dir>.\n"
            "# It appends the flags; kube-apiserver (pflag) uses the last value of a repeated flag.\n" + _dump(ops))


def _selector(report: RecommendationReport, extra: str = "") -> str:
    sel = str(((report.config.source or {}).get("selector")) or "").strip()
    if sel.startswith("{") and sel.endswith("}"):
        sel = sel[1:-1].strip()
    parts = [p for p in (sel, extra) if p]
    return "{" + ",".join(parts) + "}" if parts else ""


def prometheus_rule(report: RecommendationReport) -> dict[str, object]:
    flags = parse_flags(_flags(report))
    c = flags.webhook.batch
    cap = c.effective_qps * c.max_batch_size
    sel = _selector(report)
    qps_txt = f"{c.effective_qps:g}"
    hdr = header_lines(report)
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "audit-tune-audit-webhook",
            "labels": {"app.kubernetes.io/name": "audit-tune", "app.kubernetes.io/component": "audit-alerts"},
            "annotations": {"audit-tune/tool-version": str(report.tool_version),
                            "audit-tune/seed": str(report.config.seed),
                            "audit-tune/generated-by": hdr[0], "audit-tune/objective": hdr[1],
                            "audit-tune/flags": " ".join(_flags(report))},
        },
        "spec": {"groups": [{
            "name": "audit-tune.audit-pipeline",
            "rules": [
                {"alert": "KubeAPIServerAuditEventsDropped",
                 "expr": f"sum by (instance, plugin) (increase(apiserver_audit_error_total{sel}[5m])) > 0",
                 "labels": {"severity": "critical"},
                 "annotations": {
                     "summary": "kube-apiserver lost audit events",
                     "description": "{{ $labels.instance }} lost {{ $value | humanize }} audit events in 5m "
                                    "(plugin {{ $labels.plugin }}). buffered = buffer full (raise "
                                    "--audit-webhook-batch-throttle-qps or buffer size); webhook = receiver failed 5 attempts."}},
                {"alert": "KubeAPIServerAuditWebhookNearCapacity",
                 "expr": f"sum by (instance) (rate(apiserver_audit_event_total{sel}[5m])) > "
                         f"{HEADROOM_ALERT_FRACTION:g} * {qps_txt} * {c.max_batch_size}",
                 "for": "10m",
                 "labels": {"severity": "warning"},
                 "annotations": {
                     "summary": "audit event rate above 80% of the webhook's drain capacity",
                     "description": "{{ $labels.instance }} emits {{ $value | humanize }} audit events/s; the webhook drains at most "
                                    f"{cap:,.0f} events/s (throttle qps {qps_txt} x max-size {c.max_batch_size}). "
                                    "Re-run tune recommend with fresh data."}},
            ]}]},
    }


@register(RecommendationReport, "prometheusrule")
def render_prometheusrule(report: RecommendationReport) -> str:
    return _comment(report) + _dump(prometheus_rule(report))


def _r4(x: float | None) -> float:
    """The figure as the JSON document has it (four decimals)."""
    return round(x or 0.0, 4)


# ------------------------------------------------------------------------------------------------
# table
# ------------------------------------------------------------------------------------------------
def _short(flags: list[str]) -> str:
    f = parse_flags(flags, base=AuditFlags())
    c = f.webhook.batch
    return (f"buffer {c.buffer_size:,}  size {c.max_batch_size}  wait {format_duration(c.max_batch_wait)}  "
            f"qps {c.throttle_qps:g}  burst {c.throttle_burst}" + ("" if c.throttle_enable else "  (throttle off)"))


def burst_lines(report: dict[str, object]) -> list[str]:
    """The bursts an audit log showed (``observed_bursts``): peak rates per window against the step average."""
    out = []
    calibration = report["calibration"]
    if not isinstance(calibration, list):
        raise TypeError(f"calibration is a {type(calibration).__name__}, not a list of per-apiserver results")
    for c in calibration:
        bs = c.get("observed_bursts") or []
        if not bs:
            continue
        step = format_duration(c["step_seconds"])
        parts = [f"{format_duration(b['window'])} {b['peak_rate']:,.0f} ev/s"
                 + (f" (x{b['peak_over_step']:.1f})" if b.get("peak_over_step") else "") for b in bs]
        out.append(f"bursts in the audit log, {c['instance']}: peak " + ", ".join(parts)
                   + f" vs the {step} step average (mean {bs[0]['window_mean']:,.0f} ev/s); "
                   + f"x1 replays {c.get('exact_trace_events', 0):,} logged arrivals exactly")
    return out


def _tol(seconds: float | None, at_least: bool, limit: str = "") -> str:
    if seconds is None:
        return "-"
    return (">= " if at_least else "") + format_duration(seconds) + (f" ({limit})" if limit else "")


def print_failures(con: Console, report: RecommendationReport) -> None:
    """Every flag set under every receiver failure scenario; the ``--evaluate`` checks; the survivor,
    or the frontier when nothing survives."""
    f = report.failures
    if not f.scenarios:
        return
    t = Table(title="Receiver failures (starting at each apiserver's busiest step; memory includes batches held by "
                    "retrying goroutines; tolerance on the busiest apiserver)",
              show_header=True, header_style="bold", title_justify="left")
    for col in ("flag set", "scenario", "lost webhook", "lost buffered", "peak memory (events)", "apiserver memory",
                "backlog delivered after", "outage tolerance", "lost if 2x longer"):
        t.add_column(col, justify="left" if col in ("flag set", "scenario") else "right", no_wrap=col in ("flag set", "scenario"))
    for o in f.outcomes:
        style = "green" if o.ok else "red"
        t.add_row(f"[{style}]{escape(o.name)}[/{style}]", escape(o.scenario.label), f"{o.lost_webhook:,}",
                  f"{o.lost_buffered:,}", format_size(o.peak_memory), format_size(o.apiserver_memory),
                  f"{o.recovery_seconds:.0f}s", _tol(o.tolerance_seconds, o.tolerance_capped, o.tolerance_limit),
                  "-" if o.longer_loss is None else f"{o.longer_loss:,}")
    con.print(t)
    ev = report.evaluated
    if ev:
        con.print("Evaluated flags: " + " ".join(ev.flags), markup=False)
        for c in ev.checks:
            mark = "[green]ok[/green]  " if c.ok else "[red]FAIL[/red]"
            con.print(f"  {mark} {escape(c.check)}: {escape(c.detail)}")
    if f.survivor:
        con.print(f"[green]{escape(f.survivor)} survives every failure scenario within the memory budget.[/green]")
        return
    con.print(f"[red]{escape(f.sentence)}.[/red]")
    fr = Table(title="Frontier: outage tolerance against peak memory (candidates that meet the rest of the objective)",
               show_header=True, header_style="bold", title_justify="left")
    for col in ("flag set", "scenario", "outage tolerance", "peak memory (events)", "apiserver memory", "lost",
                "lost if 2x longer"):
        fr.add_column(col, justify="left" if col in ("flag set", "scenario") else "right")
    for p in f.frontier:
        fr.add_row(escape(p.flag_set), escape(p.scenario), _tol(p.outage_tolerance_seconds, p.at_least),
                   format_size(p.peak_memory_bytes), format_size(p.peak_apiserver_memory_bytes), f"{p.lost:,}",
                   "-" if p.lost_if_twice_as_long is None else f"{p.lost_if_twice_as_long:,}")
    con.print(fr)


def print_log(con: Console, report: RecommendationReport) -> None:
    """The log backend's flag sets (``--audit-log-path`` set): drain, added request latency, stall."""
    if report.log_backend is None:
        return
    lg = report.log_backend.to_dict()
    con.print(f"Log backend (--audit-log-path set): write cost {lg['write_cost_seconds'] * 1e6:.1f} us per event "
              f"({lg['write_cost_source']})", markup=False)
    t = Table(show_header=True, header_style="bold")
    for col in ("log flag set", "flags", "drain ev/s", "added request latency", "stall: added latency / lost", "buffer memory", "verdict"):
        t.add_column(col)
    for r in lg["flag_sets"]:
        stall = f"{r['stall_added_request_latency_seconds']:.0f}s / {r['stall_loss_events']:,}" if lg["stall_seconds"] else "-"
        t.add_row(r["name"], " ".join(r["flags"]), "-" if r["drain_events_per_second"] is None else f"{r['drain_events_per_second']:,.0f}",
                  f"{r['added_request_latency_seconds'] * 1e3:.3f} ms", stall, format_size(r["memory_bytes"]),
                  "[green]ok[/green]" if r["ok"] else "[red]" + escape("; ".join(r["violations"])) + "[/red]")
    con.print(t)


@register(RecommendationReport, "table")
def render_table(report: RecommendationReport, color: bool = False, width: int = 150) -> str:
    buf = io.StringIO()
    con = Console(file=buf, width=width, force_terminal=color, color_system="standard" if color else None,
                  highlight=False, soft_wrap=True)
    for line in header_lines(report):
        con.print(line, markup=False)
    conf_style = {"high": "green", "medium": "yellow", "low": "red"}[report.confidence]
    con.print()
    cal = Table(title="Calibration (per apiserver)", show_header=True, header_style="bold", title_justify="left")
    for col in ("instance", "mean ev/s", "peak ev/s", "burst sigma (fit)", "event size", "webhook p50/max",
                "fail/attempt", "drops obs/pred", "calibration"):
        cal.add_column(col, justify="right" if col not in ("instance", "calibration") else "left")
    for c in report.calibration:
        v = c.validation
        b = c.model.burst
        fit = f"{_r4(b.sigma):.2f}"
        if b.observed_ratio_p50 and _r4(b.observed_ratio_p50):
            fit += (f" (obs {_r4(b.observed_ratio_p50):.2f}/{_r4(b.observed_ratio_p90):.2f}, "
                    f"model {_r4(b.model_ratio_p50):.2f}/{_r4(b.model_ratio_p90):.2f})")
        lat = c.webhook_latency
        if "median=" in lat:
            lat = lat.split("median=")[1].replace(", max=", " / ")
        obs = sum(v.observed_errors.values())
        pred = sum(v.predicted_errors.values())
        style = {"high": "green", "medium": "yellow", "low": "red"}[v.confidence]
        cal.add_row(c.instance, f"{c.mean_event_rate:,.0f}", f"{c.peak_burst_event_rate:,.0f}", fit,
                    f"{c.model.event_size:,} B", lat, f"{c.webhook_failure_rate:.4f}", f"{obs:,.0f} / {pred:,.0f}",
                    f"[{style}]{v.confidence}[/{style}] (rate err {100 * round(v.rate_error, 4):.1f}%, drop err {100 * round(v.drop_error, 4):.0f}%)")
    con.print(cal)
    for line in burst_lines(report.to_dict()):
        con.print(line, markup=False)
    for c in report.calibration:
        if c.validation.confidence != "high":
            con.print(f"[yellow]{escape(c.instance)}: calibration {c.validation.confidence}: {escape(c.validation.why)}[/yellow]")
    o = report.config.objective
    h = o.headroom
    t = Table(title=f"Flag sets compared (busiest {o.peak_window} per instance, "
                    f"{o.seeds} seeds; x1 = observed load, x{h:g} = headroom)",
              show_header=True, header_style="bold", title_justify="left")
    for col in ("flag set", "flags", "drops/run x1", f"drops/run x{h:g}", "P(any drop)", "memory", "p99 latency", "verdict"):
        t.add_column(col, justify="left" if col in ("flag set", "flags", "verdict") else "right")
    for e in report.comparison:
        d1 = sum(e.drops_x1.values()) if e.drops_x1 else 0
        dh = sum(e.drops_headroom.values()) if e.drops_headroom else 0
        ok = e.ok if e.name != "current" else report.current_ok
        viol = e.violations if e.name != "current" else report.current_violations
        style = "green" if ok else "red"
        first = viol[0] if viol else ""
        first = first if len(first) <= 70 else first[:67] + "..."
        verdict = "[green]meets objective[/green]" if ok else f"[red]{escape(first)}[/red]" + (f" (+{len(viol) - 1} more)" if len(viol) > 1 else "")
        p99 = e.latency_p99
        t.add_row(f"[{style}]{e.name}[/{style}]", _short(e.args),
                  f"[{'red' if d1 else 'green'}]{d1:,.0f}[/]", f"[{'red' if dh else 'green'}]{dh:,.0f}[/]",
                  f"{e.p_drop:.2g}", format_size(e.memory_bound),
                  f"{p99:.2f}s" if p99 is not None else "-", verdict)
    con.print(t)
    rec = report.recommended
    if rec:
        ex = rec.explanation
        con.print(f"[bold]Recommended[/bold] (binding constraint: [bold]{ex.binding_constraint}[/bold]):")
        ft = Table(show_header=True, header_style="bold")
        ft.add_column("flag")
        ft.add_column("value", justify="right")
        ft.add_column("headroom", justify="right")
        ft.add_column("why")
        for name, info in ex.flags.items():
            hr = info.headroom
            hs = "-" if hr is None else (f"[red]{hr:g}x[/red]" if hr < 1.2 else f"[yellow]{hr:g}x[/yellow]" if hr < 1.5 else f"[green]{hr:g}x[/green]")
            ft.add_row(f"--{name}", str(info.value), hs, info.why + (f" ({info.headroom_meaning})" if info.headroom_meaning else ""))
        con.print(ft)
        con.print("Paste (kube-apiserver flags):", markup=False)
        for a in rec.flags:
            con.print("  " + a, markup=False)
    else:
        con.print("[red]No flag set met the objective within the search:[/red]")
        for w in report.no_recommendation_why or []:
            con.print(f"[red]  - {escape(w)}[/red]")
    print_failures(con, report)
    if report.restart_at_peak is not None:
        for line in report.restart_at_peak.lines():
            con.print(line, markup=False)
    print_log(con, report)
    con.print(f"rule of thumb: {report.rule_of_thumb.derivation}", markup=False)
    if report.current_ok:
        con.print("[green]Current flags meet the objective.[/green]")
    else:
        con.print("[red]Current flags violate the objective: " + escape("; ".join(report.current_violations)) + "[/red]")
    con.print(f"confidence: [{conf_style}]{report.confidence}[/{conf_style}]")
    for w in report.warnings:
        con.print(f"[yellow]warning: {escape(w)}[/yellow]")
    return buf.getvalue()
