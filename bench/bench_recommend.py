"""`tune recommend` time against the raw Prometheus range queries it needs, side by side in one run.

A real Prometheus holds 7 days x 3 apiservers at a 15 s scrape interval (promtool-backfilled, diurnal
load, one bursty apiserver). Measured, each in the same process, alternating, best of three:

* fetch    `tune snapshot -p URL --history 7d --step 15s`: exactly the queries recommend makes;
* analyse  `tune recommend --snapshot FILE`: calibration, validation, search, output;
* total    `tune recommend -p URL --history 7d --step 15s`: both.

Also measured on the same snapshot: the analysis without the failure scenarios (``--tolerate-outage
none``: their added cost) and with ``--jobs 1`` (what the pool gives), and a profile: CPU seconds of
each phase of one in-process (``jobs=1``) recommendation, from its progress lines.

Goal: total / fetch <= 2, i.e. the analysis costs no more than fetching the data.

    python bench/bench_recommend.py
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from promfixtures import Inst, Scenario, _bursty, _diurnal, backfill, write_scenario  # noqa: E402

from audit_tune.analysis.objective import Objective  # noqa: E402
from audit_tune.analysis.recommend import build_report  # noqa: E402
from audit_tune.analysis.taskpool import available_cores  # noqa: E402
from audit_tune.cli.app import main  # noqa: E402
from audit_tune.loadgen.prometheus import Prometheus, scrape_config  # noqa: E402
from audit_tune.sim.config import AuditFlags  # noqa: E402

PHASES = (("calibrating", "calibration and validation replays"), ("searching", "search (screen + full seeds)"),
          ("failure scenarios", "failure scenarios"), ("comparing", "comparison of the shown flag sets"),
          ("one restart", "restart at the peak, log backend, report"))
ROUNDS = 3  # of the alternating measurements; each step's best is printed


def profile(snap_path: Path) -> None:
    """CPU seconds per phase of one in-process recommendation (jobs=1), cut at its progress lines."""
    snap = json.loads(snap_path.read_text())
    marks: list[tuple[str, float]] = []

    def log(line: str) -> None:
        for key, label in PHASES:
            if line.startswith(key):
                marks.append((label, time.process_time()))

    t0 = time.process_time()
    build_report(snap, AuditFlags(), "defaults", Objective(jobs=1), log=log)
    marks.append(("end", time.process_time()))
    total = marks[-1][1] - t0
    print(f"profile, one process (--jobs 1), CPU seconds: {total:.1f} in all")
    for (label, t), (_, t_next) in zip(marks, marks[1:]):
        print(f"  {label:44} {t_next - t:6.1f}  {100 * (t_next - t) / total:4.0f} %")


def quiet(args: list[str]) -> tuple[int, float]:
    out, err = io.StringIO(), io.StringIO()
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(args)
    return code, time.perf_counter() - t0


def bench_failures(repeats: int = 3) -> None:
    """The added cost of the default failure scenario (one 2 min outage, tolerance bisection) on the
    bundled sample: recommend with and without it, alternating, after one warm-up run each."""
    base = ["recommend", "-f", "json", "--no-progress"]
    quiet(base + ["--tolerate-outage", "none"])
    quiet(base)
    off, on = [], []
    for _ in range(repeats):
        off.append(quiet(base + ["--tolerate-outage", "none"])[1])
        on.append(quiet(base)[1])
    a, b = sorted(off)[len(off) // 2], sorted(on)[len(on) // 2]
    print(f"bundled sample: recommend without failure scenarios {a:.1f} s, with the default outage {b:.1f} s "
          f"(median of {repeats}); added {b - a:.1f} s, ratio {b / a:.2f} (goal <= 2)")


def main_bench() -> None:
    sc = Scenario("week", 20, 7 * 86400, 15, [Inst("10.9.0.1:6443", _diurnal(1500.0)),
                                              Inst("10.9.0.2:6443", _diurnal(1200.0)),
                                              Inst("10.9.0.3:6443", _bursty(300.0, 3000.0))])
    wd = Path(tempfile.mkdtemp(prefix="audit-tune-bench-"))
    try:
        t0 = time.perf_counter()
        f, truth = write_scenario(sc, wd / "om")
        backfill([f], wd / "prom" / "data")
        f.unlink()
        print(f"fixture: 7 d x 3 apiservers at 15 s, generated and backfilled in {time.perf_counter() - t0:.0f} s")
        with Prometheus(scrape_config(None), workdir=wd / "prom", retention="36500d") as prom:
            win = ["-p", prom.url, "--end", str(int(truth.end)), "--history", "7d", "--step", "15s"]
            snap = wd / "snap.json"
            fetch = ["snapshot", *win, "-o", str(snap), "--no-progress"]
            quiet(fetch)  # warm the TSDB page cache once
            analyse = ["recommend", "--snapshot", str(snap), "-f", "json", "--no-progress"]
            runs: dict[str, list[tuple[int, float]]] = {"fetch": [], "pool": [], "total": [], "healthy": [], "one": []}
            # alternating, best of ROUNDS each, the fetch as often as the rest: the speed of a shared
            # machine changes by the minute (the same analysis measured 2.2 and 2.6 s ten minutes apart)
            for _ in range(ROUNDS):
                runs["fetch"].append(quiet(fetch))
                runs["pool"].append(quiet(analyse))
                runs["total"].append(quiet(["recommend", *win, "-f", "json", "--no-progress"]))
                runs["healthy"].append(quiet([*analyse, "--tolerate-outage", "none"]))
                runs["one"].append(quiet([*analyse, "--jobs", "1"]))
            (c1, t_fetch), (c2, t_analyse), (c3, t_total), (c4, t_healthy), (c5, t_one) = (
                min(runs[k], key=lambda r: r[1]) for k in ("fetch", "pool", "total", "healthy", "one"))
        jobs = available_cores()
        print(f"{f'step (best of {ROUNDS}, alternating)':44} {'exit':>4} {'seconds':>8}")
        print(f"{'fetch (tune snapshot, 7d @ 15s)':44} {c1:>4} {t_fetch:>8.1f}")
        print(f"{f'analyse (tune recommend --snapshot), --jobs {jobs}':44} {c2:>4} {t_analyse:>8.1f}")
        print(f"{'total (tune recommend -p)':44} {c3:>4} {t_total:>8.1f}")
        print(f"{'analyse, --tolerate-outage none':44} {c4:>4} {t_healthy:>8.1f}")
        print(f"{'analyse, --jobs 1':44} {c5:>4} {t_one:>8.1f}")
        print(f"total / fetch = {t_total / t_fetch:.2f}  (goal <= 2); failure scenarios add {t_analyse - t_healthy:.1f} s "
              f"(ratio {t_analyse / t_healthy:.2f}); --jobs 1 / --jobs {jobs} = {t_one / t_analyse:.2f}; "
              f"load average {os.getloadavg()[0]:.2f}")
        profile(snap)
    finally:
        shutil.rmtree(wd, ignore_errors=True)


if __name__ == "__main__":
    bench_failures()
    if "--failures-only" not in sys.argv:
        main_bench()
