"""``tune sweep``: run a grid / random / Latin-hypercube set of scenarios and tabulate the results.

Each point (parameter values + simulator seed) becomes a :class:`sim.scenario.Scenario`, runs on the
chosen engine (``fast`` by default) on a local process pool or on Dask, and becomes one row: every
input, the point id, then the result fields (:data:`RESULT_FIELDS`), and ``error`` when it raised.

Output folder (``-o DIR``):

* ``journal.jsonl``: one JSON line per finished point, appended (one ``write`` + ``fsync`` per
  completed chunk) as results arrive. It is the source of truth: a re-run skips the ids in it, and a
  partial last line (a kill mid-write) is ignored and cut off before appending again.
* ``results.csv``, ``results.jsonl`` (``results.parquet`` with pyarrow): the tidy table of the
  spec's points, sorted by point id, rebuilt from the journal at the end (also after Ctrl-C).
* ``summary.json`` / ``summary.txt``: the drop-free region (see :mod:`analysis.sweep_summary`).

The point id is a hash of the scenario dict, seed and engine, so the same point has the same id on
every executor and the results of a sweep do not depend on where or in which order points ran
(``wall_seconds`` and ``cpu_seconds`` are the only machine-dependent columns).
"""
from __future__ import annotations

import csv
import fcntl
import io
import json
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TypedDict

from audit_tune import __version__
from audit_tune.analysis.executors import ChunkExecutor, ExecutorOptions, auto_chunk_size, chunked
from audit_tune.analysis.sweep_params import ParamValue
from audit_tune.analysis.sweep_point import build_point, input_id, point_id
from audit_tune.analysis.sweep_spec import SweepSpec
from audit_tune.analysis.sweep_summary import SweepSummary, empty_summary, summarize, summary_text
from audit_tune.basics.errors import InputError, ServiceError, TuneError
from audit_tune.basics.jsondata import JsonMapping, JsonObject, JsonValue, as_object
from audit_tune.basics.output import write_atomic
from audit_tune.sim.api import run
from audit_tune.sim.build import ReceiverOptions, WorkloadOptions, build_flags, build_scenario
from audit_tune.sim.scenario import Scenario

JOURNAL = "journal.jsonl"
RESULT_FIELDS = [
    "events_total", "errors.buffered", "errors.webhook", "errors.log", "errors.truncate", "lost", "drop_fraction",
    "delivered", "in_flight_at_end", "requests_rejected", "batches", "max_buffer_occupancy", "max_inflight_batches",
    "peak_memory_bytes", "delivery_latency_p50", "delivery_latency_p99", "first_drop_seconds",
    "throttle_wait_seconds_total", "simulated_seconds", "wall_seconds", "cpu_seconds",
]
NONDETERMINISTIC = ("wall_seconds", "cpu_seconds")  # machine-dependent: excluded when comparing executors


class SweepTask(TypedDict):
    """What a worker runs: a point's id, its scenario (``Scenario.to_dict``) and the engine."""

    id: str
    scenario: JsonObject
    engine: str


def _count(v: JsonValue, where: str) -> int | float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise InputError(f"{where}: expected a number, got {v!r}")
    return v


# ---- one point (runs on the workers) ------------------------------------------------------------------
def result_row(d: JsonMapping) -> JsonObject:
    """The flat result fields of one ``Result.to_dict()``."""
    errors = as_object(d["errors"], "errors")
    lost = sum(_count(v, f"errors.{k}") for k, v in errors.items())
    lat = as_object(d["delivery_latency_seconds"], "delivery_latency_seconds")
    events = _count(d["events_total"], "events_total")
    row: JsonObject = {
        "events_total": d["events_total"],
        **{f"errors.{k}": errors.get(k, 0) for k in ("buffered", "webhook", "log", "truncate")},
        "lost": lost,
        "drop_fraction": lost / events if events else 0.0,
        "delivered": d["delivered"],
        "in_flight_at_end": d["in_flight_at_end"],
        "requests_rejected": d["requests_rejected"],
        "batches": d["batches"],
        "max_buffer_occupancy": d["max_buffer_occupancy"],
        "max_inflight_batches": d["max_inflight_batches"],
        "peak_memory_bytes": d["peak_memory_bytes"],
        "delivery_latency_p50": lat.get("p50"),
        "delivery_latency_p99": lat.get("p99"),
        "first_drop_seconds": d["first_drop_seconds"],
        "throttle_wait_seconds_total": d["throttle_wait_seconds_total"],
        "simulated_seconds": d["simulated_seconds"],
        "wall_seconds": d["wall_seconds"],
    }
    return row


def run_point(task: SweepTask) -> JsonObject:
    """Worker function: ``{"id", "scenario", "engine"}`` -> ``{"id", result fields...}`` or ``{"id", "error"}``.

    Never raises for a bad point: the error text is the result."""
    try:
        cpu0 = time.thread_time()  # this thread only: a Dask worker has other busy threads
        sc = Scenario.from_dict(task["scenario"], source=f"point {task['id']}").validate()
        res = run(sc, engine=task["engine"])
        row = result_row(res.to_dict(series=False))
        row["cpu_seconds"] = time.thread_time() - cpu0
        return {"id": task["id"], **row, "error": None}
    except Exception as e:  # noqa: BLE001 - a point that raises is recorded, the sweep goes on
        return {"id": task["id"], "error": f"{type(e).__name__}: {e}".replace("\n", " ")[:2000]}


def warmup() -> None:
    """Import the engine and load its compiled code once per worker process."""
    sc = build_scenario(build_flags([]), WorkloadOptions(rate="100", duration="1s"), ReceiverOptions())
    run(sc, engine="fast")


# ---- the plan -------------------------------------------------------------------------------------------
@dataclass
class Point:
    id: str
    inputs: dict[str, ParamValue]
    seed: int
    scenario: JsonObject | None
    drain_capacity: float | None = None
    error: str | None = None  # the scenario could not be built


def plan(spec: SweepSpec) -> list[Point]:
    """Every point of the spec, with its id; duplicates (same scenario) are kept once."""
    out: list[Point] = []
    seen: set[str] = set()
    for inputs, seed in spec.points():
        try:
            sc = build_point(inputs, seed, spec.root)
        except (InputError, ValueError, TypeError, KeyError) as e:  # a combination the apiserver would reject
            pid = input_id(inputs, seed, spec.engine)
            p = Point(pid, inputs, seed, None, error=f"{type(e).__name__}: {e}")
        else:
            d = sc.to_dict()
            cap = None
            if "webhook" in sc.enabled or "log" in sc.enabled:
                b = sc.flags.backend("webhook" if "webhook" in sc.enabled else "log")
                if b.mode == "batch" and b.batch.throttle_enable:
                    cap = b.batch.drain_capacity
            p = Point(point_id(d, seed, spec.engine), inputs, seed, d, drain_capacity=cap)
        if p.id in seen:
            continue
        seen.add(p.id)
        out.append(p)
    return out


def input_row(p: Point) -> JsonObject:
    return {"id": p.id, "seed": p.seed, **p.inputs, "drain_capacity": p.drain_capacity}


# ---- the journal ------------------------------------------------------------------------------------------
def load_journal(path: Path) -> dict[str, JsonObject]:
    """Rows by id. Only whole lines count: a partial last line (no newline) or an unreadable line is ignored."""
    rows: dict[str, JsonObject] = {}
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return rows
    end = data.rfind(b"\n")
    for line in data[:end + 1].splitlines():
        if not line.strip():
            continue
        try:
            r = json.loads(line)
        except ValueError:
            continue
        if isinstance(r, dict) and isinstance(r.get("id"), str):
            rows[r["id"]] = r  # the last line of an id wins (a --retry-errors re-run)
    return rows


class Journal:
    """Append-only JSONL with whole-line writes, fsync, and an exclusive lock while open."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None

    def __enter__(self) -> Journal:
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self.fd)
            self.fd = None
            raise InputError(f"{self.path}: another 'tune sweep' is writing this folder") from None
        # cut a partial last line (the process was killed mid-write) so appends start on a new line
        size = os.fstat(self.fd).st_size
        if size:
            with open(self.path, "rb") as f:
                data = f.read()
            keep = data.rfind(b"\n") + 1
            if keep != size:
                os.ftruncate(self.fd, keep)
                os.fsync(self.fd)
        return self

    def append(self, rows: Iterable[JsonObject]) -> None:
        assert self.fd is not None
        buf = b"".join(json.dumps(r, separators=(",", ":"), default=str).encode() + b"\n" for r in rows)
        view = memoryview(buf)
        while view:
            n = os.write(self.fd, view)
            view = view[n:]
        os.fsync(self.fd)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


# ---- tables -----------------------------------------------------------------------------------------------
def table_rows(points: list[Point], done: dict[str, JsonObject]) -> list[JsonObject]:
    """One row per finished point of the plan (inputs + results), sorted by point id."""
    rows = []
    for p in points:
        r = done.get(p.id)
        if r is None:
            continue
        row = input_row(p)
        for k in RESULT_FIELDS:
            row[k] = r.get(k)
        row["error"] = r.get("error")
        rows.append(row)
    rows.sort(key=lambda r: str(r["id"]))
    return rows


def columns(spec: SweepSpec) -> list[str]:
    return ["id", "seed", *spec.input_names, "drain_capacity", *RESULT_FIELDS, "error"]


def to_csv(rows: list[JsonObject], cols: list[str]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: _csv_value(r.get(k)) for k in cols})
    return buf.getvalue()


def _csv_value(v: JsonValue) -> JsonValue:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, list):
        return ",".join(str(x) for x in v)
    if isinstance(v, float):
        return repr(v)
    return v


def to_jsonl(rows: list[JsonObject], cols: list[str]) -> str:
    return "".join(json.dumps({k: r.get(k) for k in cols}, separators=(",", ":"), default=str) + "\n" for r in rows)


def write_tables(out_dir: Path, spec: SweepSpec, points: list[Point], done: dict[str, JsonObject]) -> SweepSummary:
    """Rebuild results.csv / results.jsonl / (results.parquet) / summary.{json,txt} from the journal rows."""
    rows = table_rows(points, done)
    cols = columns(spec)
    write_atomic(out_dir / "results.csv", to_csv(rows, cols))
    write_atomic(out_dir / "results.jsonl", to_jsonl(rows, cols))
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        pass
    else:
        _write_parquet(out_dir / "results.parquet", rows, cols)
    summary = summarize(spec, rows, total_points=len(points))
    write_atomic(out_dir / "summary.json", json.dumps(summary, indent=2, default=str) + "\n")
    write_atomic(out_dir / "summary.txt", summary_text(summary))
    for name in ("results.csv", "results.jsonl", "summary.json", "summary.txt", "results.parquet"):
        try:
            os.chmod(out_dir / name, 0o644)  # write_atomic's temp files are private
        except OSError:
            pass
    return summary


def _write_parquet(path: Path, rows: list[JsonObject], cols: list[str]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    data = {}
    for c in cols:
        vals = [r.get(c) for r in rows]
        if any(isinstance(v, (list, dict)) for v in vals) or len({type(v) for v in vals if v is not None}) > 1:
            vals = [None if v is None else (json.dumps(v) if isinstance(v, (list, dict)) else str(v)) for v in vals]
        data[c] = vals
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(pa.table(data), tmp)
    os.replace(tmp, path)


# ---- the sweep ------------------------------------------------------------------------------------------
@dataclass
class SweepReport:
    out_dir: Path
    total: int
    skipped: int  # already in the journal
    ran: int  # run now (including errors)
    errors: int  # points (in the table) with an error
    remaining: int  # not run (limit reached or interrupted)
    seconds: float
    startup_seconds: float = 0.0
    n_workers: int = 0
    chunk_size: int = 0
    interrupted: bool = False
    summary: SweepSummary = field(default_factory=empty_summary)


def run_sweep(spec: SweepSpec, out_dir: str | Path, executor: ExecutorOptions | None = None,
              limit: int | None = None, retry_errors: bool = False, restart: bool = False,
              progress: Callable[[int, int], None] | None = None,
              runner: Callable[[SweepTask], JsonObject] = run_point) -> SweepReport:
    """Run the spec's unfinished points, appending to ``out_dir/journal.jsonl``; rebuild the tables.

    ``limit``: run at most this many points now (the rest on a later run). ``progress(done, total)``
    is called as chunks complete. ``runner`` is the worker function (must be importable by name on
    the workers). KeyboardInterrupt stops the run, rebuilds the tables from the journal, re-raises."""
    t0 = time.perf_counter()
    executor = executor or ExecutorOptions()
    executor.validate()
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"-o {out}: is a file; the sweep writes a folder of tables there, give a folder name")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"-o {out}: cannot create the folder ({e.strerror})") from None
    jpath = out / JOURNAL
    points = plan(spec)
    with Journal(jpath) as journal:
        if restart:
            os.ftruncate(journal.fd, 0)  # type: ignore[arg-type]
        done = load_journal(jpath)
        if retry_errors:
            done = {k: v for k, v in done.items() if not v.get("error")}
        todo = [p for p in points if p.id not in done]
        skipped = len(points) - len(todo)
        if limit is not None:
            todo = todo[:limit]
        # points whose scenario could not be built are recorded straight away
        bad = [p for p in todo if p.scenario is None]
        if bad:
            rows: list[JsonObject] = [{"id": p.id, "error": p.error} for p in bad]
            journal.append(rows)
            done.update({str(r["id"]): r for r in rows})
        tasks: list[SweepTask] = [{"id": p.id, "scenario": p.scenario, "engine": spec.engine}
                                  for p in todo if p.scenario is not None]
        n_done = len(bad)
        total = len(todo)
        if progress:
            progress(n_done, total)
        report = SweepReport(out, len(points), skipped, 0, 0, 0, 0.0)
        interrupted = False
        failure: Exception | None = None
        try:
            if tasks:
                if executor.warmup is None and spec.engine == "fast":
                    executor.warmup = warmup
                with ChunkExecutor(executor) as ex:
                    report.startup_seconds, report.n_workers = ex.startup_seconds, ex.n_workers
                    size = executor.chunk_size or auto_chunk_size(len(tasks), ex.n_workers)
                    report.chunk_size = size
                    for _, res in ex.imap(runner, chunked(tasks, size)):
                        journal.append(res)
                        done.update({str(r["id"]): r for r in res})
                        n_done += len(res)
                        if progress:
                            progress(n_done, total)
        except KeyboardInterrupt:
            interrupted = True
        except TuneError:
            raise
        except Exception as e:  # noqa: BLE001 - a worker died (BrokenProcessPool, KilledWorker), a lost cluster
            failure = e
        report.ran = n_done
        report.interrupted = interrupted
        final = load_journal(jpath)
        report.summary = write_tables(out, spec, points, final)
        in_plan = [final[p.id] for p in points if p.id in final]
        report.errors = sum(1 for r in in_plan if r.get("error"))
        report.remaining = len(points) - len(in_plan)
        report.seconds = time.perf_counter() - t0
        _write_meta(out, spec, report)
    if interrupted:
        raise KeyboardInterrupt
    if failure is not None:
        raise ServiceError(f"the sweep stopped: {type(failure).__name__}: {failure}".rstrip(": ") +
                           f"; {len(points) - report.remaining} finished points are saved in {out}/{JOURNAL}; "
                           f"run the same command again to continue") from failure
    return report


def _write_meta(out: Path, spec: SweepSpec, report: SweepReport) -> None:
    meta = {"tool_version": __version__, "spec": spec.to_dict(), "points": report.total,
            "finished": report.total - report.remaining, "errors": report.errors}
    write_atomic(out / "sweep.json", json.dumps(meta, indent=2, default=str) + "\n")
