"""``tune policy``: what an audit policy does to the event rate (issue 9, first half).

``tune policy explain POLICY`` loads the policy exactly as kube-apiserver's
``--audit-policy-file`` does (:mod:`analysis.policy`), evaluates it against common request
classes and prints, for each, the deciding rule, the level, the stages emitted and the events
per request, followed by the rules that can never match. This module only parses and prints.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Optional

import typer

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
    app.add_typer(sub, name="policy", rich_help_panel=PANEL)


def explain_cmd(
    policy: Path = typer.Argument(..., help="Audit policy file (what --audit-policy-file points at)."),
    fmt: str = typer.Option("table", "-f", "--format", help="table | json | yaml."),
    output: Optional[str] = typer.Option(None, "-o", "--output", help="Write here (atomically) instead of stdout."),
    strict: bool = typer.Option(False, "--strict", help="Unknown or duplicate fields are errors, not warnings."),
) -> None:
    from analysis.policy import load_policy
    from analysis.policy.explain import explain_policy
    from sim.errors import InputError
    from tune import __version__
    from tune.output import log, render, write_output

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

    from analysis.policy.explain import table_rows

    buf = io.StringIO()
    console = Console(file=buf, width=160, color_system=None, force_terminal=False, highlight=False)
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
    from analysis.policy.catalog import USER_KINDS

    everyone = [u.key for u in USER_KINDS]
    others = [u for u in everyone if u not in users]
    if users != ["all"] and len(others) < len(users) and others:
        return "all except " + ", ".join(others)
    return ", ".join(users)


def _abbrev(stage: str) -> str:
    return {"RequestReceived": "RR", "ResponseStarted": "RS", "ResponseComplete": "RC", "Panic": "P"}.get(stage, stage)
