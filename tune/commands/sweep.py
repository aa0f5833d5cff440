"""``tune sweep``: run many scenarios (a grid, random or Latin-hypercube sample, times seeds) in parallel."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from audit_tune.basics.output import Progress, log

PANEL_SPEC = "Spec"
PANEL_EXEC = "Executor"
PANEL_OUT = "Output"

EXAMPLE_SPEC = """\
base: {duration: 30s, --audit-webhook-batch-max-wait: 1s}
axes: {--audit-webhook-batch-max-size: [100, 200, 400], --audit-webhook-batch-throttle-qps: [5, 10, 20], rate: [2000, 4000, 8000]}
seeds: 3"""


def register(app: typer.Typer) -> None:
    app.command(
        "sweep",
        rich_help_panel="Simulate",
        help=(
            "Simulate many scenarios (flags x workloads x seeds) in parallel and tabulate the results.\n\n"
            "SPEC is a YAML or JSON file; axes are kube-apiserver audit flags (as kube-apiserver spells them) "
            "or workload / receiver options (rate, burst-on, burst-off, burst-mean-on, burst-mean-off, "
            "webhook-latency, webhook-failure-rate, instances, duration, ...). A list is a set of values; "
            "{min: A, max: B, log: true} is a range for --sample random / lhs. Example spec:\n\n"
            + "\n\n".join(f"[dim]{line}[/dim]" for line in EXAMPLE_SPEC.splitlines()) + "\n\n"
            "Example: [bold]tune sweep sweep.yaml -o out/ -j 2[/bold]   "
            "[bold]tune sweep sweep.yaml -o out/ --executor dask --scheduler tcp://10.0.0.5:8786[/bold]\n\n"
            "Writes OUT/journal.jsonl as points finish (a re-run skips finished points), then OUT/results.csv, "
            "results.jsonl, summary.json and summary.txt (the drop-free region), printed at the end."
        ),
    )(sweep)


def sweep(
    spec_file: Optional[str] = typer.Argument(None, metavar="SPEC", help="Sweep spec, YAML or JSON (optional with --axis)."),
    axis: list[str] = typer.Option([], "--axis", help="Add an axis: NAME=V1,V2,... or NAME=MIN..MAX[:log][:steps=K] (repeatable).", rich_help_panel=PANEL_SPEC),
    set_: list[str] = typer.Option([], "--set", help="Fix a parameter for every point: NAME=VALUE (repeatable).", rich_help_panel=PANEL_SPEC),
    sample: Optional[str] = typer.Option(None, "--sample", help="grid, random or lhs (default: the spec's, else grid).", rich_help_panel=PANEL_SPEC),
    n: Optional[int] = typer.Option(None, "-n", "--points", help="Points to draw for random / lhs.", rich_help_panel=PANEL_SPEC),
    sample_seed: Optional[int] = typer.Option(None, "--sample-seed", help="Seed of the random / lhs sampler.", rich_help_panel=PANEL_SPEC),
    seeds: Optional[int] = typer.Option(None, "--seeds", help="Simulator seeds per point (seed, seed+1, ...).", rich_help_panel=PANEL_SPEC),
    seed: Optional[int] = typer.Option(None, "--seed", help="First simulator seed.", rich_help_panel=PANEL_SPEC),
    engine: Optional[str] = typer.Option(None, "--engine", help="Simulator engine (default fast).", rich_help_panel=PANEL_SPEC),
    executor: str = typer.Option("local", "--executor", help="local (process pool), dask (a running cluster) or dask-local (a LocalCluster).", rich_help_panel=PANEL_EXEC),
    jobs: Optional[int] = typer.Option(None, "-j", "--jobs", help="local: worker processes (default: CPUs).", rich_help_panel=PANEL_EXEC),
    scheduler: Optional[str] = typer.Option(None, "--scheduler", help="dask: scheduler address, tcp://HOST:PORT.", rich_help_panel=PANEL_EXEC),
    workers: Optional[int] = typer.Option(None, "--workers", help="dask-local: worker processes (default: CPUs).", rich_help_panel=PANEL_EXEC),
    chunk_size: Optional[int] = typer.Option(None, "--chunk-size", help="Points per task (default: about 4 tasks per worker, at most 50).", rich_help_panel=PANEL_EXEC),
    retries: int = typer.Option(2, "--retries", help="dask: retries of a failed task.", rich_help_panel=PANEL_EXEC),
    output: str = typer.Option("sweep-out", "-o", "--output", help="Output folder (journal, tables, summary).", rich_help_panel=PANEL_OUT),
    limit: Optional[int] = typer.Option(None, "--limit", help="Run at most this many unfinished points now; re-run to continue.", rich_help_panel=PANEL_OUT),
    retry_errors: bool = typer.Option(False, "--retry-errors", help="Run again the points that raised.", rich_help_panel=PANEL_OUT),
    restart: bool = typer.Option(False, "--restart", help="Forget the journal and run every point.", rich_help_panel=PANEL_OUT),
    dry_run: bool = typer.Option(False, "--dry-run", help="Check the spec and print how many points it has; run nothing.", rich_help_panel=PANEL_OUT),
    quiet: bool = typer.Option(False, "-q", "--quiet", help="Do not print the summary.", rich_help_panel=PANEL_OUT),
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress output on stderr.", rich_help_panel=PANEL_OUT),
) -> int:
    from audit_tune.analysis.executors import ExecutorOptions
    from audit_tune.analysis.sweep import plan, run_sweep
    from audit_tune.analysis.sweep_spec import load_spec, parse_cli_axis, parse_cli_set, spec_from_dict
    from audit_tune.basics.errors import InputError

    if spec_file is None and not axis:
        raise InputError("tune sweep: give a SPEC file and/or --axis NAME=V1,V2,... (see 'tune sweep --help')")
    if limit is not None and limit < 0:
        raise InputError(f"--limit {limit}: must be >= 0")
    d: dict[str, Any]  # the spec as a document, edited by --set / --axis
    if spec_file:
        base_spec = load_spec(spec_file)
        d = dict(base_spec.to_dict())
        root = base_spec.root
        source = spec_file
    else:
        d, root, source = {"base": {}, "axes": {}}, Path.cwd(), "command line"
    d["base"] = dict(d.get("base") or {})
    d["axes"] = dict(d.get("axes") or {})
    for s in set_:
        k, v = parse_cli_set(s)
        d["base"][k] = v
    for a in axis:
        k, v = parse_cli_axis(a)
        d["axes"][k] = v
    for key, val in (("sample", sample), ("n", n), ("sample_seed", sample_seed), ("seeds", seeds), ("seed", seed),
                     ("engine", engine)):
        if val is not None:
            d[key] = val
    if spec_file and not (set_ or axis or any(v is not None for v in (sample, n, sample_seed, seeds, seed, engine))):
        spec = base_spec
    else:
        spec = spec_from_dict(d, source=source if not (set_ or axis) else f"{source} + command line", root=root)
        spec.source = source
    ex = ExecutorOptions(kind=executor, jobs=jobs, scheduler=scheduler, workers=workers, chunk_size=chunk_size,
                         retries=retries).validate()
    if dry_run:
        pts = plan(spec)
        bad = sum(1 for p in pts if p.scenario is None)
        print(f"{len(pts)} points ({len(pts) // max(1, spec.seeds)} configs x {spec.seeds} seeds)"
              + (f", {bad} cannot be built" if bad else ""))
        return 0

    bar: Progress | None = None

    def progress(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = Progress(max(total, 1), f"sweep ({executor})", enabled=not no_progress and total > 0)
        bar.update(done)

    try:
        rep = run_sweep(spec, output, ex, limit=limit, retry_errors=retry_errors, restart=restart, progress=progress)
    except KeyboardInterrupt:
        if bar is not None:
            bar.close()
        log(f"tune sweep: interrupted; finished points are in {output}/journal.jsonl and the tables; "
            f"run the same command again to continue")
        raise
    if bar is not None:
        bar.close()
    from audit_tune.analysis.sweep_summary import summary_text

    if not quiet:
        print(summary_text(rep.summary), end="")
    how = f" on {rep.n_workers} workers, chunks of {rep.chunk_size}" if rep.n_workers else ""
    log(f"tune sweep: {rep.ran} points run, {rep.skipped} already done, {rep.errors} raised, {rep.remaining} left; "
        f"{rep.seconds:.1f}s{how}; tables in {output}/")
    return 0
