"""The table section of ``tune recommend`` for receiver failures (``analysis/outage.py``): every
flag set under every scenario, and the frontier when no flag set survives."""
from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from audit_tune.sim.units import format_duration, format_size


def _tol(o: dict[str, Any]) -> str:
    t = o.get("outage_tolerance_seconds")
    if t is None:
        return "-"
    s = (">= " if o.get("outage_tolerance_at_least") else "") + format_duration(t)
    return s + (f" ({o['outage_tolerance_limit']})" if o.get("outage_tolerance_limit") else "")


def print_sections(con: Console, report: dict[str, Any]) -> None:
    print_failures(con, report)
    print_log(con, report)


def print_failures(con: Console, report: dict[str, Any]) -> None:
    f = report.get("failures")
    if not f or not f["scenarios"]:
        return
    t = Table(title="Receiver failures (starting at each apiserver's busiest step; memory includes batches held by "
                    "retrying goroutines; tolerance on the busiest apiserver)",
              show_header=True, header_style="bold", title_justify="left")
    for col in ("flag set", "scenario", "lost webhook", "lost buffered", "peak memory", "backlog delivered after",
                "outage tolerance", "lost if 2x longer"):
        t.add_column(col, justify="left" if col in ("flag set", "scenario") else "right", no_wrap=col in ("flag set", "scenario"))
    for o in f["outcomes"]:
        style = "green" if o["ok"] else "red"
        t.add_row(f"[{style}]{escape(o['flag_set'])}[/{style}]", o["scenario"], f"{o['lost_webhook']:,}",
                  f"{o['lost_buffered']:,}", format_size(o["peak_memory_bytes"]), f"{o['recovery_seconds']:.0f}s",
                  _tol(o), "-" if o["lost_if_twice_as_long"] is None else f"{o['lost_if_twice_as_long']:,}")
    con.print(t)
    ev = report.get("evaluated")
    if ev:
        con.print("Evaluated flags: " + " ".join(ev["flags"]), markup=False)
        for c in ev["checks"]:
            mark = "[green]ok[/green]  " if c["ok"] else "[red]FAIL[/red]"
            con.print(f"  {mark} {escape(c['check'])}: {escape(c['detail'])}")
    if f["survivor"]:
        con.print(f"[green]{escape(f['survivor'])} survives every failure scenario within the memory budget.[/green]")
        return
    con.print(f"[red]{escape(f['no_survivor'])}.[/red]")
    fr = Table(title="Frontier: outage tolerance against peak memory (candidates that meet the rest of the objective)",
               show_header=True, header_style="bold", title_justify="left")
    for col in ("flag set", "scenario", "outage tolerance", "peak memory", "lost", "lost if 2x longer"):
        fr.add_column(col, justify="left" if col in ("flag set", "scenario") else "right")
    for r in f["frontier"]:
        fr.add_row(escape(r["flag_set"]), r["scenario"],
                   _tol({"outage_tolerance_seconds": r["outage_tolerance_seconds"], "outage_tolerance_at_least": r["at_least"]}),
                   format_size(r["peak_memory_bytes"]), f"{r['lost']:,}",
                   "-" if r["lost_if_twice_as_long"] is None else f"{r['lost_if_twice_as_long']:,}")
    con.print(fr)


def print_log(con: Console, report: dict[str, Any]) -> None:
    lg = report.get("log_backend")
    if not lg:
        return
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
