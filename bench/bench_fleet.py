"""`tune recommend --all-clusters` on a fleet: seconds per apiserver-week, local pool against dask-local.

A real Prometheus holds ``--clusters`` clusters (default 20) x 3 apiservers x 7 days, promtool-backfilled
(``tests/promfixtures.py``: diurnal load of a different mean per cluster, one bursty apiserver in every
third cluster; the audit, webhook client and memory series recommend reads, without the request filter
latency and per-verb request series it does not need), scraped every ``--scrape`` seconds (default 60 s, which keeps the backfill near ten
minutes on this machine; the TSDB is kept under ``~/.cache/audit-tune/bench-fleet/`` and reused by
later runs with the same shape). Measured in one run, one after the other:

* fetch       ``tune snapshot -p URL --history 7d`` (every cluster's series, once; the file is over the
  64 MiB ``--snapshot`` accepts, so the recommendations read Prometheus themselves);
* local       ``tune recommend -p URL --history 7d --all-clusters --executor local`` (process pool, --jobs):
  the fetch, then one cluster a task;
* dask-local  the same with ``--executor dask-local`` (a LocalCluster of as many workers, started and
  stopped inside the command, so its start-up is in the figure).

Printed: seconds, seconds per apiserver-week of each, the dask-local / local ratio, and whether both
executors gave the same per-cluster summary (they must).

    nice python bench/bench_fleet.py                 # 20 clusters x 3 x 7 d at 60 s
    nice python bench/bench_fleet.py --clusters 2    # a quick look
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from promfixtures import END0, Inst, Scenario, _bursty, _diurnal, backfill, write_scenario  # noqa: E402

from audit_tune.analysis.taskpool import available_cores  # noqa: E402
from audit_tune.cli.app import main  # noqa: E402
from audit_tune.loadgen.prometheus import Prometheus, scrape_config  # noqa: E402

WEEK = 7 * 86400
INDEX = 40  # scenario slot: ends at END0 + 40 x 10 days, away from the test fixtures


def fleet(clusters: int, scrape: float) -> list[Scenario]:
    out = []
    for k in range(clusters):
        c = f"c{k + 1:02d}"
        mean = 300.0 + 60.0 * k
        lean = {"cluster": c, "filter_latency": False, "requests_metrics": False}
        insts = [Inst(f"10.{100 + k}.0.1:6443", _diurnal(mean), **lean),
                 Inst(f"10.{100 + k}.0.2:6443", _diurnal(0.8 * mean), **lean),
                 Inst(f"10.{100 + k}.0.3:6443", _bursty(0.3 * mean, 2 * mean) if k % 3 == 0 else _diurnal(0.6 * mean),
                      **lean)]
        out.append(Scenario(f"fleet-{c}", INDEX, WEEK, scrape, insts, seed=k + 1))
    return out


def tsdb(clusters: int, scrape: float) -> Path:
    """The backfilled TSDB for this shape, built once and kept in the cache."""
    root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "audit-tune" / "bench-fleet"
    wd = root / f"{clusters}x3-7d-{scrape:g}s-v2"
    if (wd / "complete").exists():
        print(f"fixture: {clusters} clusters x 3 apiservers x 7 d at {scrape:g} s, reusing {wd}")
        return wd
    shutil.rmtree(wd, ignore_errors=True)
    t0 = time.perf_counter()
    for sc in fleet(clusters, scrape):
        f, _ = write_scenario(sc, wd / "om")
        backfill([f], wd / "prom" / "data")
        f.unlink()
    (wd / "complete").write_text("ok\n")
    print(f"fixture: {clusters} clusters x 3 apiservers x 7 d at {scrape:g} s, generated and backfilled in "
          f"{time.perf_counter() - t0:.0f} s into {wd}")
    return wd


def quiet(args: list[str]) -> tuple[int, float, str, str]:
    out, err = io.StringIO(), io.StringIO()
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(args)
    return code, time.perf_counter() - t0, out.getvalue(), err.getvalue()


def main_bench() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clusters", type=int, default=20)
    ap.add_argument("--scrape", type=float, default=60.0, help="scrape interval and --step, seconds")
    ap.add_argument("--jobs", type=int, default=available_cores(), help="local processes = dask-local workers")
    ap.add_argument("extra", nargs="*", help="more tune recommend options, after --")
    a = ap.parse_args()
    wd = tsdb(a.clusters, a.scrape)
    n_api = 3 * a.clusters
    end = END0 + INDEX * 10 * 86400
    step = f"{a.scrape:g}s"
    rows: list[tuple[str, int, float]] = []
    summaries = {}
    with Prometheus(scrape_config(None), workdir=wd / "prom", retention="36500d") as prom:
        snap = wd / "snap.json"
        win = ["-p", prom.url, "--end", str(end), "--history", "7d", "--step", step]
        quiet(["snapshot", *win, "-o", str(snap), "--no-progress"])  # warm the TSDB page cache once
        c0, t_fetch, _, err = quiet(["snapshot", *win, "-o", str(snap), "--no-progress"])
        if c0 != 0:
            raise SystemExit(f"snapshot failed ({c0}): {err.strip()[-500:]}")
        n_inst = len(json.loads(snap.read_text())["instances"])
        snap.unlink()
        print(f"{n_api} apiservers ({n_inst} in the snapshot); {a.jobs} processes / workers; "
              f"load average {os.getloadavg()[0]:.2f} at start")
        rows.append(("fetch (tune snapshot)", c0, t_fetch))
        for ex in ("local", "dask-local"):
            code, t, out, err = quiet(["recommend", *win, "--all-clusters", "-f", "json", "--executor", ex,
                                       "--jobs", str(a.jobs), "--no-progress", *a.extra])
            if code not in (0, 3):
                raise SystemExit(f"{ex}: exit {code}: {err.strip()[-500:]}")
            summaries[ex] = json.loads(out)["summary"]
            rows.append((f"recommend -p --executor {ex}", code, t))
    print(f"{'step':34} {'exit':>4} {'seconds':>8} {'s per apiserver-week':>21}")
    for name, code, t in rows:
        print(f"{name:34} {code:>4} {t:>8.1f} {t / n_api:>21.2f}")
    t_local, t_dask = rows[1][2], rows[2][2]
    same = summaries["local"] == summaries["dask-local"]
    print(f"dask-local / local = {t_dask / t_local:.2f}; analysis alone (recommend - fetch) per apiserver-week: "
          f"local {(t_local - t_fetch) / n_api:.2f} s, dask-local {(t_dask - t_fetch) / n_api:.2f} s; "
          f"same summary on both executors: {'yes' if same else 'NO'}")
    print(f"load average {os.getloadavg()[0]:.2f} at end")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main_bench())
