"""Renderers for ``tune recommend``: what users paste elsewhere.

Each takes the recommendation report (:func:`analysis.recommend.build_report`) and returns text;
they register with ``tune.output``'s ``@formatter`` registry, so ``render(report, "kind")`` works.
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
from typing import Any

import yaml

from audit_tune.sim.config import AuditFlags, parse_flags
from audit_tune.basics.errors import InputError
from audit_tune.sim.units import format_duration, format_size
from audit_tune.basics.output import formatter

POLICY_PATH = "/etc/kubernetes/policies/audit-policy.yaml"
WEBHOOK_KUBECONFIG = "/etc/kubernetes/audit/webhook.kubeconfig"
HEADROOM_ALERT_FRACTION = 0.8


def _flags(report: dict[str, Any]) -> list[str]:
    rec = report.get("recommended")
    if not rec:
        raise InputError("no flag set met the objective, so there is nothing to paste; use -f table or -f json to see why")
    return list(rec["flags"])


def _pairs(report: dict[str, Any]) -> list[tuple[str, str]]:
    return [(a[2:].partition("=")[0], a.partition("=")[2]) for a in _flags(report)]


def header_lines(report: dict[str, Any]) -> list[str]:
    c = report["config"]
    o = c["objective"]
    src = c.get("source") or {}
    src_txt = src.get("snapshot") or src.get("prometheus_url") or src.get("kind") or "?"
    return [
        f"audit-tune {report['tool_version']} recommend  seed={c['seed']}  engine={c['engine']}  input={src_txt}",
        "objective: " + " ".join(f"{k.replace('_', '-')}={v}" for k, v in o.items() if v not in ("", None, (), [])),
        *(f"failure scenario: {f['label']} ({f['origin']})" for f in (report.get("failures") or {}).get("scenarios", [])),
        "current flags (" + c["current_flags_source"] + "): " + " ".join(c["current_flags"]),
        f"confidence: {report['confidence']}",
    ]


def _comment(report: dict[str, Any]) -> str:
    return "".join(f"# {line}\n" for line in header_lines(report))


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (kind's kubeadmConfigPatches) as ``|`` literal blocks, as people write them."""


def _str_repr(dumper: yaml.SafeDumper, data: str) -> yaml.Node:
    if "\n" in data:
        return dumper.represent_scalar("tag:yaml.org,2002:str", data, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", data)


_Dumper.add_representer(str, _str_repr)


def _dump(doc: Any) -> str:
    return yaml.dump(doc, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=200)


@formatter("flags")
def render_flags(report: dict[str, Any]) -> str:
    return _comment(report) + "".join(f"{a}\n" for a in _flags(report))


@formatter("kubeadm")
def render_kubeadm(report: dict[str, Any]) -> str:
    doc = {"apiVersion": "kubeadm.k8s.io/v1beta4", "kind": "ClusterConfiguration",
           "apiServer": {"extraArgs": [{"name": n, "value": v} for n, v in _pairs(report)]}}
    return _comment(report) + "# merge into your ClusterConfiguration (kubeadm v1beta4: extraArgs is a list)\n" + _dump(doc)


@formatter("kubeadm-v1beta3")
def render_kubeadm_v1beta3(report: dict[str, Any]) -> str:
    doc = {"apiVersion": "kubeadm.k8s.io/v1beta3", "kind": "ClusterConfiguration",
           "apiServer": {"extraArgs": {n: v for n, v in _pairs(report)}}}
    return _comment(report) + "# merge into your ClusterConfiguration (kubeadm v1beta3: extraArgs is a map)\n" + _dump(doc)


@formatter("kind")
def render_kind(report: dict[str, Any]) -> str:
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


@formatter("manifest-patch")
def render_manifest_patch(report: dict[str, Any]) -> str:
    ops = [{"op": "add", "path": "/spec/containers/0/command/-", "value": a} for a in _flags(report)]
    return (_comment(report) + "# kubeadm patch for /etc/kubernetes/manifests/kube-apiserver.yaml: save as\n"
            "# <patches-dir>/kube-apiserver+json.yaml and run kubeadm with --patches <patches-dir>.\n"
            "# It appends the flags; kube-apiserver (pflag) uses the last value of a repeated flag.\n" + _dump(ops))


def _selector(report: dict[str, Any], extra: str = "") -> str:
    sel = str(((report["config"].get("source") or {}).get("selector")) or "").strip()
    if sel.startswith("{") and sel.endswith("}"):
        sel = sel[1:-1].strip()
    parts = [p for p in (sel, extra) if p]
    return "{" + ",".join(parts) + "}" if parts else ""


def prometheus_rule(report: dict[str, Any]) -> dict[str, Any]:
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
            "annotations": {"audit-tune/tool-version": str(report["tool_version"]),
                            "audit-tune/seed": str(report["config"]["seed"]),
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


@formatter("prometheusrule")
def render_prometheusrule(report: dict[str, Any]) -> str:
    return _comment(report) + _dump(prometheus_rule(report))


# ------------------------------------------------------------------------------------------------
# table
# ------------------------------------------------------------------------------------------------
def _short(flags: list[str]) -> str:
    f = parse_flags(flags, base=AuditFlags())
    c = f.webhook.batch
    return (f"buffer {c.buffer_size:,}  size {c.max_batch_size}  wait {format_duration(c.max_batch_wait)}  "
            f"qps {c.throttle_qps:g}  burst {c.throttle_burst}" + ("" if c.throttle_enable else "  (throttle off)"))


from audit_tune.analysis.outage_render import print_sections  # noqa: E402


def render_table(report: dict[str, Any], color: bool = False, width: int = 150) -> str:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    buf = io.StringIO()
    con = Console(file=buf, width=width, force_terminal=color, color_system="standard" if color else None,
                  highlight=False, soft_wrap=True)
    for line in header_lines(report):
        con.print(line, markup=False)
    conf_style = {"high": "green", "medium": "yellow", "low": "red"}[report["confidence"]]
    con.print()
    cal = Table(title="Calibration (per apiserver)", show_header=True, header_style="bold", title_justify="left")
    for col in ("instance", "mean ev/s", "peak ev/s", "burst sigma (fit)", "event size", "webhook p50/max",
                "fail/attempt", "drops obs/pred", "calibration"):
        cal.add_column(col, justify="right" if col not in ("instance", "calibration") else "left")
    for c in report["calibration"]:
        v = c["validation"]
        b = c["burst"]
        fit = f"{b['sigma']:.2f}"
        if b.get("observed_ratio_p50"):
            fit += f" (obs {b['observed_ratio_p50']:.2f}/{b['observed_ratio_p90']:.2f}, model {b['model_ratio_p50']:.2f}/{b['model_ratio_p90']:.2f})"
        lat = c["webhook_latency"]
        if "median=" in lat:
            lat = lat.split("median=")[1].replace(", max=", " / ")
        obs = sum(v["observed_errors"].values())
        pred = sum(v["predicted_errors"].values())
        style = {"high": "green", "medium": "yellow", "low": "red"}[v["confidence"]]
        cal.add_row(c["instance"], f"{c['mean_event_rate']:,.0f}", f"{c['peak_burst_event_rate']:,.0f}", fit,
                    f"{c['event_size_bytes']:,} B", lat, f"{c['webhook_failure_rate']:.4f}", f"{obs:,.0f} / {pred:,.0f}",
                    f"[{style}]{v['confidence']}[/{style}] (rate err {100 * v['rate_error']:.1f}%, drop err {100 * v['drop_error']:.0f}%)")
    con.print(cal)
    for c in report["calibration"]:
        if c["validation"]["confidence"] != "high":
            con.print(f"[yellow]{escape(c['instance'])}: calibration {c['validation']['confidence']}: {escape(c['validation']['why'])}[/yellow]")
    h = report["config"]["objective"]["headroom"]
    t = Table(title=f"Flag sets compared (busiest {report['config']['objective']['peak_window']} per instance, "
                    f"{report['config']['objective']['seeds']} seeds; x1 = observed load, x{h:g} = headroom)",
              show_header=True, header_style="bold", title_justify="left")
    for col in ("flag set", "flags", f"drops/run x1", f"drops/run x{h:g}", "P(any drop)", "memory", "p99 latency", "verdict"):
        t.add_column(col, justify="left" if col in ("flag set", "flags", "verdict") else "right")
    for e in report["comparison"]:
        d1 = sum(e["drops_per_run_x1"].values()) if e["drops_per_run_x1"] else 0
        dh = sum(e["drops_per_run_headroom"].values()) if e["drops_per_run_headroom"] else 0
        ok = e["ok"] if e["name"] != "current" else report["current_ok"]
        viol = e["violations"] if e["name"] != "current" else report["current_violations"]
        style = "green" if ok else "red"
        first = viol[0] if viol else ""
        first = first if len(first) <= 70 else first[:67] + "..."
        verdict = "[green]meets objective[/green]" if ok else f"[red]{escape(first)}[/red]" + (f" (+{len(viol) - 1} more)" if len(viol) > 1 else "")
        lat = e["delivery_latency_p99_seconds"]
        t.add_row(f"[{style}]{e['name']}[/{style}]", _short(e["flags"]),
                  f"[{'red' if d1 else 'green'}]{d1:,.0f}[/]", f"[{'red' if dh else 'green'}]{dh:,.0f}[/]",
                  f"{e['p_any_drop_horizon']:.2g}", format_size(e["memory_bound_bytes"]),
                  f"{lat:.2f}s" if lat is not None else "-", verdict)
    con.print(t)
    rec = report.get("recommended")
    if rec:
        ex = rec["explanation"]
        con.print(f"[bold]Recommended[/bold] (binding constraint: [bold]{ex['binding_constraint']}[/bold]):")
        ft = Table(show_header=True, header_style="bold")
        ft.add_column("flag")
        ft.add_column("value", justify="right")
        ft.add_column("headroom", justify="right")
        ft.add_column("why")
        for name, info in ex["flags"].items():
            hr = info["headroom"]
            hs = "-" if hr is None else (f"[red]{hr:g}x[/red]" if hr < 1.2 else f"[yellow]{hr:g}x[/yellow]" if hr < 1.5 else f"[green]{hr:g}x[/green]")
            ft.add_row(f"--{name}", str(info["value"]), hs, info["why"] + (f" ({info['headroom_meaning']})" if info["headroom_meaning"] else ""))
        con.print(ft)
        con.print("Paste (kube-apiserver flags):", markup=False)
        for a in rec["flags"]:
            con.print("  " + a, markup=False)
    else:
        con.print("[red]No flag set met the objective within the search:[/red]")
        for w in report.get("no_recommendation_why") or []:
            con.print(f"[red]  - {escape(w)}[/red]")
    print_sections(con, report)
    rot = report["rule_of_thumb"]
    con.print(f"rule of thumb: {rot['derivation']}", markup=False)
    if report["current_ok"]:
        con.print("[green]Current flags meet the objective.[/green]")
    else:
        con.print("[red]Current flags violate the objective: " + escape("; ".join(report["current_violations"])) + "[/red]")
    con.print(f"confidence: [{conf_style}]{report['confidence']}[/{conf_style}]")
    for w in report["warnings"]:
        con.print(f"[yellow]warning: {escape(w)}[/yellow]")
    return buf.getvalue()
