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
from typing import Any, Optional

import typer

PANEL_IN = "Input"
PANEL_OBJ = "Objective"
PANEL_OUT = "Output"
FORMATS = ("table", "json", "yaml", "flags", "kubeadm", "kubeadm-v1beta3", "kind", "manifest-patch", "prometheusrule")
from audit_tune.cli.inputs import SAMPLE  # noqa: E402,F401 - re-exported for callers that import it from here

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
    return _run(ctx, obj, prom=prom, **kw)


def _run(ctx: typer.Context, obj: Any, snapshot: Optional[str], prometheus_url: Optional[str], history: str, step: str,
         current_flags: Optional[str], seed: int, fmt: str, output: Optional[str], no_progress: bool,
         prom: Any = None, selector: Optional[str] = None, end: Optional[str] = None, all_clusters: bool = False,
         output_dir: Optional[str] = None, executor: str = "local", scheduler: Optional[str] = None,
         policy: Optional[str] = None, evaluate: Optional[str] = None) -> int:
    from audit_tune.analysis import outputs  # noqa: F401 - registers the formatters
    from audit_tune.analysis.recommend import build_report
    from audit_tune.basics.errors import InputError, ObjectiveViolated
    from audit_tune.basics.output import log, render, write_output

    if fmt not in FORMATS:
        raise InputError(f"--format {fmt}: unknown format; use one of {', '.join(FORMATS)}")
    obj = obj.validated()
    say = (lambda s: None) if no_progress else (lambda s: log(f"tune recommend: {s}"))
    # ---- input ----
    from audit_tune.cli.inputs import POLICY_SAMPLE, current_flags_of, load_history

    if policy and not snapshot and not (prom.url if prom is not None else prometheus_url):
        snapshot = str(POLICY_SAMPLE)  # the bundled sample that has a request mix
        log(f"tune recommend: --policy without --snapshot or --prometheus-url: using the bundled sample "
            f"{POLICY_SAMPLE.name} (a real local kube-apiserver with its request mix; an example, not yours)")
    snap, source = load_history("recommend", snapshot, prom, prometheus_url, history, step, selector, end, say)
    if policy:  # the load a new audit policy would make (issue 9: analysis/policy_impact.py, docs/policy.md)
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
    if all_clusters:
        return _fleet(snap, current, csrc, obj, seed, source, fmt, output, output_dir, executor, scheduler, say)
    if output_dir:
        raise InputError("--output-dir: goes with --all-clusters (one file per cluster); use -o FILE for one report")
    judged = _evaluate_flags(evaluate, current) if evaluate else None
    report = build_report(snap, current, csrc, obj, seed=seed, source=source, log=say, evaluate=judged)
    if fmt == "table":
        text = _table(report, color=output in (None, "", "-") and sys.stdout.isatty())
    else:
        text = render(report, fmt)
    write_output(text, output)
    if judged is not None:
        failed = [c for c in report["evaluated"]["checks"] if not c["ok"]]
        if failed:
            raise ObjectiveViolated(f"--evaluate: {len(failed)} check(s) failed: "
                                    + "; ".join(f"{c['check']}: {c['detail']}" for c in failed))
        return 0
    if report["recommended"] is None:
        why = "; ".join(report.get("no_recommendation_why") or []) or "see the table or -f json 'search'"
        raise ObjectiveViolated(f"no flag set meets the objective within the constraints: {why}")
    if (report.get("failures") or {}).get("no_survivor"):
        raise ObjectiveViolated(report["failures"]["no_survivor"])
    if not report["current_ok"]:
        raise ObjectiveViolated("current flags violate the objective: " + "; ".join(report["current_violations"]))
    return 0


def _evaluate_flags(text: str, base: Any) -> Any:
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


def _fleet(snap: Any, current: Any, csrc: str, obj: Any, seed: int, source: dict, fmt: str, output: Optional[str],
           output_dir: Optional[str], executor: str, scheduler: Optional[str], say: Any) -> int:
    """--all-clusters: one recommendation per cluster label value, in parallel; a summary table."""
    from audit_tune.analysis.fleet import recommend_fleet
    from audit_tune.basics.errors import InputError, ObjectiveViolated
    from audit_tune.basics.output import render, write_atomic, write_output

    if executor not in ("local", "dask", "dask-local"):
        raise InputError(f"--executor {executor}: use local, dask or dask-local")
    if executor == "dask" and not scheduler:
        raise InputError("--executor dask: needs --scheduler tcp://HOST:PORT")
    out_dir = Path(output_dir) if output_dir else None
    if out_dir is not None and not out_dir.is_dir():
        raise InputError(f"--output-dir {output_dir}: not a folder")
    fleet = recommend_fleet(snap, current, csrc, obj, seed=seed, source=source, executor=executor,
                            scheduler=scheduler, log=say)
    if out_dir is not None:
        ext = {"table": "txt", "json": "json", "yaml": "yaml", "prometheusrule": "yaml", "kind": "yaml",
               "kubeadm": "yaml", "kubeadm-v1beta3": "yaml", "manifest-patch": "yaml", "flags": "txt"}[fmt]
        for cluster, rep in fleet["clusters"].items():
            text = _table(rep, color=False) if fmt == "table" else render(rep, fmt)
            write_atomic(out_dir / f"{cluster or 'default'}.{ext}", text)
        write_atomic(out_dir / "summary.json", render(fleet, "json"))
    if fmt in ("json", "yaml"):
        text = render(fleet, fmt)
    else:
        text = _fleet_table(fleet)
    write_output(text, output)
    bad = [r["cluster"] or "(no cluster label)" for r in fleet["summary"] if not r["current_ok"] or not r["recommended_flags"]]
    if bad:
        raise ObjectiveViolated(f"current flags violate the objective (or nothing fits) in {len(bad)} of "
                                f"{len(fleet['summary'])} clusters: {', '.join(bad)}")
    return 0


def _fleet_table(fleet: dict) -> str:
    from io import StringIO

    from rich.console import Console
    from rich.table import Table

    buf = StringIO()
    con = Console(file=buf, width=160, force_terminal=False, color_system=None, soft_wrap=True)
    con.print(f"audit-tune {fleet['tool_version']} recommend --all-clusters  seed={fleet['seed']}  "
              f"executor={fleet['executor']}  current flags: {fleet['current_flags']['source']}")
    t = Table(title="per cluster")
    for c in ("cluster", "apiservers", "peak ev/s", "current", "confidence", "recommended (changed flags)", "binding"):
        t.add_column(c)
    for r in fleet["summary"]:
        flags = r["recommended_flags"]
        changed = [f for f in (flags or []) if f not in fleet["current_flags"]["flags"]]
        t.add_row(r["cluster"] or "(none)", str(r["instances"]), f"{r['peak_event_rate']:,.0f}",
                  "ok" if r["current_ok"] else "VIOLATES", str(r["confidence"]),
                  "\n".join(changed) if flags else "none fits: " + "; ".join(r["why_none"] or []),
                  str(r["binding_constraint"] or "-"))
    con.print(t)
    return buf.getvalue()


def _table(report: dict, color: bool) -> str:
    import shutil

    from audit_tune.analysis.outputs import render_table

    if color:  # a terminal: use its width
        return render_table(report, color=True, width=max(shutil.get_terminal_size((150, 40)).columns, 80))
    return render_table(report, color=False)


def _from_prometheus(prom: Any, history: str, step: str, selector: str, say: Any, end: Optional[str] = None) -> Any:
    """Record a snapshot in memory (``analysis.prom.take_snapshot``), then the same path as a file."""
    from audit_tune.analysis.prom import PromClient, SnapshotRequest, partial_snapshot, take_snapshot
    from audit_tune.basics.errors import InputError, NotEnoughData
    from audit_tune.sim.units import parse_duration
    from audit_tune.basics.output import log

    if prom is None:
        raise InputError("--prometheus-url: Prometheus reading is not available in this build; use --snapshot FILE")
    prom.validate()
    from audit_tune.cli.commands.snapshot import _parse_end

    req = SnapshotRequest(history=parse_duration(history, "--history"), step=parse_duration(step, "--step"),
                          end=_parse_end(end) if end else None, selector=selector)
    if req.step <= 0:
        raise InputError("--step: must be > 0s, e.g. 15s")
    say(f"reading {history} from {prom.display_url}")
    try:
        snap = take_snapshot(PromClient(prom), req, log=say)
    except NotEnoughData as e:
        part = partial_snapshot(e)
        for m in (part.missing if part else []):
            log(f"tune recommend: missing: {m}")
        raise
    for m in snap.missing:
        say(f"missing: {m}")
    return snap


def _prom_available() -> bool:
    try:
        import audit_tune.analysis.prom  # noqa: F401
        import audit_tune.cli.options  # noqa: F401
    except ImportError:
        return False
    return True


def _build_signature() -> None:
    from audit_tune.cli.inputs import Signature

    sig = Signature()
    opt = sig.opt
    sig.input_options(PANEL_IN, step_default="15s", prom_available=_prom_available())
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
if _prom_available():
    from audit_tune.cli.options import prometheus_options

    recommend = prometheus_options(recommend)  # noqa: F811 - the shared Prometheus flags, named as KRR names them
