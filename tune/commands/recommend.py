"""``tune recommend``: webhook buffering flags from observed load, with the evidence.

Thin: it gathers the inputs (snapshot file, Prometheus, or the bundled sample; current flags),
builds the :class:`analysis.recommend.Objective` from options generated from its fields, and
prints :func:`analysis.recommend.build_report` in the chosen format. Exit 3 when the current
flags violate the objective (or nothing meets it), 4 when the data is not enough (per-item reasons).
"""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

import typer

from audit_tune.cli.inputs import SAMPLE
from audit_tune.cli.options import prometheus_options

__all__ = ["SAMPLE", "register", "recommend"]

if TYPE_CHECKING:
    from audit_tune.analysis.objective import Objective
    from audit_tune.analysis.prom import PromSettings
    from audit_tune.analysis.recommendation import RecommendationReport
    from audit_tune.basics.jsondata import JsonObject
    from audit_tune.sim.config import AuditFlags

PANEL_IN = "Input"
PANEL_OBJ = "Objective"
PANEL_OUT = "Output"
FORMATS = ("table", "json", "yaml", "flags", "kubeadm", "kubeadm-v1beta3", "kind", "manifest-patch", "prometheusrule")

HELP = """Recommend --audit-webhook-batch-* flags from observed audit load: no event lost at the observed
peak x headroom, bounded memory, a receiver that is not flooded. Calibrates the simulator to each
apiserver (rate curve, bursts, event size, webhook latency and failures), checks the calibration
against the drops Prometheus saw, searches analytically then by simulation, and compares current
flags, the recommendation and the kubernetes.io rule of thumb.

Example: [bold]tune recommend --snapshot snap.json --current-flags /etc/kubernetes/manifests/kube-apiserver.yaml -f kubeadm[/bold]

Exit codes: 0 ok, 1 bad input, 3 current flags violate the objective, 4 not enough data.
"""


def register(app: typer.Typer) -> None:
    app.command("recommend", help=HELP, rich_help_panel="Recommend",
                context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
                short_help="Recommend audit webhook flags from a snapshot or Prometheus.")(recommend)


def _objective_fields() -> list[dataclasses.Field]:
    from audit_tune.analysis.recommend import Objective

    return list(dataclasses.fields(Objective))


def recommend(ctx: typer.Context, **kw: Any) -> int:
    from audit_tune.analysis.recommend import Objective

    obj = Objective(**{f.name: kw.pop(f.name) for f in _objective_fields()})
    prom = kw.pop("prom", None)
    if prom is not None:
        kw["prometheus_url"] = prom.url
    return _run(ctx, obj, RecommendArgs(**kw), prom)


@dataclasses.dataclass(frozen=True)
class RecommendArgs:
    """The ``tune recommend`` options other than the objective and the Prometheus connection."""

    snapshot: Optional[str]
    prometheus_url: Optional[str]
    history: str
    step: str
    current_flags: Optional[str]
    seed: int
    fmt: str
    output: Optional[str]
    no_progress: bool
    selector: Optional[str] = None
    end: Optional[str] = None
    all_clusters: bool = False
    output_dir: Optional[str] = None
    executor: str = "local"
    scheduler: Optional[str] = None
    policy: Optional[str] = None
    audit_log: Optional[list[str]] = None
    evaluate: Optional[str] = None


def _run(ctx: typer.Context, obj: Objective, args: RecommendArgs, prom: PromSettings | None = None) -> int:
    from audit_tune.analysis.recommend import build_report
    from audit_tune.analysis.render import recommend as _formats  # noqa: F401 - registers the formatters
    from audit_tune.basics.errors import InputError, ObjectiveViolated
    from audit_tune.basics.output import log, render, write_output

    snapshot, prometheus_url, fmt, output, policy = args.snapshot, args.prometheus_url, args.fmt, args.output, args.policy
    current_flags, seed = args.current_flags, args.seed
    if fmt not in FORMATS:
        raise InputError(f"--format {fmt}: unknown format; use one of {', '.join(FORMATS)}")
    obj = obj.validated()
    say = (lambda s: None) if args.no_progress else (lambda s: log(f"tune recommend: {s}"))
    # ---- input ----
    from audit_tune.cli.inputs import POLICY_SAMPLE, current_flags_of, load_history

    if policy and not snapshot and not (prom.url if prom is not None else prometheus_url):
        snapshot = str(POLICY_SAMPLE)  # the bundled sample that has a request mix
        log(f"tune recommend: --policy without --snapshot or --prometheus-url: using the bundled sample "
            f"{POLICY_SAMPLE.name} (a real local kube-apiserver with its request mix; an example, not yours)")
    if args.audit_log:  # audit log files (tune/auditlog_input.py), with Prometheus when given
        from audit_tune.cli import auditlog_input

        snap, source = auditlog_input.load("recommend", args.audit_log, snapshot, prom, args.step, args.selector,
                                           list(ctx.args), current_flags, say,
                                           auditlog_input.ReadOptions(obj.jobs, not args.no_progress))
    else:
        snap, source = load_history("recommend", snapshot, prom, prometheus_url, args.history, args.step, args.selector,
                                    args.end, say)
    if policy:  # the load a new audit policy would make (analysis/policy_impact.py, docs/policy.md)
        from audit_tune.analysis.policy_impact import project_for_recommend

        path = snapshot
        snap = project_for_recommend(snap, policy, snapshot_path=path, prom=prom, log=say)
        source["policy"] = policy
    extra = list(ctx.args)
    current, csrc = current_flags_of(current_flags, extra, bundled=source["kind"] == "bundled sample")
    if not current_flags and not extra:
        log(f"tune recommend: --current-flags not given; using {csrc.split(':')[0]}")
    if current.webhook.mode != "batch":
        say(f"current --audit-webhook-mode={current.webhook.mode}: compared as is; recommendations are for batch mode")
    if args.all_clusters:
        return _fleet(snap, current, csrc, obj, source, args, say)
    if args.output_dir:
        raise InputError("--output-dir: goes with --all-clusters (one file per cluster); use -o FILE for one report")
    judged = _evaluate_flags(args.evaluate, current) if args.evaluate else None
    report = build_report(snap, current, csrc, obj, seed=seed, source=source, log=say, evaluate=judged)
    if fmt == "table":
        text = _table(report, color=output in (None, "", "-") and sys.stdout.isatty())
    else:
        text = render(report, fmt)
    write_output(text, output)
    if judged is not None:
        assert report.evaluated is not None
        failed = [c for c in report.evaluated.checks if not c.ok]
        if failed:
            raise ObjectiveViolated(f"--evaluate: {len(failed)} check(s) failed: "
                                    + "; ".join(f"{c.check}: {c.detail}" for c in failed))
        return 0
    if report.recommended is None:
        why = "; ".join(report.no_recommendation_why or []) or "see the table or -f json 'search'"
        raise ObjectiveViolated(f"no flag set meets the objective within the constraints: {why}")
    if report.failures.sentence:
        raise ObjectiveViolated(report.failures.sentence)
    if not report.current_ok:
        raise ObjectiveViolated("current flags violate the objective: " + "; ".join(report.current_violations))
    return 0


def _evaluate_flags(text: str, base: AuditFlags) -> AuditFlags:
    """--evaluate: flags (``'--audit-...=.. --audit-...=..'``) or a flags file / manifest, over the flags in force."""
    import shlex

    from audit_tune.basics.errors import InputError
    from audit_tune.sim.config import load_flags_file, parse_flags

    if Path(text).is_file():
        return load_flags_file(text, base=base)
    try:
        args = shlex.split(text)
    except ValueError as e:
        raise InputError(f"--evaluate: {e}") from None
    if not args or not args[0].startswith("--"):
        raise InputError(f"--evaluate {text!r}: not a file and not flags like '--audit-webhook-batch-max-size=400'")
    return parse_flags(args, base=base, source="--evaluate")


def _fleet(snap: JsonObject, current: AuditFlags, csrc: str, obj: Objective, source: dict[str, object],
           args: RecommendArgs, say: Callable[[str], None]) -> int:
    """--all-clusters: one recommendation per cluster label value, in parallel; a summary table."""
    fmt, output, output_dir, executor, scheduler = args.fmt, args.output, args.output_dir, args.executor, args.scheduler
    from audit_tune.analysis.fleet import recommend_fleet
    from audit_tune.analysis.render import fleet as _fleet_formats  # noqa: F401 - registers the formatters
    from audit_tune.analysis.render import recommend as _formats  # noqa: F401
    from audit_tune.basics.errors import InputError, ObjectiveViolated
    from audit_tune.basics.output import render, write_atomic, write_output

    if executor not in ("local", "dask", "dask-local"):
        raise InputError(f"--executor {executor}: use local, dask or dask-local")
    if executor == "dask" and not scheduler:
        raise InputError("--executor dask: needs --scheduler tcp://HOST:PORT")
    out_dir = Path(output_dir) if output_dir else None
    if out_dir is not None and not out_dir.is_dir():
        raise InputError(f"--output-dir {output_dir}: not a folder")
    fleet = recommend_fleet(snap, current, csrc, obj, seed=args.seed, source=source, executor=executor,
                            scheduler=scheduler, log=say)
    if out_dir is not None:
        ext = {"table": "txt", "json": "json", "yaml": "yaml", "prometheusrule": "yaml", "kind": "yaml",
               "kubeadm": "yaml", "kubeadm-v1beta3": "yaml", "manifest-patch": "yaml", "flags": "txt"}[fmt]
        for cluster, rep in fleet.clusters.items():
            text = _table(rep, color=False) if fmt == "table" else render(rep, fmt)
            write_atomic(out_dir / f"{cluster or 'default'}.{ext}", text)
        write_atomic(out_dir / "summary.json", render(fleet, "json"))
    text = render(fleet, fmt if fmt in ("json", "yaml") else "table")
    write_output(text, output)
    bad = [r.cluster or "(no cluster label)" for r in fleet.summary if not r.fits]
    if bad:
        raise ObjectiveViolated(f"current flags violate the objective (or nothing fits) in {len(bad)} of "
                                f"{len(fleet.summary)} clusters: {', '.join(bad)}")
    return 0


def _table(report: RecommendationReport, color: bool) -> str:
    import shutil

    from audit_tune.analysis.render.recommend import render_table

    if color:  # a terminal: use its width
        return render_table(report, color=True, width=max(shutil.get_terminal_size((150, 40)).columns, 80))
    return render_table(report, color=False)


def _build_signature() -> None:
    from audit_tune.cli.auditlog_input import HELP as AUDIT_LOG_HELP
    from audit_tune.cli.inputs import Signature

    sig = Signature()
    opt = sig.opt
    sig.input_options(PANEL_IN, step_default="15s")
    opt("audit_log", list[str], typer.Option([], "--audit-log", help=AUDIT_LOG_HELP + " 'sample' = the bundled real sample.", rich_help_panel=PANEL_IN))
    sig.objective_options(PANEL_OBJ)
    opt("policy", Optional[str], typer.Option(None, "--policy", help="Recommend for the load this audit policy would make: scales the observed audit event rates by the policy's estimate on the request mix (needs the snapshot's request_mix; see 'tune policy impact').", rich_help_panel=PANEL_IN))
    opt("evaluate", Optional[str], typer.Option(None, "--evaluate", help="Judge these flags (like --current-flags: flags or a file) under the same objective and failure scenarios, without the snapshot's observed drops: one answer per check, exit 3 when one fails.", rich_help_panel=PANEL_IN))
    opt("all_clusters", bool, typer.Option(False, "--all-clusters", help="Recommend for every cluster (by the cluster label) in parallel, with one summary table.", rich_help_panel=PANEL_IN))
    opt("output_dir", Optional[str], typer.Option(None, "--output-dir", help="With --all-clusters: write one file per cluster (in --format) and summary.json here.", rich_help_panel=PANEL_OUT))
    opt("executor", str, typer.Option("local", "--executor", help="With --all-clusters: local (process pool, --jobs), dask (--scheduler) or dask-local.", rich_help_panel=PANEL_OBJ))
    opt("scheduler", Optional[str], typer.Option(None, "--scheduler", help="With --executor dask: the scheduler address, tcp://HOST:PORT.", rich_help_panel=PANEL_OBJ))
    opt("seed", int, typer.Option(1, "--seed", help="Random seed (bursts, simulations).", rich_help_panel=PANEL_OUT))
    opt("fmt", str, typer.Option("table", "-f", "--format", help=" | ".join(FORMATS) + ".", rich_help_panel=PANEL_OUT))
    opt("output", Optional[str], typer.Option(None, "-o", "--output", help="Write to FILE (atomically) instead of stdout.", rich_help_panel=PANEL_OUT))
    opt("no_progress", bool, typer.Option(False, "--no-progress", help="No progress lines on stderr.", rich_help_panel=PANEL_OUT))
    sig.apply(recommend)


_build_signature()
recommend = prometheus_options(recommend)  # noqa: F811 - the shared Prometheus flags, named as KRR names them
