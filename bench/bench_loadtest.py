"""Benchmark: ``tune loadtest`` against vegeta v12.13.0, side by side, on one loopback server.

Both generators get one core each (pinned to the same CPU, GOMAXPROCS=1 for vegeta,
``--workers 1`` for tune); the target is ``go/loopserver`` (Go ``net/http``, ``200 {}`` to
everything) pinned to the other CPU, plain HTTP and TLS (a throw-away CA from
:mod:`loadgen.sink_tls`). For each protocol and each rate of ``--rates`` the two run in turn
(tune, then vegeta, same duration), ``--repeat`` times:

* **highest rate held**: the highest rate at which a run sent at least 97% of its schedule in the
  window and got at least 97% of the schedule answered 200 (the same test for both tools);
* **CPU per 1,000 requests** at the rates of ``--fixed``: vegeta's is its process's user+sys
  time (``wait4``), tune's the CPU of its measured window (``client_cpu_s``: the Python start-up
  and the setup/cleanup phases are left out; vegeta has neither).

``--clients`` also compares the HTTP clients tune could use (aiohttp's ``ClientSession`` and
:mod:`loadgen.rawhttp`) on CPU per 1,000 GETs at a fixed concurrency.

    python bench/bench_loadtest.py --rates 2000,4000,6000,8000,12000,16000 --fixed 1000,4000 \\
        --duration 5 --repeat 2 --clients -o bench-loadtest.json

vegeta is built with ``go install github.com/tsenart/vegeta/v12@v12.13.0`` into
``~/.cache/audit-tune/bin`` when missing (the Go module proxy; never committed). The machine may
be shared: the record keeps every run, and ratios are given per repeat to show the spread.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(os.environ.get("AUDIT_TUNE_CACHE", Path.home() / ".cache" / "audit-tune")) / "bin"
VEGETA = BIN / "vegeta"
LOOPSERVER = BIN / "audit-tune-loopserver"
REPO = Path(__file__).resolve().parent.parent
HELD = 0.97


def build() -> None:
    env = dict(os.environ, GOBIN=str(BIN), GOFLAGS="-mod=mod")
    if not VEGETA.exists():
        subprocess.run(["go", "install", "github.com/tsenart/vegeta/v12@v12.13.0"], check=True, env=env, cwd="/tmp")
    subprocess.run(["go", "build", "-o", str(LOOPSERVER), "."], check=True, env=env, cwd=REPO / "go" / "loopserver")


def pin(cpu: int):
    def f() -> None:
        os.sched_setaffinity(0, {cpu})
    return f


class Server:
    def __init__(self, cpu: int, tls: object | None) -> None:
        args = [str(LOOPSERVER)] + (["-cert", str(tls.server_cert), "-key", str(tls.server_key)] if tls else [])
        self.p = subprocess.Popen(args, stdout=subprocess.PIPE, text=True, preexec_fn=pin(cpu),
                                  env=dict(os.environ, GOMAXPROCS="1"))
        self.url = self.p.stdout.readline().strip()  # type: ignore[union-attr]

    def close(self) -> None:
        self.p.terminate()
        self.p.wait(10)


def run_tune(url: str, ca: str | None, rate: int, duration: float, cpu: int, extra: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "r.json"
        cmd = [sys.executable, "-m", "audit_tune.cli", "loadtest", "--server", url, "--rate", str(rate),
               "--duration", f"{duration}s", "--workers", "1", "--mix", "list=1", "--list-limit", "0",
               "--preseed", "0", "--no-metrics", "--no-cleanup", "--no-progress", "--trace-inline-max", "0",
               "-o", str(out)] + (["--ca-file", ca] if ca else []) + extra
        p = subprocess.run(cmd, preexec_fn=pin(cpu), capture_output=True, text=True)
        if not out.exists():
            raise SystemExit(f"tune loadtest failed: {p.stderr[-500:]}")
        rec = json.loads(out.read_text())
    load = rec["load"]
    ok = rec["status_codes"].get("200", 0)
    return {"tool": "tune", "rate": rate, "sent_rate": load["achieved_rate"], "ok": ok,
            "requests": load["sent"], "scheduled": load["scheduled"], "shed": load.get("shed"),
            "cpu_s": rec["client_cpu_s"], "lat_p99_us": rec.get("latency_us", {}).get("p99"),
            "held": load["achieved_rate"] >= HELD * rate and ok >= HELD * load["scheduled"]}


def run_vegeta(url: str, ca: str | None, rate: int, duration: float, cpu: int, extra: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as d:
        targets = Path(d) / "t.txt"
        targets.write_text(f"GET {url}/api/v1/namespaces/x/configmaps\n")
        res = Path(d) / "r.bin"
        cmd = [str(VEGETA), "attack", f"-rate={rate}/1s", f"-duration={duration}s", f"-targets={targets}",
               f"-output={res}", "-http2=false"] + ([f"-root-certs={ca}"] if ca else []) + extra
        p = subprocess.Popen(cmd, preexec_fn=pin(cpu), env=dict(os.environ, GOMAXPROCS="1"), stderr=subprocess.PIPE)
        _, status, ru = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        if p.returncode != 0:
            raise SystemExit(f"vegeta failed: {p.stderr.read()[-500:]!r}")  # type: ignore[union-attr]
        rep = json.loads(subprocess.run([str(VEGETA), "report", "-type=json", str(res)], capture_output=True,
                                        text=True, check=True).stdout)
    n = rep["requests"]
    ok = int(rep["status_codes"].get("200", 0))
    scheduled = int(rate * duration)
    return {"tool": "vegeta", "rate": rate, "sent_rate": rep["rate"], "ok": ok, "requests": n, "scheduled": scheduled,
            "cpu_s": ru.ru_utime + ru.ru_stime, "lat_p99_us": rep["latencies"]["99th"] // 1000,
            "held": rep["rate"] >= HELD * rate and n >= HELD * scheduled and ok >= HELD * scheduled}


async def _client_cost(url: str, n: int, conc: int, which: str) -> float:
    """CPU seconds per 1,000 GETs (closed loop, ``conc`` at once) for one HTTP client."""
    from urllib.parse import urlsplit

    from audit_tune.loadgen import rawhttp

    path = "/api/v1/namespaces/x/configmaps"
    cpu0 = time.process_time()
    if which == "aiohttp":
        import aiohttp

        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=conc)) as s:
            async def one(k: int) -> None:
                for _ in range(k):
                    async with s.get(url + path) as r:
                        await r.read()
            await asyncio.gather(*(one(n // conc) for _ in range(conc)))
    else:
        u = urlsplit(url)
        req = rawhttp.encode_request("GET", path, u.netloc, "User-Agent: b\r\n")
        left = [n // conc * conc]
        fin = asyncio.get_running_loop().create_future()

        def free(c: rawhttp.Conn) -> None:
            if left[0] <= 0:
                pool.park(c)
                if not pool.busy and not fin.done():
                    fin.set_result(None)
                return
            left[0] -= 1
            c.send(req, lambda st: None, rawhttp.now() + 30)

        pool = rawhttp.ConnPool(u.hostname or "", u.port or 80, None, conc, free, lambda e: None)
        for _ in range(conc):
            pool.open()
        await fin
        pool.abort_all()
    return 1000 * (time.process_time() - cpu0) / n


def client_compare(url: str, cpu: int, n: int = 40000, conc: int = 64) -> dict:
    from audit_tune.loadgen.loadtest import loop_factory

    os.sched_setaffinity(0, {cpu})
    out = {}
    for which in ("aiohttp", "rawhttp", "aiohttp", "rawhttp"):
        with asyncio.Runner(loop_factory=loop_factory()) as r:
            out.setdefault(which, []).append(round(r.run(_client_cost(url, n, conc, which)), 4))
    out["ratio_aiohttp_over_rawhttp"] = [round(a / b, 2) for a, b in zip(out["aiohttp"], out["rawhttp"])]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rates", default="2000,4000,6000,8000,12000,16000")
    ap.add_argument("--fixed", default="1000,4000")
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--protocols", default="http,https")
    ap.add_argument("--capped", action="store_true", help="also with concurrency caps (--max-inflight 64 / -max-workers 100)")
    ap.add_argument("--clients", action="store_true", help="compare aiohttp and rawhttp CPU per 1,000 requests")
    ap.add_argument("-o", "--output")
    a = ap.parse_args(argv)
    build()
    from audit_tune.loadgen import sink_tls

    cpus = sorted(os.sched_getaffinity(0))
    gen_cpu, srv_cpu = cpus[0], cpus[-1]
    rates = sorted({int(x) for x in a.rates.split(",")} | {int(x) for x in a.fixed.split(",")})
    fixed = [int(x) for x in a.fixed.split(",")]
    tmp = tempfile.mkdtemp(prefix="bench-lt-")
    tls = sink_tls.generate(tmp, client=False)
    record: dict = {"machine": {"cpus": os.cpu_count(), "loadavg_1m": os.getloadavg()[0],
                                "platform": platform.platform()},
                    "duration_s": a.duration, "repeat": a.repeat, "runs": [], "summary": {}}
    settings = [("default", [], [])] + ([("capped", ["--max-inflight", "64"], ["-max-workers=100"])] if a.capped else [])
    for proto in a.protocols.split(","):
        srv = Server(srv_cpu, tls if proto == "https" else None)
        ca = str(tls.ca_cert) if proto == "https" else None
        try:
            if a.clients and proto == "http":
                record["clients"] = client_compare(srv.url, gen_cpu)
                print("clients", record["clients"], flush=True)
            for name, tune_extra, veg_extra in settings:
                for rep in range(a.repeat):
                    best = {"tune": 0, "vegeta": 0}
                    fails = {"tune": 0, "vegeta": 0}
                    cpu = {}
                    for rate in rates:
                        for tool, fn, extra in (("tune", run_tune, tune_extra), ("vegeta", run_vegeta, veg_extra)):
                            if fails[tool] >= 2 and rate not in fixed:
                                continue
                            r = fn(srv.url, ca, rate, a.duration, gen_cpu, extra)
                            r.update(proto=proto, setting=name, repeat=rep)
                            record["runs"].append(r)
                            print(json.dumps(r), flush=True)
                            if r["held"]:
                                best[tool] = max(best[tool], rate)
                                fails[tool] = 0
                            else:
                                fails[tool] += 1
                            if rate in fixed and r["requests"]:
                                cpu[(tool, rate)] = 1000 * r["cpu_s"] / r["requests"]
                    key = f"{proto}/{name}"
                    s = record["summary"].setdefault(key, {"held": [], "cpu_per_1k": {}})
                    s["held"].append({"tune": best["tune"], "vegeta": best["vegeta"],
                                      "ratio": round(best["tune"] / best["vegeta"], 2) if best["vegeta"] else None})
                    for rate in fixed:
                        if ("tune", rate) in cpu and ("vegeta", rate) in cpu:
                            s["cpu_per_1k"].setdefault(str(rate), []).append(
                                {"tune_ms": round(1000 * cpu[("tune", rate)], 1),
                                 "vegeta_ms": round(1000 * cpu[("vegeta", rate)], 1),
                                 "ratio": round(cpu[("tune", rate)] / cpu[("vegeta", rate)], 2)})
                    print(key, json.dumps(s), flush=True)
        finally:
            srv.close()
    text = json.dumps(record, indent=2)
    if a.output:
        Path(a.output).write_text(text + "\n")
    print(json.dumps(record["summary"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
