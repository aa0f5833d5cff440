"""`tune recommend` time against the raw Prometheus range queries it needs, side by side in one run.

A real Prometheus holds 7 days x 3 apiservers at a 15 s scrape interval (promtool-backfilled, diurnal
load, one bursty apiserver). Measured, each in the same process one after the other:

* fetch    `tune snapshot -p URL --history 7d --step 15s`: exactly the queries recommend makes;
* analyse  `tune recommend --snapshot FILE`: calibration, validation, search, output;
* total    `tune recommend -p URL --history 7d --step 15s`: both.

Goal: total / fetch <= 2, i.e. the analysis costs no more than fetching the data.

    python bench/bench_recommend.py
"""
from __future__ import annotations

import contextlib
import io
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from promfixtures import Inst, Scenario, _bursty, _diurnal, backfill, write_scenario  # noqa: E402

from audit_tune.cli.app import main
from audit_tune.loadgen.prometheus import Prometheus, scrape_config


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
            quiet(["snapshot", *win, "-o", str(snap), "--no-progress"])  # warm the TSDB page cache once
            c1, t_fetch = quiet(["snapshot", *win, "-o", str(snap), "--no-progress"])
            c2, t_analyse = quiet(["recommend", "--snapshot", str(snap), "-f", "json", "--no-progress"])
            c3, t_total = quiet(["recommend", *win, "-f", "json", "--no-progress"])
        print(f"{'step':34} {'exit':>4} {'seconds':>8}")
        print(f"{'fetch (tune snapshot, 7d @ 15s)':34} {c1:>4} {t_fetch:>8.1f}")
        print(f"{'analyse (tune recommend --snapshot)':34} {c2:>4} {t_analyse:>8.1f}")
        print(f"{'total (tune recommend -p)':34} {c3:>4} {t_total:>8.1f}")
        print(f"total / fetch = {t_total / t_fetch:.2f}  (goal <= 2)")
    finally:
        shutil.rmtree(wd, ignore_errors=True)


if __name__ == "__main__":
    bench_failures()
    if "--failures-only" not in sys.argv:
        main_bench()
