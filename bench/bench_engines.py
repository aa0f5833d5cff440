"""Engine speed, side by side in one process and one run (the machine is noisy: compare ratios).

For each scenario: the reference engine (SimPy), the fast engine, and the bare cost of generating
the same number of arrival timestamps with numpy (exponential gaps + cumsum), which no engine can
beat. Prints simulated events per wall second and the ratios. Then the 24 h x 10,000 events/s run
(864M events, default webhook flags) in a subprocess, with its wall time and peak RSS.

Each figure is the median of ``--repeat`` (3) runs, the same count for every engine: one-off costs
(first-touch page faults of a fresh process's arrays) weigh on a 10 ms fast run, not on a 1 s
reference run, and the median compares the engines' steady state.

    python bench/bench_engines.py            # everything (~3 min)
    python bench/bench_engines.py --no-day   # skip the 24 h run
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np

from audit_tune.sim.api import run
from audit_tune.sim.config import parse_flags
from audit_tune.sim.latency import Latency
from audit_tune.sim.receiver import LogWriter, Receiver
from audit_tune.sim.scenario import Scenario
from audit_tune.sim.workload import Arrivals, RateProfile, RequestClass, Workload

ONE = (RequestClass("rc", level="Metadata", omit_stages=frozenset({"RequestReceived"})),)


def scenarios(duration: float) -> dict[str, Scenario]:
    def sc(rate, flags=(), instances=1, receiver=None, backends=("webhook",), lw=None):
        w = Workload(Arrivals("poisson", RateProfile.constant(rate)), duration, ONE, instances=instances)
        return Scenario(flags=parse_flags(list(flags)), workload=w, receiver=receiver or Receiver(),
                        log_writer=lw or LogWriter(), backends=backends).validate()

    return {
        "default flags, 5k ev/s": sc(5000),
        "default flags, 20k ev/s": sc(20000),
        "log batch max-size 1, 2k ev/s": sc(2000, ["--audit-log-mode=batch", "--audit-log-path=/a.log"], backends=("log",),
                                              lw=LogWriter(per_event=Latency("exp", 0.0002))),
        "slow webhook + retries, 5k ev/s": sc(5000, ["--audit-webhook-initial-backoff=1s"],
                                              receiver=Receiver(latency=Latency("lognormal", 0.5, 8.0), error_rate=0.2)),
        "3 instances, 15k ev/s": sc(15000, instances=3),
    }


def timed(fn, repeat: int = 1):
    """The result and the median wall time of ``repeat`` calls."""
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        ts.append(time.perf_counter() - t0)
    return out, float(np.median(ts))


def gen_only(n: int, rate: float) -> None:
    g = np.random.default_rng(1)
    done = 0
    while done < n:
        k = min(1 << 16, n - done)
        np.cumsum(g.exponential(1.0 / rate, k))
        done += k


def day_run() -> dict:
    code = r"""
import json, resource, time
from audit_tune.sim.api import run
from audit_tune.sim.scenario import Scenario
from audit_tune.sim.workload import Arrivals, RateProfile, RequestClass, Workload
w = Workload(Arrivals("poisson", RateProfile.constant(10000)), 86400.0,
             (RequestClass("rc", level="Metadata", omit_stages=frozenset({"RequestReceived"})),))
t = time.perf_counter(); d = run(Scenario(workload=w), engine="fast").to_dict(series=False); el = time.perf_counter() - t
print(json.dumps({"events": d["events_total"], "wall": el, "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "buffered": d["errors"]["buffered"], "p99": d["delivery_latency_seconds"]["p99"]}))
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=float, default=60.0, help="simulated seconds per scenario")
    ap.add_argument("--no-day", action="store_true")
    ap.add_argument("--repeat", type=int, default=3, help="runs per engine and scenario; the median is shown")
    a = ap.parse_args()
    run(scenarios(1.0)["default flags, 5k ev/s"], engine="fast")  # load the compiled collector once
    print(f"{'scenario':34} {'events':>10} {'reference ev/s':>15} {'fast ev/s':>12} {'numpy gen ev/s':>15} "
          f"{'fast/ref':>9} {'fast/gen':>9}")
    for name, sc in scenarios(a.duration).items():
        ref, t_ref = timed(lambda sc=sc: run(sc, engine="reference").to_dict(series=False), a.repeat)
        fast, t_fast = timed(lambda sc=sc: run(sc, engine="fast").to_dict(series=False), a.repeat)
        assert ref["events_total"] == fast["events_total"] and ref["errors"] == fast["errors"], name
        n = fast["events_total"]
        _, t_gen = timed(lambda n=n: gen_only(n, n / a.duration), a.repeat)
        print(f"{name:34} {n:>10,} {n / t_ref:>15,.0f} {n / t_fast:>12,.0f} {n / t_gen:>15,.0f} "
              f"{t_ref / t_fast:>8.0f}x {t_gen / t_fast:>8.0%}")
    if not a.no_day:
        d = day_run()
        print(f"\n24 h at 10,000 events/s, default flags (fast engine, own process): {d['events']:,} events in "
              f"{d['wall']:.1f} s = {d['events'] / d['wall']:,.0f} ev/s; peak RSS {d['rss_mib']:.0f} MiB; "
              f"buffered drops {d['buffered']:,}; delivery p99 {d['p99']:.3f} s")
    print(f"(this process peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB)")


if __name__ == "__main__":
    main()
