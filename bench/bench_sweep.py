"""Sweep throughput: points/s on a local pool (1 and 2 processes) and a 2-worker Dask LocalCluster,
against the fast engine run serially in this process on the same points, in one run.

    nice python bench/bench_sweep.py                  # the test fixture spec, 216 points of 5 s
    nice python bench/bench_sweep.py --duration 60s   # heavier points (~20-40 ms each)
    nice python bench/bench_sweep.py --chunk-size 1   # one point per task

Each executor runs the points ``--repeat`` times (default 3) in one pool, and serial runs as many
times before and after the pools; the best time counts, the median is shown (on a shared machine the CPU
we get changes by 2x within a minute). Reported per executor: startup (pool / cluster start + engine warm-up), run wall time (points only),
points/s, speed-up over serial, parallel efficiency = speed-up / workers, per-task overhead =
(wall x workers - serial time) / tasks (everything that is not simulating: dispatch, pickling, waiting
for the CPU on a shared machine), and the CPU seconds the workers spent in the points (the same work as
serially, if the pool adds no work per point). A second table measures dispatch alone: tasks of one
no-op item. Results must equal the serial ones (checked).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from audit_tune.analysis.executors import ChunkExecutor, ExecutorOptions, auto_chunk_size, chunked  # noqa: E402
from audit_tune.analysis.sweep import NONDETERMINISTIC, plan, run_point, warmup  # noqa: E402
from audit_tune.analysis.sweep_spec import load_spec, spec_from_dict  # noqa: E402


def strip(r: dict) -> dict:
    return {k: v for k, v in r.items() if k not in NONDETERMINISTIC}


def serial(tasks: list[dict], repeat: int) -> tuple[list[float], dict, float]:
    walls, cpu, out = [], 0.0, {}
    for _ in range(repeat):
        t0 = time.perf_counter()
        rows = [run_point(t) for t in tasks]
        walls.append(time.perf_counter() - t0)
        out = {r["id"]: strip(r) for r in rows}
        cpu = sum(r.get("cpu_seconds") or 0.0 for r in rows)
    return walls, out, cpu


def parallel(opts: ExecutorOptions, tasks: list[dict], noop_tasks: int, repeat: int, ref: dict) -> dict:
    with ChunkExecutor(opts) as ex:
        size = opts.chunk_size or auto_chunk_size(len(tasks), ex.n_workers)
        chunks = chunked(tasks, size)
        walls = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            res, cpu = {}, 0.0
            for _, rows in ex.imap(run_point, chunks):
                res.update({r["id"]: strip(r) for r in rows})
                cpu += sum(r.get("cpu_seconds") or 0.0 for r in rows)
            walls.append(time.perf_counter() - t0)
            if res != ref:
                raise SystemExit(f"{opts.kind}: RESULTS DIFFER from the serial run")
        t1 = time.perf_counter()
        for _ in ex.imap(abs, [[i] for i in range(noop_tasks)]):
            pass
        noop = time.perf_counter() - t1
        return {"startup": ex.startup_seconds, "walls": walls, "workers": ex.n_workers, "tasks": len(chunks),
                "chunk": size, "cpu": cpu, "noop": noop}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spec", default=str(REPO / "tests" / "fixtures" / "sweeps" / "small.yaml"))
    ap.add_argument("--duration", default=None, help="override the simulated duration of every point")
    ap.add_argument("--chunk-size", type=int, default=None, help="points per task (default: automatic)")
    ap.add_argument("--noop-tasks", type=int, default=300, help="no-op tasks to time dispatch alone")
    ap.add_argument("--repeat", type=int, default=3, help="runs per executor (and serial, before and after); "
                    "the best counts (a shared machine is noisy)")
    ap.add_argument("--skip-dask", action="store_true")
    a = ap.parse_args()

    spec = load_spec(a.spec)
    if a.duration:
        d = spec.to_dict()
        d["base"] = {**d["base"], "duration": a.duration}
        spec = spec_from_dict(d, root=spec.root)
    tasks = [{"id": p.id, "scenario": p.scenario, "engine": spec.engine} for p in plan(spec) if p.scenario]
    n = len(tasks)
    print(f"{n} points from {Path(a.spec).name}{' with duration ' + a.duration if a.duration else ''}; "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start")
    warmup()
    s1, ref, c1 = serial(tasks, a.repeat)
    rows = []
    runs = [("local -j 1", ExecutorOptions("local", jobs=1, chunk_size=a.chunk_size, warmup=warmup)),
            ("local -j 2", ExecutorOptions("local", jobs=2, chunk_size=a.chunk_size, warmup=warmup))]
    if not a.skip_dask:
        runs.append(("dask-local, 2 workers", ExecutorOptions("dask-local", workers=2, chunk_size=a.chunk_size,
                                                              warmup=warmup)))
    for name, opts in runs:
        rows.append((name, parallel(opts, tasks, a.noop_tasks, a.repeat, ref)))
    s2, ref2, c2 = serial(tasks, a.repeat)
    assert ref2 == ref
    t_serial = min(s1 + s2)
    print(f"serial, in this process, best of {2 * a.repeat} (before / after the pools): {t_serial:.2f} s "
          f"(median {statistics.median(s1 + s2):.2f} s) -> {n / t_serial:.0f} points/s, "
          f"{1000 * t_serial / n:.1f} ms a point; CPU {c1:.2f} s / {c2:.2f} s")
    print(f"{'executor':<23}{'startup s':>10}{'best s':>8}{'median s':>9}{'points/s':>10}{'speed-up':>10}{'efficiency':>11}"
          f"{'tasks':>7}{'chunk':>7}{'overhead/task':>15}{'worker CPU s':>14}")
    for name, r in rows:
        wall = min(r["walls"])
        speed = t_serial / wall
        eff = speed / r["workers"]
        over = (wall * r["workers"] - t_serial) / r["tasks"]
        print(f"{name:<23}{r['startup']:>10.2f}{wall:>8.2f}{statistics.median(r['walls']):>9.2f}{n / wall:>10.0f}"
              f"{speed:>10.2f}{eff:>11.0%}{r['tasks']:>7}{r['chunk']:>7}{1000 * over:>12.1f} ms{r['cpu']:>14.2f}")
    print(f"dispatch alone, {a.noop_tasks} one-item no-op tasks: " + "; ".join(
        f"{name} {1000 * r['noop'] / a.noop_tasks:.2f} ms a task" for name, r in rows))
    print(f"load average {os.getloadavg()[0]:.2f} at end; identical results on every executor: yes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
