"""``tune policy``: what an audit policy does to the event rate.

``tune policy explain POLICY`` loads the policy exactly as kube-apiserver's
``--audit-policy-file`` does (:mod:`analysis.policy`), evaluates it against common request
classes and prints, for each, the deciding rule, the level, the stages emitted and the events
per request, followed by the rules that can never match. This module only parses and prints.
"""
from __future__ import annotations

import dataclasses
import io
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer

from audit_tune.cli.options import prometheus_options

if TYPE_CHECKING:
    from audit_tune.analysis.prom import PromSettings

PANEL = "Audit policy"

HELP = """Explain an audit.k8s.io/v1 Policy: which rule each common request hits, and how many events it makes.

Example:  [bold]tune policy explain /etc/kubernetes/audit-policy.yaml[/bold]
"""

EXPLAIN_HELP = """Show, for common requests (verb x resource x user kind), the rule that decides, the level,
the stages that emit an event (after omitStages) and events per request; then the rules that can
never match because an earlier rule covers them. Loads the file like kube-apiserver (same
validation; unknown fields are warnings, as kube-apiserver 1.26+ only logs them; --strict makes them errors).

Example:  [bold]tune policy explain audit-policy.yaml -f json -o explain.json[/bold]
"""


def register(app: typer.Typer) -> None:
    sub = typer.Typer(help=HELP, no_args_is_help=True, rich_markup_mode="rich")
    sub.command("explain", help=EXPLAIN_HELP,
                short_help="Rule, level, stages and events per request for common requests; dead rules.")(explain_cmd)
    sub.command("impact", help=IMPACT_HELP,
                short_help="Audit events/s and bytes/s per apiserver under a policy, from the request mix.")(impact_cmd)
    app.add_typer(sub, name="policy", rich_help_panel=PANEL)


def explain_cmd(
    policy: Path = typer.Argument(..., help="Audit policy file (what --audit-policy-file points at)."),
    fmt: str = typer.Option("table", "-f", "--format", help="table | json | yaml."),
    output: Optional[str] = typer.Option(None, "-o", "--output", help="Write here (atomically) instead of stdout."),
    strict: bool = typer.Option(False, "--strict", help="Unknown or duplicate fields are errors, not warnings."),
) -> None:
    from audit_tune import __version__
    from audit_tune.analysis.policy import load_policy
    from audit_tune.analysis.policy.explain import explain_policy
    from audit_tune.basics.errors import InputError
    from audit_tune.basics.output import log, render, write_output

    if fmt not in ("table", "json", "yaml"):
        raise InputError(f"--format {fmt}: unknown format; use one of table, json, yaml")
    loaded = load_policy(policy, strict=strict)
    for w in loaded.warnings:
        log(f"tune: warning: {w}")
    data = {"tool": f"audit-tune {__version__}", **explain_policy(loaded)}
    text = render_table(data) if fmt == "table" else render(data, fmt)
    write_output(text, output)


def _rule_cell(index: int | None, line: int | None) -> str:
    return "-" if index is None else f"rules[{index}] L{line}"


def render_table(data: dict[str, Any]) -> str:
    """Plain-text rich tables: the request classes (user kinds with equal outcome merged), then shadowed rules."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    from audit_tune.analysis.policy.explain import table_rows

    buf = io.StringIO()
    console = Console(file=buf, width=160, color_system=None, force_terminal=False, highlight=False, soft_wrap=True)
    omit = ", ".join(data["omitStages"]) or "none"
    console.print(f"policy {data['policy']}: {data['rules']} rules, policy omitStages: {omit}, "
                  f"omitManagedFields: {str(data['omitManagedFields']).lower()} ({data['tool']})")
    console.print("Long-running requests (watch, proxy, log, exec, attach, portforward) also emit ResponseStarted; "
                  "requests that match no rule get level None.")
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for col, justify in (("verb", "left"), ("resource", "left"), ("namespace", "left"), ("users", "left"),
                         ("rule", "left"), ("level", "left"), ("stages emitted", "left"), ("events/req", "right")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for r in table_rows(data):
        table.add_row(r["verb"], r["resource"], r["namespace"] or "-", _users_cell(r["users"]),
                      _rule_cell(r["rule_index"], r["rule_line"]), r["level"],
                      "+".join(_abbrev(s) for s in r["stages"]) or "-", str(r["events"]))
    console.print(table)
    console.print("Stages: RR RequestReceived, RS ResponseStarted, RC ResponseComplete.")
    if data["shadowed_rules"]:
        console.print(f"Rules that can never match ({len(data['shadowed_rules'])}; a conservative check, "
                      "some dead rules may be missed):")
        for s in data["shadowed_rules"]:
            console.print(f"  rules[{s['rule_index']}] (line {s['rule_line']}): shadowed by "
                          f"rules[{s['shadowed_by_index']}] (line {s['shadowed_by_line']}), which matches "
                          "every request it matches")
    else:
        console.print("Rules that can never match: none found (a conservative check: rules covered only by "
                      "several earlier rules together are not detected).")
    return buf.getvalue()


def _users_cell(users: list[str]) -> str:
    from audit_tune.analysis.policy.catalog import USER_KINDS

    everyone = [u.key for u in USER_KINDS]
    others = [u for u in everyone if u not in users]
    if users != ["all"] and len(others) < len(users) and others:
        return "all except " + ", ".join(others)
    return ", ".join(users)


def _abbrev(stage: str) -> str:
    return {"RequestReceived": "RR", "ResponseStarted": "RS", "ResponseComplete": "RC", "Panic": "P"}.get(stage, stage)


# ---------------------------------------------------------------------------------------------
# tune policy impact

IMPACT_HELP = """Estimate audit events/s and bytes/s per apiserver (average and peak) under POLICY, from the request
mix (apiserver_request_total by verb, group, resource, subresource, scope). The level of each request class
comes from the policy; users, groups and namespaces are not in the metrics, so the best..worst case over the
user kinds of 'tune policy explain' is shown next to the estimate (--assume-user). The estimate for the policy
in force (--against, else POLICY) is checked against apiserver_audit_event_total and apiserver_audit_level_total.

Input: --prometheus-url (reads the window itself), --snapshot FILE (needs the 'request_mix' key: record it with
-p URL --save-snapshot FILE), or the bundled sample. Exit 4 when the request mix is missing (per item).

Example:  [bold]tune policy impact new-policy.yaml --against /etc/kubernetes/audit-policy.yaml -p http://prometheus:9090 --history 1d[/bold]
"""


def impact(
    prom: PromSettings,
    policy: Path = typer.Argument(..., help="Audit policy file to estimate."),
    against: Optional[Path] = typer.Option(None, "--against", help="The policy in force (compared, and checked "
                                           "against the observed counters)."),
    snapshot: Optional[str] = typer.Option(None, "--snapshot", help="Snapshot file with a 'request_mix' key."),
    history: str = typer.Option("1d", "--history", help="With --prometheus-url: how far back, e.g. 1d, 7d."),
    step: str = typer.Option("60s", "--step", help="With --prometheus-url: resolution of the rate series."),
    selector: Optional[str] = typer.Option(None, "--selector", help="With --prometheus-url: extra label matchers, "
                                           "e.g. 'job=\"apiserver\"'."),
    save_snapshot: Optional[str] = typer.Option(None, "--save-snapshot", help="With --prometheus-url: also write "
                                                "the snapshot, request mix included, to FILE."),
    assume_user: str = typer.Option("serviceaccount", "--assume-user", help="User kind the estimate assumes "
                                    "(kubectl-user, serviceaccount, node, controller-manager, kube-proxy, "
                                    "apiserver-loopback, anonymous); the range covers all."),
    fmt: str = typer.Option("table", "-f", "--format", help="table | json | yaml."),
    output: Optional[str] = typer.Option(None, "-o", "--output", help="Write here (atomically) instead of stdout."),
    strict: bool = typer.Option(False, "--strict", help="Unknown or duplicate fields in a policy are errors."),
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress lines on stderr."),
) -> int:
    return _impact(prom, ImpactArgs(policy=policy, against=against, snapshot=snapshot, history=history, step=step,
                                    selector=selector, save_snapshot=save_snapshot, assume_user=assume_user,
                                    fmt=fmt, output=output, strict=strict, no_progress=no_progress))


@dataclasses.dataclass(frozen=True)
class ImpactArgs:
    """The ``tune policy impact`` options other than the Prometheus connection."""

    policy: Path
    against: Optional[Path]
    snapshot: Optional[str]
    history: str
    step: str
    selector: Optional[str]
    save_snapshot: Optional[str]
    assume_user: str
    fmt: str
    output: Optional[str]
    strict: bool
    no_progress: bool


def _impact(prom: PromSettings, args: ImpactArgs) -> int:
    import json as _json

    from audit_tune.analysis.policy import load_policy
    from audit_tune.analysis.policy_impact import add_request_mix, impact_report, user_kind
    from audit_tune.analysis.render import policy_impact as _formats  # noqa: F401 - registers the formatters
    from audit_tune.analysis.snapshot import Snapshot
    from audit_tune.basics import files, jsondata
    from audit_tune.basics.errors import InputError
    from audit_tune.basics.jsondata import as_object
    from audit_tune.basics.output import log, render, write_output
    from audit_tune.sim.units import parse_duration

    policy, against, snapshot, history, step = args.policy, args.against, args.snapshot, args.history, args.step
    fmt, save_snapshot, strict = args.fmt, args.save_snapshot, args.strict
    if fmt not in ("table", "json", "yaml"):
        raise InputError(f"--format {fmt}: unknown format; use one of table, json, yaml")
    user_kind(args.assume_user)
    say = (lambda m: None) if args.no_progress else (lambda m: log(f"tune policy impact: {m}"))
    new = load_policy(policy, strict=strict)
    old = load_policy(against, strict=strict) if against else None
    for p in (new, old):
        for w in (p.warnings if p else ()):
            log(f"tune: warning: {w}")
    url = prom.url
    if snapshot and url:
        raise InputError("--snapshot and --prometheus-url: give one of them, not both")
    if save_snapshot and not url:
        raise InputError("--save-snapshot: only with --prometheus-url (a snapshot file is already saved)")
    if url:
        from audit_tune.analysis.prom import PromClient, SnapshotRequest, take_snapshot

        prom.validate()
        req = SnapshotRequest(history=parse_duration(history, "--history"), step=parse_duration(step, "--step"),
                              selector=args.selector or "")
        say(f"reading {history} from {prom.display_url}")
        client = PromClient(prom)
        snap = take_snapshot(client, req, log=say).to_dict()
        add_request_mix(snap, client)
        if save_snapshot:
            write_output(_json.dumps(snap, indent=1, allow_nan=False) + "\n", save_snapshot)
            say(f"snapshot with request mix -> {save_snapshot}")
        source: dict[str, object] = {"kind": "prometheus", "prometheus_url": prom.display_url, "history": history}
    else:
        # the bundled policy sample: a snapshot with its request mix, recorded from the real local stack
        # (the recommend sample predates request mixes)
        from audit_tune.cli.inputs import POLICY_SAMPLE

        path = Path(snapshot) if snapshot else POLICY_SAMPLE
        if not snapshot:
            log(f"tune policy impact: no --snapshot or --prometheus-url given; using the bundled sample {path.name} "
                "(a real local kube-apiserver under tune loadtest, with its request mix; an example, not yours)")
        Snapshot.load(path)  # validates the documented part, errors name file and field
        snap = as_object(jsondata.loads(files.read_text(path, "--snapshot", "a snapshot (tune snapshot -o FILE)"),
                                        f"--snapshot {path}"), f"--snapshot {path}")
        source = {"kind": "snapshot" if snapshot else "bundled sample", "snapshot": str(snapshot or path.name)}
    report = impact_report(snap, new, old, assume_user=args.assume_user, source=source)
    text = render(report, fmt)
    write_output(text, args.output)
    return 0


impact_cmd = prometheus_options(impact)  # the shared Prometheus flags, named as KRR names them
