"""Benchmark: the highest request rate the load generator sustains on this machine.

Target: a trivial aiohttp server on 127.0.0.1 (``python -m loadgen.fakeapi``: every request gets
``200 {}``) in its own process, so the server does not share the generator's event loop/GIL.
For each rate in ``--rates`` the real :class:`loadgen.loadtest.LoadTest` engine runs for
``--duration`` seconds (mix ``list=1``: one GET each) and we record achieved rate, send lag and
the generator's CPU use (``requests_per_client_cpu_s`` is the generator's cost,
independent of how much CPU the machine gave it). The *sustained maximum* is the highest rate where a run kept up
(achieved within 3% of the schedule and send-lag p99 <= ``--max-lag``); with ``--repeat N`` the
record also gives the highest rate that kept up in every repeat (on a shared machine, other
processes' CPU bursts show up as lag spikes).

    python bench/bench_loadgen.py --rates 1000,2000,4000,6000,8000 --duration 5 [--sink] -o bench.json

``--sink`` also measures how many events/s the audit sink stores (fsync always and never).

The numbers depend on the machine and on what else runs on it; the record says both.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import time

from audit_tune.loadgen.kubetarget import from_flags
from audit_tune.loadgen.loadtest import LoadTest, LoadTestConfig, loop_factory


def bench_sink(batches: int = 40, batch_size: int = 400, clients: int = 4) -> dict:
    """Events/s the sink stores (``SinkProcess``, 400-event EventLists of ~740-byte Metadata events,
    ``clients`` concurrent posters) with fsync ``always`` and ``never``."""
    import concurrent.futures as cf
    import tempfile

    import requests
    from bench_sink import EVENT as ev  # the same sample audit event (bench/ is on sys.path as the script's folder)

    from audit_tune.loadgen.sink import SinkConfig, SinkProcess

    body = json.dumps({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "items": [ev] * batch_size}).encode()
    out: dict = {"batch_bytes": len(body), "batch_size": batch_size, "clients": clients}
    for fsync in ("always", "never"):
        with tempfile.TemporaryDirectory() as d, SinkProcess(SinkConfig(store=f"{d}/e.jsonl", fsync=fsync)) as p:
            def worker(n: int) -> None:
                s = requests.Session()
                for _ in range(n):
                    assert s.post(p.url, data=body, timeout=60).status_code == 200

            t = time.perf_counter()
            with cf.ThreadPoolExecutor(clients) as ex:
                list(ex.map(worker, [batches // clients] * clients))
            dt = time.perf_counter() - t
            st = p.stats()
            out[f"fsync_{fsync}"] = {"events_per_s": round(st["events_stored"] / dt),
                                     "batches_per_s": round(st["batches"] / dt, 1),
                                     "handling_p50_ms": round(1000 * st["latency_s"]["p50"], 1)}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rates", default="1000,2000,3000,4000,5000,6000,8000")
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--arrivals", default="constant")
    ap.add_argument("--max-lag", type=float, default=0.1)
    ap.add_argument("--max-inflight", type=int, default=1024)
    ap.add_argument("--repeat", type=int, default=1, help="runs per rate (the machine may be shared: noisy)")
    ap.add_argument("--server-workers", type=int, default=1, help="trivial server processes (SO_REUSEPORT)")
    ap.add_argument("--sink", action="store_true", help="also measure the sink's storing capacity")
    ap.add_argument("-o", "--output")
    args = ap.parse_args(argv)

    srv = subprocess.Popen([sys.executable, "-m", "audit_tune.loadgen.fakeapi", "--workers", str(args.server_workers)], stdout=subprocess.PIPE, text=True,
                           start_new_session=True)
    try:
        url = srv.stdout.readline().strip()  # type: ignore[union-attr]
        results = []
        for rate in [float(x) for x in args.rates.split(",") for _ in range(args.repeat)]:
            cfg = LoadTestConfig(rate=str(rate), duration=args.duration, arrivals=args.arrivals, mix="list=1",
                                 resources="configmaps", preseed=0, cleanup=False, scrape_metrics=False,
                                 max_lag=args.max_lag, max_inflight=args.max_inflight, list_limit=0)
            lt = LoadTest(cfg, from_flags(url))
            with asyncio.Runner(loop_factory=loop_factory()) as runner:
                rec, _ = runner.run(lt.run())
            row = {"rate": rate, "achieved_rate": round(rec["load"]["achieved_rate"], 1),
                   "achieved_ratio": round(rec["load"]["achieved_ratio"], 4),
                   "lag_p50_ms": round(1000 * (rec["lag_s"]["p50"] or 0), 2),
                   "lag_p99_ms": round(1000 * (rec["lag_s"]["p99"] or 0), 2),
                   "latency_p99_ms": round(1000 * (rec["latency_s"]["p99"] or 0), 2),
                   "errors": {k: v for k, v in rec["status_codes"].items() if k != "200"},
                   "client_cpu_util": round(rec["client_cpu_util"] or 0, 3),
                   "requests_per_client_cpu_s": round(rec["load"]["sent"] / rec["client_cpu_s"]) if rec["client_cpu_s"] else None,
                   "kept_up": rec["load"]["kept_up"], "behind_reason": rec["load"]["behind_reason"]}
            print(json.dumps(row), file=sys.stderr, flush=True)
            results.append(row)
            time.sleep(0.5)
        ok = [r["rate"] for r in results if r["kept_up"]]
        always = [r for r in sorted({x["rate"] for x in results})
                  if all(x["kept_up"] for x in results if x["rate"] == r)]
        out = {
            "bench": "loadgen-max-rate", "when_unix": time.time(), "python": platform.python_version(),
            "event_loop": "uvloop" if loop_factory() else "asyncio",
            "machine": {"cpus": os.cpu_count(), "loadavg_1m": os.getloadavg()[0], "platform": platform.platform()},
            "server_workers": args.server_workers, "duration_s": args.duration, "arrivals": args.arrivals, "max_lag_s": args.max_lag,
            "max_sustained_rate": max(ok) if ok else None,
            "max_rate_kept_up_in_every_repeat": max(always) if always else None, "runs": results,
        }
        if args.sink:
            out["sink"] = bench_sink()
        text = json.dumps(out, indent=2) + "\n"
        if args.output:
            with open(args.output, "w") as f:
                f.write(text)
        sys.stdout.write(text)
        return 0
    finally:
        import signal

        os.killpg(srv.pid, signal.SIGTERM) if args.server_workers > 1 else srv.terminate()
        srv.wait(10)


if __name__ == "__main__":
    sys.exit(main())
