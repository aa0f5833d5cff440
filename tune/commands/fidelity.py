"""``tune fidelity``: the simulator against the REAL k8s.io/apiserver audit backends, side by side.

Thin: the catalogue is :mod:`audit_tune.analysis.fidelity.cases`, the tolerances and runs
:mod:`audit_tune.analysis.fidelity.compare`, the tables and the document
:mod:`audit_tune.analysis.fidelity.report`. Exit 3 when a comparison is outside tolerance.

    tune fidelity                       # all scenarios, fast engine, table
    tune fidelity -s overload_throttle -s webhook_down --engine reference
    tune fidelity --write-doc docs/fidelity.md
"""
from __future__ import annotations

import json
from pathlib import Path

import typer

PANEL = "Simulate"


def register(app: typer.Typer) -> None:
    app.command("fidelity", rich_help_panel=PANEL,
                help="Compare the simulator with the REAL k8s.io/apiserver audit backends (the Go oracle), side by side.\n\n"
                     "Example: [bold]tune fidelity --engine fast --write-doc docs/fidelity.md[/bold]")(fidelity)


def fidelity(
    scenario: list[str] = typer.Option([], "-s", "--scenario", help="Scenario name (repeatable); default: all."),
    engine: str = typer.Option("fast", "--engine", help="Simulator engine to compare: fast or reference."),
    fmt: str = typer.Option("table", "-f", "--format", help="table, markdown or json."),
    write_doc: str | None = typer.Option(None, "--write-doc", help="Also write the markdown report to FILE (e.g. docs/fidelity.md)."),
    list_: bool = typer.Option(False, "--list", help="List the scenarios and exit."),
) -> int:
    from audit_tune.analysis.fidelity.cases import KNOWN_GAPS, cases
    from audit_tune.analysis.fidelity.compare import run_cases
    from audit_tune.analysis.fidelity.report import doc_text, json_doc, markdown, terminal_table
    from audit_tune.basics.errors import InputError, ObjectiveViolated
    from audit_tune.sim.oracle import oracle_binary

    all_cases = cases()
    if list_:
        for c in all_cases:
            typer.echo(f"{c.name:22s} {c.regime}")
        return 0
    names = {c.name for c in all_cases}
    for s in scenario:
        if s not in names:
            raise InputError(f"--scenario {s}: unknown; use one of {', '.join(sorted(names))}")
    if engine not in ("fast", "reference"):
        raise InputError(f"--engine {engine}: use fast or reference")
    oracle_binary()  # fails early with "run bash scripts/build-oracle.sh"
    chosen = [c for c in all_cases if not scenario or c.name in scenario]
    rows, results, wall = run_cases(chosen, engine, log=lambda m: typer.echo(m, err=True))
    bad = [r for r in rows if not r.ok and r.case not in KNOWN_GAPS]
    if fmt == "json":
        typer.echo(json.dumps(json_doc(rows, results, engine, wall), indent=2))
    elif fmt == "markdown":
        typer.echo(markdown(rows))
    else:
        typer.echo(terminal_table(rows, engine, len(chosen), wall), nl=False)
    if write_doc:
        cmd = "tune fidelity --engine " + engine + "".join(f" -s {s}" for s in scenario) + f" --write-doc {write_doc}"
        Path(write_doc).write_text(doc_text(rows, results, engine, cmd, wall))
        typer.echo(f"fidelity: wrote {write_doc}", err=True)
    if bad:
        raise ObjectiveViolated(f"{len(bad)} of {len(rows)} fidelity comparisons outside tolerance: "
                                + ", ".join(f"{r.case}/{r.metric}" for r in bad))
    return 0
