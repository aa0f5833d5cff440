"""``tune report``: an HTML + Markdown capacity report a person reads at a glance.

Thin: the same inputs as ``tune recommend`` (snapshot file, Prometheus, or the bundled sample;
``--current-flags``; the objective options generated from :class:`analysis.recommend.Objective`),
optionally a ``tune loadtest`` record; the recommendation is ``analysis.recommend.build_report``
(via :func:`analysis.report.data.recommendation`); the rest is :mod:`analysis.report`.
Exit 0 when written, 3 when the current flags violate the objective (the report is still
written), 1 on bad input, 4 when the data is not enough.
"""
from __future__ import annotations

import dataclasses
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer

from audit_tune.cli.commands.recommend import PANEL_IN, PANEL_OBJ, PANEL_OUT
from audit_tune.cli.inputs import current_flags_of
from audit_tune.cli.options import prometheus_options

if TYPE_CHECKING:
    from audit_tune.analysis.objective import Objective
    from audit_tune.analysis.prom import PromSettings

HELP = """Write a capacity report (HTML page, Markdown with PNG plots, data.json) into reports/NAME/:
verdict and recommended flags, observed rate against qps x max-size, the drop knee for current,
recommended and rule-of-thumb flags, buffer occupancy at the busiest stretch, delivery latency,
in-flight batches and memory against webhook latency, a qps x max-size sensitivity map, and a load
test's observed vs predicted numbers. Same inputs and objective options as tune recommend.

Example: [bold]tune report --snapshot snap.json --current-flags /etc/kubernetes/manifests/kube-apiserver.yaml --loadtest run.json --name prod-eu[/bold]

Exit codes: 0 written, 1 bad input, 3 written but the current flags violate the objective, 4 not enough data.
"""


def register(app: typer.Typer) -> None:
    app.command("report", help=HELP, rich_help_panel="Recommend",
                context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
                short_help="HTML + Markdown capacity report from a snapshot or Prometheus.")(report)


def report(ctx: typer.Context, **kw: Any) -> int:
    from audit_tune.analysis.recommend import Objective

    obj = Objective(**{f.name: kw.pop(f.name) for f in dataclasses.fields(Objective)})
    prom = kw.pop("prom", None)
    return _run(ctx, obj, ReportArgs(**kw), prom)


@dataclasses.dataclass(frozen=True)
class ReportArgs:
    """The ``tune report`` options other than the objective and the Prometheus connection."""

    snapshot: Optional[str]
    history: str
    step: str
    current_flags: Optional[str]
    loadtest: Optional[str]
    name: Optional[str]
    reports_dir: str
    seed: int
    no_progress: bool
    selector: Optional[str] = None
    prometheus_url: Optional[str] = None
    end: Optional[str] = None
    audit_log: Optional[list[str]] = None


def _run(ctx: typer.Context, obj: Objective, args: ReportArgs, prom: PromSettings | None = None) -> int:
    from audit_tune.analysis.report import write
    from audit_tune.analysis.report.data import assemble, recommendation
    from audit_tune.basics.errors import InputError, ObjectiveViolated
    from audit_tune.basics.output import log

    snapshot, history, step, current_flags, loadtest = args.snapshot, args.history, args.step, args.current_flags, args.loadtest
    name, reports_dir, seed, no_progress = args.name, args.reports_dir, args.seed, args.no_progress
    selector, prometheus_url, end, audit_log = args.selector, args.prometheus_url, args.end, args.audit_log
    t0 = time.perf_counter()
    obj = obj.validated()
    say = (lambda s: None) if no_progress else (lambda s: log(f"tune report: {s}"))
    if name is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", name):
        raise InputError(f"--name {name!r}: use letters, digits, '.', '_' or '-' (it names the folder reports/NAME)")
    if loadtest and not Path(loadtest).is_file():
        raise InputError(f"--loadtest {loadtest}: no such file (a record written by 'tune loadtest -o run.json')")
    from audit_tune.cli.inputs import load_history

    if audit_log:  # audit log files (tune/auditlog_input.py), with Prometheus when given
        from audit_tune.cli import auditlog_input

        snap, source = auditlog_input.load("report", audit_log, snapshot, prom, step, selector, list(ctx.args),
                                           current_flags, say,
                                           auditlog_input.ReadOptions(obj.jobs, not no_progress))
    else:
        snap, source = load_history("report", snapshot, prom, prometheus_url, history, step, selector, end, say)
    default_name = {"snapshot": Path(snapshot or "x").stem, "prometheus": "prometheus",
                    "audit log": "audit-log"}.get(source["kind"], "sample")
    if source["kind"] == "snapshot" and snapshot:
        source["snapshot"] = Path(snapshot).name
    current, csrc = current_flags_of(current_flags, list(ctx.args), bundled=source["kind"] == "bundled sample")
    if not current_flags and not ctx.args:
        log(f"tune report: --current-flags not given; using {csrc.split(':')[0]}")
    out_dir = Path(reports_dir) / (name or default_name)
    say("recommending (analysis.recommend.build_report)")
    t1 = time.perf_counter()
    rec = recommendation(snap, current, csrc, obj, seed, source, say)
    t2 = time.perf_counter()
    say("simulating the report's plots")
    data = assemble(snap, rec, current, obj, seed, out_dir.name, loadtest=loadtest, log=say)
    t3 = time.perf_counter()
    paths = write(data, out_dir)
    t4 = time.perf_counter()
    log(f"tune report: wrote {out_dir}/index.html, report.md, data.json and {sum(p.suffix == '.png' for p in paths)} "
        f"plots in {t4 - t0:.1f} s (inputs {t1 - t0:.1f} s, recommendation {t2 - t1:.1f} s, "
        f"{data.config.report_simulation_runs} report simulations {t3 - t2:.1f} s, plots and files {t4 - t3:.1f} s)")
    print(str(out_dir / "index.html"))
    if rec["recommended"] is None:
        raise ObjectiveViolated("no flag set meets the objective within the constraints (see the report)")
    if not rec["current_ok"]:
        raise ObjectiveViolated("current flags violate the objective (report written): "
                                + "; ".join(rec["current_violations"]))
    return 0


def _build_signature() -> None:
    from audit_tune.cli.auditlog_input import HELP as AUDIT_LOG_HELP
    from audit_tune.cli.inputs import Signature

    sig = Signature()
    opt = sig.opt
    sig.input_options(PANEL_IN, step_default="30s")
    opt("audit_log", list[str], typer.Option([], "--audit-log", help=AUDIT_LOG_HELP + " 'sample' = the bundled real sample.", rich_help_panel=PANEL_IN))
    opt("loadtest", Optional[str], typer.Option(None, "--loadtest", help="A tune loadtest run record (audit-tune-loadtest/v1; its trace sidecar beside it): observed vs predicted.", rich_help_panel=PANEL_IN))
    sig.objective_options(PANEL_OBJ)
    opt("seed", int, typer.Option(1, "--seed", help="Random seed (bursts, simulations).", rich_help_panel=PANEL_OUT))
    opt("name", Optional[str], typer.Option(None, "--name", help="Report folder name (default: the snapshot's name, 'sample' for the bundled sample).", rich_help_panel=PANEL_OUT))
    opt("reports_dir", str, typer.Option("reports", "--reports-dir", help="Parent folder of the report folder.", rich_help_panel=PANEL_OUT))
    opt("no_progress", bool, typer.Option(False, "--no-progress", help="No progress lines on stderr.", rich_help_panel=PANEL_OUT))
    sig.apply(report)


_build_signature()
report = prometheus_options(report)  # noqa: F811 - the shared Prometheus flags, named as KRR names them
