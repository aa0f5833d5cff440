"""Start-up time of the ``tune`` command, side by side with the interpreter's own.

Runs ``python -c pass``, ``tune --help`` and ``tune simulate --help`` (each as a fresh process, from
/tmp, output discarded) in turns, ``--repeat`` times, and prints each one's median wall time, median
CPU time (user + system of the process, which a busy machine inflates less than wall time) and their
ratios to ``python -c pass`` measured in the same run (the machine is noisy: compare ratios). The CLI
loads a command's module only when the command runs, so help output needs neither the simulator nor
numpy. Goal: both help commands under 0.3 s.

    python bench/bench_startup.py [--repeat 15]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path


def _run(cmd: list[str]) -> tuple[float, float]:
    """Wall and CPU (user + system) seconds of one run of ``cmd``."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd="/tmp")
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)}: exit {p.returncode}")
    return wall, ru.ru_utime + ru.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=15)
    args = ap.parse_args()
    tune = Path(sys.executable).parent / "tune"
    cases = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "tune --help": [str(tune), "--help"],
        "tune simulate --help": [str(tune), "simulate", "--help"],
    }
    wall: dict[str, list[float]] = {k: [] for k in cases}
    cpu: dict[str, list[float]] = {k: [] for k in cases}
    for cmd in cases.values():  # one untimed run each: page cache and .pyc files warm
        _run(cmd)
    for _ in range(args.repeat):
        for name, cmd in cases.items():
            w, c = _run(cmd)
            wall[name].append(w)
            cpu[name].append(c)
    bw, bc = statistics.median(wall["python -c pass"]), statistics.median(cpu["python -c pass"])
    print(f"{args.repeat} runs each, interleaved; medians")
    print(f"{'command':24} {'wall s':>8} {'x python':>9} {'cpu s':>8} {'x python':>9}")
    for name in cases:
        w, c = statistics.median(wall[name]), statistics.median(cpu[name])
        print(f"{name:24} {w:8.3f} {w / bw:9.1f} {c:8.3f} {c / bc:9.1f}")


if __name__ == "__main__":
    main()
