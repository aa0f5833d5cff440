"""``tune fidelity``: the simulator against the REAL k8s.io/apiserver audit backends, side by side.

Each fidelity scenario is a few seconds of real time with flags scaled down so that one regime
shows (under capacity, throttle-bound overload, bursts, max-size 1, no throttle, slow sync log
delegate, slow / failing / down webhook, short max-wait, three instances). The same trace (the
events of :func:`sim.workload.iter_events`) goes through a simulator engine and through the oracle
(:mod:`sim.oracle_engine`), and the metrics are compared with these tolerances:

* ``errors.buffered``, ``errors.webhook`` (drops): ``|sim - oracle| <= 2 % of events_total + one batch``
  (``--audit-*-batch-max-size``);
* ``batches``: ``|sim - oracle| <= 2 % of the larger + 1``;
* delivery latency ``p50`` and ``p99``: ``|sim - oracle| <= max(10 % of the oracle's, 20 ms)``;
* ``max_inflight_batches``: ``|sim - oracle| <= 1`` (2 for ``webhook_restart_refuse``, where the real
  code itself gives 47-49 on the same trace: measured, see the case);
* ``events_total``: equal (same trace).

Why these tolerances (the oracle runs in real time on a shared machine, docs/oracle-findings.md):
every timer and goroutine hop is late by about a millisecond, arrivals lag their offsets by
that much, and each max-wait window ends ~0.7 ms late, so window phases drift; a batch boundary
moved by one event shifts a drop count by up to one batch and the batch count by one; backoff
jitter is drawn independently on each side (the simulator's hash vs Go's math/rand), so retried
batches' latencies agree only in distribution (hence 10 %); a TLS handshake on the first POST and
connection set-up can add a batch in flight for an instant (hence 1). The tolerances are fixed:
a scenario outside them is a disagreement to diagnose, not a reason to widen them.

    tune fidelity                       # all scenarios, fast engine, table
    tune fidelity -s overload_throttle -s webhook_down --engine reference
    tune fidelity --write-doc docs/fidelity.md
"""
from __future__ import annotations

import datetime as _dt
import json
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

import typer

from audit_tune.sim.config import parse_flags
from audit_tune.sim.latency import Latency
from audit_tune.sim.receiver import LogWriter, Outage, Receiver
from audit_tune.sim.scenario import Scenario
from audit_tune.sim.workload import Arrivals, RateProfile, RequestClass, Workload

PANEL = "Simulate"
ONE_EVENT = RequestClass("one", level="Metadata", omit_stages=frozenset({"RequestReceived"}),
                         sizes=(1000, 1000, 1000, 1000))
FAST_BACKOFF = "--audit-webhook-initial-backoff=100ms"


@dataclass(frozen=True)
class FidelityCase:
    name: str
    regime: str
    scenario: Scenario
    # |sim - oracle| allowed for max in-flight batches: 1, unless the real code itself spreads wider
    # on identical input (measured, and said where the case is defined)
    inflight_tol: int = 1

    @property
    def max_batch(self) -> int:
        b = "webhook" if "webhook" in self.scenario.enabled else "log"
        return self.scenario.flags.backend(b).batch.max_batch_size


def _sc(flags: list[str], *, rate: float | None = None, duration: float = 3.0, profile: RateProfile | None = None,
        process: str = "poisson", instances: int = 1, latency: float = 0.02, outages: tuple[Outage, ...] = (),
        backends: tuple[str, ...] = ("webhook",), log_writer: LogWriter | None = None, seed: int = 7) -> Scenario:
    prof = profile if profile is not None else RateProfile.constant(rate or 0.0)
    w = Workload(Arrivals(process, prof), duration, (ONE_EVENT,), instances=instances)
    return Scenario(flags=parse_flags([FAST_BACKOFF, *flags]), workload=w,
                    receiver=Receiver(latency=Latency("fixed", latency), outages=outages),
                    log_writer=log_writer or LogWriter(), backends=backends, seed=seed).validate()


def cases() -> list[FidelityCase]:
    """The fidelity scenarios: each a few seconds of real time, flags scaled down per regime."""
    wb = "--audit-webhook-batch-"
    return [
        FidelityCase("under_capacity", "200 ev/s, size-triggered batches of 50, throttle 10/s never binds",
                     _sc([f"{wb}max-size=50", f"{wb}max-wait=200ms"], rate=200, duration=4)),
        FidelityCase("overload_throttle", "1500 ev/s vs drain 5 x 50 = 250 ev/s: throttle-bound, buffer 500 overflows",
                     _sc([f"{wb}max-size=50", f"{wb}max-wait=100ms", f"{wb}buffer-size=500",
                          f"{wb}throttle-qps=5", f"{wb}throttle-burst=2"], rate=1500, duration=3)),
        FidelityCase("burst_absorbed", "100 ev/s with a 0.5 s burst of 1500 ev/s; buffer 2000 absorbs it",
                     _sc([f"{wb}max-size=100", f"{wb}max-wait=100ms", f"{wb}buffer-size=2000",
                          f"{wb}throttle-qps=4", f"{wb}throttle-burst=2"],
                         profile=RateProfile((0.0, 1.0, 1.5), (100.0, 1500.0, 100.0)), duration=4)),
        FidelityCase("burst_overflows", "the same burst into a buffer of 300: drops during the burst only",
                     _sc([f"{wb}max-size=100", f"{wb}max-wait=100ms", f"{wb}buffer-size=300",
                          f"{wb}throttle-qps=4", f"{wb}throttle-burst=2"],
                         profile=RateProfile((0.0, 1.0, 1.5), (100.0, 1500.0, 100.0)), duration=4)),
        FidelityCase("max_size_1", "max-size 1 (no timer): one event per batch, throttle 50/s, 80 ev/s, buffer 40",
                     _sc([f"{wb}max-size=1", f"{wb}buffer-size=40", f"{wb}throttle-qps=50", f"{wb}throttle-burst=5"],
                         rate=80, duration=3)),
        FidelityCase("throttle_disabled", "2000 ev/s, no throttle: size-triggered batches of 100 every 50 ms",
                     _sc([f"{wb}max-size=100", f"{wb}max-wait=50ms", f"{wb}throttle-enable=false"],
                         rate=2000, duration=3, latency=0.05)),
        FidelityCase("log_sync_slow", "log backend in batch mode (sync delegate): 20 events per 50 ms write "
                     "= 400 ev/s vs 700 ev/s arriving, buffer 300",
                     _sc(["--audit-log-mode=batch", "--audit-log-batch-max-size=20", "--audit-log-batch-max-wait=50ms",
                          "--audit-log-batch-buffer-size=300"], rate=700, duration=3, backends=("log",),
                         log_writer=LogWriter(per_event=Latency("fixed", 0.0025)))),
        FidelityCase("log_throttled_max1", "log backend in batch mode with its default max-size 1, throttle 100/s burst 1, "
                     "1 ms writes; 150 ev/s into a buffer of 50: throttle-bound sync collector",
                     _sc(["--audit-log-mode=batch", "--audit-log-batch-throttle-enable=true",
                          "--audit-log-batch-throttle-qps=100", "--audit-log-batch-throttle-burst=1",
                          "--audit-log-batch-buffer-size=50"], rate=150, duration=3, backends=("log",),
                         log_writer=LogWriter(per_event=Latency("fixed", 0.001)))),
        FidelityCase("webhook_slow", "400 ms receiver, batches every 100 ms: ~4 in flight, no drops",
                     _sc([f"{wb}max-size=50", f"{wb}max-wait=200ms"], rate=500, duration=3, latency=0.4)),
        FidelityCase("webhook_fail_recover", "receiver answers 503 from 1.0 to 1.4 s; 1000 ev/s in batches of 10 every "
                     "10 ms; retries (backoff 100 ms) deliver all, the first ~10 batches at their 4th attempt",
                     _sc([f"{wb}max-size=10", f"{wb}max-wait=50ms", f"{wb}throttle-qps=200", f"{wb}throttle-burst=10"],
                         rate=1000, duration=3, outages=(Outage(1.0, 1.4, "status", 503),))),
        FidelityCase("webhook_restart_refuse", "the same, but the receiver restarts: connections refused 1.0-1.4 s",
                     _sc([f"{wb}max-size=10", f"{wb}max-wait=50ms", f"{wb}throttle-qps=200", f"{wb}throttle-burst=10"],
                         rate=1000, duration=3, outages=(Outage(1.0, 1.4, "refuse"),)),
                     # the real client's connection teardown at the restart decides, to the
                     # millisecond, which attempts die or are retried after a delivered 2xx: six
                     # undisturbed oracle runs of this same trace gave max in-flight 47, 47, 48, 48,
                     # 48, 49 (webhook_fail_recover, 503s instead: 46 every time), so 2, not 1
                     inflight_tol=2),
        FidelityCase("webhook_retry_after", "receiver answers 503 with Retry-After: 1 from 1.0 to 2.5 s; the REST "
                     "client retries inside the attempt after 1 s, so nothing reaches the webhook backoff (100 ms, "
                     "which alone would drop the first batches) and every batch is delivered by 3.1 s",
                     _sc([f"{wb}max-size=10", f"{wb}max-wait=50ms", f"{wb}throttle-qps=200", f"{wb}throttle-burst=10"],
                         rate=1000, duration=4, outages=(Outage(1.0, 2.5, "status", 503, retry_after=1),))),
        FidelityCase("webhook_down", "receiver answers 503 throughout: every batch dropped after 5 attempts",
                     _sc([f"{wb}max-size=50", f"{wb}max-wait=200ms"], rate=200, duration=3,
                         outages=(Outage(0.0, 60.0, "status", 503),))),
        FidelityCase("max_wait_short", "max-wait 20 ms < 50 ms between arrivals: every event alone, waits U(0, 20 ms)",
                     _sc([f"{wb}max-size=100", f"{wb}max-wait=20ms", f"{wb}throttle-qps=100", f"{wb}throttle-burst=5"],
                         rate=20, duration=4, process="deterministic")),
        FidelityCase("three_instances", "3 apiservers, 900 ev/s in all; each drains 4 x 50 = 200 ev/s < 300, buffer 100: drops",
                     _sc([f"{wb}max-size=50", f"{wb}max-wait=100ms", f"{wb}buffer-size=100",
                          f"{wb}throttle-qps=4", f"{wb}throttle-burst=2"], rate=900, duration=3, instances=3)),
    ]


# Known simulator gaps: the scenario still runs and is compared; a row outside tolerance is shown
# as "NO (known gap)" and does not fail the command (the test marks it xfail, not strict).
# Scenarios where the simulator is known to differ from the real code (none now: the receiver-restart
# gap, attempts in flight when connections are refused, is modelled in sim/receiver.py since it was found).
KNOWN_GAPS: dict[str, str] = {}

# A replay the machine stalled is not a measurement. Two signals, neither of them the code under
# test: the arrival lag (docs/oracle-findings.md: undisturbed runs lag p99 0.5-2 ms, max 2-6 ms)
# and the oracle's stall probe (a goroutine sleeping 2 ms at a time; its worst late wake-up).
# A run that fails a comparison while disturbed is repeated, at most RUNS runs in all.
LAG_P99_MAX = 0.005
LAG_MAX_MAX = 0.025
STALL_MAX = 0.020
RUNS = 3


def replay_lag(orc: dict[str, Any]) -> dict[str, float]:
    """The worst arrival lag (p99, max) and stall over the oracle runs behind one oracle result."""
    runs = [v for k, v in orc["oracle"].items() if k != "not_measured"]
    return {"p99": max(v["arrival_lag_seconds"]["p99"] for v in runs),
            "max": max(v["arrival_lag_seconds"]["max"] for v in runs),
            "stall": max((v.get("stall_seconds") or {}).get("max", 0.0) for v in runs)}


def disturbed(orc: dict[str, Any]) -> bool:
    lag = replay_lag(orc)
    return lag["p99"] > LAG_P99_MAX or lag["max"] > LAG_MAX_MAX or lag["stall"] > STALL_MAX


# ---- comparison ---------------------------------------------------------------------------------

@dataclass
class Row:
    case: str
    metric: str
    sim: float | None
    oracle: float | None
    tolerance: float
    ok: bool

    @property
    def diff(self) -> float | None:
        if self.sim is None or self.oracle is None:
            return None
        return self.sim - self.oracle


def compare(case: FidelityCase, sim: dict[str, Any], orc: dict[str, Any]) -> list[Row]:
    """The fidelity metrics of one case, each with its tolerance and verdict."""
    rows: list[Row] = []
    ev = orc["events_total"]

    def add(metric: str, a: float | None, b: float | None, tol: float) -> None:
        if a is None or b is None:
            ok = a is None and b is None
        else:
            ok = abs(a - b) <= tol + 1e-12
        rows.append(Row(case.name, metric, a, b, tol, ok))

    add("events_total", sim["events_total"], orc["events_total"], 0)
    drop_tol = 0.02 * ev + case.max_batch
    add("errors.buffered", sim["errors"]["buffered"], orc["errors"]["buffered"], drop_tol)
    add("errors.webhook", sim["errors"]["webhook"], orc["errors"]["webhook"], drop_tol)
    add("batches", sim["batches"], orc["batches"], 0.02 * max(sim["batches"], orc["batches"]) + 1)
    for q in ("p50", "p99"):
        a, b = sim["delivery_latency_seconds"][q], orc["delivery_latency_seconds"][q]
        add(f"latency.{q}", a, b, max(0.10 * (b or 0.0), 0.020))
    add("max_inflight_batches", sim["max_inflight_batches"], orc["max_inflight_batches"], case.inflight_tol)
    if len(orc["instances"]) > 1:
        for si, oi in zip(sim["instances"], orc["instances"]):
            add(f"{oi['name']}.errors.buffered", si["errors"]["buffered"], oi["errors"]["buffered"],
                0.02 * oi["events_total"] + case.max_batch)
    return rows


def run_case(case: FidelityCase, engines: tuple[str, ...] = ("fast",), log: Callable[[str], None] | None = None
             ) -> dict[str, Any]:
    """Run the case on the simulator engine(s) and on the oracle; rows per engine. The oracle run
    is repeated (at most ``RUNS`` in all) while it fails a comparison on a disturbed replay."""
    from audit_tune.sim.api import run

    out: dict[str, Any] = {"case": case.name, "disturbed_runs": []}
    sims = {eng: run(case.scenario, engine=eng).to_dict(series=False) for eng in engines}
    for attempt in range(RUNS):
        t = time.perf_counter()
        orc = run(case.scenario, engine="oracle").to_dict(series=False)
        out["oracle_wall"] = time.perf_counter() - t
        out["oracle"] = orc
        ok = True
        for eng in engines:
            out[eng] = sims[eng]
            out[f"rows_{eng}"] = compare(case, sims[eng], orc)
            ok &= all(r.ok for r in out[f"rows_{eng}"])
        if ok or not disturbed(orc) or attempt == RUNS - 1:
            break
        lag = replay_lag(orc)
        note = f"lag p99 {lag['p99'] * 1e3:.1f} ms, max {lag['max'] * 1e3:.1f} ms, stall {lag['stall'] * 1e3:.1f} ms"
        out["disturbed_runs"].append(note)
        if log:
            log(f"fidelity: {case.name}: disturbed replay ({note}), running the oracle again")
    return out


def _fmt(x: float | None, metric: str) -> str:
    if x is None:
        return "-"
    if metric.startswith("latency"):
        return f"{x * 1000:.1f} ms"
    return f"{x:g}" if isinstance(x, float) and not float(x).is_integer() else f"{int(x)}"


def _fmt_tol(r: Row) -> str:
    if r.metric.startswith("latency"):
        return f"±{r.tolerance * 1000:.0f} ms"
    return f"±{r.tolerance:g}" if r.tolerance != int(r.tolerance) else f"±{int(r.tolerance)}"


def table_rows(rows: list[Row]) -> list[list[str]]:
    out = []
    for r in rows:
        d = r.diff
        ds = "-" if d is None else (f"{d * 1000:+.1f} ms" if r.metric.startswith("latency") else f"{d:+g}")
        verdict = "yes" if r.ok else ("NO (known gap)" if r.case in KNOWN_GAPS else "NO")
        out.append([r.case, r.metric, _fmt(r.sim, r.metric), _fmt(r.oracle, r.metric), ds, _fmt_tol(r), verdict])
    return out


HEADER = ["scenario", "metric", "simulator", "oracle", "difference", "tolerance", "within tolerance?"]


def markdown(rows: list[Row], header_note: str = "") -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for r in table_rows(rows):
        lines.append("| " + " | ".join(r) + " |")
    return (header_note + "\n" if header_note else "") + "\n".join(lines) + "\n"


def register(app: typer.Typer) -> None:
    app.command("fidelity", rich_help_panel=PANEL,
                help="Compare the simulator with the REAL k8s.io/apiserver audit backends (the Go oracle), side by side.\n\n"
                     "Example: [bold]tune fidelity --engine fast --write-doc docs/fidelity.md[/bold]")(fidelity)


def fidelity(
    scenario: list[str] = typer.Option([], "-s", "--scenario", help="Scenario name (repeatable); default: all."),
    engine: str = typer.Option("fast", "--engine", help="Simulator engine to compare: fast or reference."),
    fmt: str = typer.Option("table", "-f", "--format", help="table, markdown or json."),
    write_doc: Optional[str] = typer.Option(None, "--write-doc", help="Also write the markdown report to FILE (e.g. docs/fidelity.md)."),
    list_: bool = typer.Option(False, "--list", help="List the scenarios and exit."),
) -> int:
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
    rows: list[Row] = []
    results = []
    t0 = time.perf_counter()
    for c in chosen:
        typer.echo(f"fidelity: {c.name} ...", err=True)
        r = run_case(c, (engine,), log=lambda m: typer.echo(m, err=True))
        results.append(r)
        rows += r[f"rows_{engine}"]
    wall = time.perf_counter() - t0
    bad = [r for r in rows if not r.ok and r.case not in KNOWN_GAPS]
    if fmt == "json":
        typer.echo(json.dumps({"engine": engine, "wall_seconds": wall, "rows": [
            {"scenario": r.case, "metric": r.metric, "simulator": r.sim, "oracle": r.oracle, "difference": r.diff,
             "tolerance": r.tolerance, "ok": r.ok} for r in rows],
            "arrival_lag_p99": {x["case"]: _lag(x) for x in results}}, indent=2))
    elif fmt == "markdown":
        typer.echo(markdown(rows))
    else:
        from io import StringIO

        from rich.console import Console
        from rich.table import Table

        buf = StringIO()
        con = Console(file=buf, width=140, force_terminal=False, color_system=None, soft_wrap=True)
        t = Table(show_header=True, header_style="bold")
        for h in HEADER:
            t.add_column(h, justify="left" if h in ("scenario", "metric") else "right")
        for tr in table_rows(rows):
            t.add_row(*tr)
        con.print(t)
        con.print(f"engine={engine}  scenarios={len(chosen)}  rows={len(rows)}  outside tolerance={len(bad)}  wall={wall:.1f}s")
        typer.echo(buf.getvalue(), nl=False)
    if write_doc:
        from pathlib import Path

        cmd = "tune fidelity --engine " + engine + "".join(f" -s {s}" for s in scenario) + f" --write-doc {write_doc}"
        Path(write_doc).write_text(doc_text(rows, results, engine, cmd, wall))
        typer.echo(f"fidelity: wrote {write_doc}", err=True)
    if bad:
        raise ObjectiveViolated(f"{len(bad)} of {len(rows)} fidelity comparisons outside tolerance: "
                                + ", ".join(f"{r.case}/{r.metric}" for r in bad))
    return 0


def _lag(res: dict[str, Any]) -> str:
    lag = replay_lag(res["oracle"])
    s = f"{lag['p99'] * 1000:.1f} / {lag['max'] * 1000:.1f} / {lag['stall'] * 1000:.1f} ms"
    if res.get("disturbed_runs"):
        s += f" (after {len(res['disturbed_runs'])} disturbed: {'; '.join(res['disturbed_runs'])})"
    return s


def doc_text(rows: list[Row], results: list[dict[str, Any]], engine: str, cmd: str, wall: float) -> str:
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    by_case = {c.name: c for c in cases()}
    bad = [r for r in rows if not r.ok]
    parts = [
        "# Fidelity: the simulator against the real k8s.io/apiserver audit backends\n",
        f"Generated {now} by `{cmd}` (wall time {wall:.0f} s; 2 shared cores, `nice`).\n",
        "Each scenario's trace (the events of `sim.workload.iter_events`) runs through the simulator "
        f"(`{engine}` engine) and through the Go oracle (`sim/oracle_engine.py`: the REAL `k8s.io/apiserver` "
        "v0.37.2 `buffered` + `webhook` backends, client-go retries and timeouts, against an in-process HTTPS "
        "receiver; the log backend's delegate is modelled). Tolerances and their reasoning: "
        "`tune/commands/fidelity.py` (module docstring) and `tests/test_fidelity.py`.\n",
        "- drops (`errors.buffered`, `errors.webhook`): 2 % of events_total + one batch (max-size)",
        "- `batches`: 2 % + 1",
        "- delivery latency p50 / p99: 10 % of the oracle's or 20 ms, whichever is larger",
        "- `max_inflight_batches`: 1 (2 for `webhook_restart_refuse`: six oracle runs of its trace gave 47-49)\n",
        "## Scenarios\n",
        "| scenario | regime | oracle arrival lag p99 / max / stall probe max | oracle wall |",
        "|---|---|---|---|",
    ]
    for r in results:
        parts.append(f"| {r['case']} | {by_case[r['case']].regime} | {_lag(r)} | {r['oracle_wall']:.1f} s |")
    parts += ["", "## Side by side\n", markdown(rows),
              f"Outside tolerance: {len(bad)} of {len(rows)}" + (":" if bad else ".")]
    for r in bad:
        parts.append(f"- {r.case} / {r.metric}: simulator {_fmt(r.sim, r.metric)}, oracle {_fmt(r.oracle, r.metric)}"
                     + (" (known gap)" if r.case in KNOWN_GAPS else ""))
    if KNOWN_GAPS:
        parts += ["", "## Known simulator gaps\n"] + [f"- `{k}`: {v}." for k, v in KNOWN_GAPS.items()]
    parts += ["", READING]
    return "\n".join(parts) + "\n"


READING = """## Reading the table

- The `reference` engine gives the same numbers as `fast` on every scenario (`tests/test_fidelity.py`
  asserts it and compares both with the oracle).
- The oracle's latencies are 1-6 ms above the simulator's throughout: each max-wait window closes
  ~0.7 ms late in Go (docs/oracle-findings.md (e)) and a real POST (encode, HTTP/2 over TLS on loopback,
  decode at the receiver) adds about a millisecond to the receiver's modelled latency.
- Window lateness accumulates (a phase drift), so batch boundaries move by a few events over a run; at
  the stop this can merge the last window with the shutdown flush: `webhook_down` has 16 batches in the
  simulator (the 16th: 3 events flushed at stopCh) and 15 in the oracle (its 15th window closed 6 ms later
  and took them), hence also one retry chain more in flight at the end (7 vs 6).
- `log_sync_slow`: the oracle's modelled log write is a Go `time.Sleep`, which overshoots 50 ms by
  0.5-5 ms on this loaded machine, so the sync collector drains 1-2 % less (one or two batches fewer,
  up to ~45 more drops than the simulator). This is the oracle's model, not the real log backend.
- `webhook_restart_refuse`: a connection closed right after the receiver answered 2xx makes the client
  retry a delivered batch (the receiver saw 301 answered POSTs for 300 batches); the simulator models
  attempts in flight at the restart failing (docs/oracle-findings.md (l)) and makes 390 attempts, the
  oracle 388-392. The real code's max in-flight batches alone varies 47-49 between runs of this trace
  (6 undisturbed runs), hence its tolerance of 2.
- Not measured by the oracle (0 in `tune simulate --engine oracle`): buffer occupancy, peak memory,
  throttle wait; `first_drop_seconds` only for webhook drops.
- A replay is *disturbed* when the arrival lag p99 > 5 ms, its max > 25 ms or the stall probe > 20 ms;
  a disturbed run that fails a comparison is repeated (at most 3 runs). The lag column shows the kept run."""
