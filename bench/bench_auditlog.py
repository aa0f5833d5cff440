"""Benchmark: audit log lines per second per core, on one core and on both, and the memory of a
large read, all measured in one run so the ratios are side by side.

* **decoders**: the fields the reader needs, with msgspec (a ``Struct`` one line per call, and the
  block path's ``decode_lines`` on blocks of 4,000 lines), orjson and the standard library's json;
* **one core**: ``scan_file`` (read, decode, timestamps, checks, bins, sizes, mix) per CPU-second
  of this process, on generated lines (``make_line``: shaped like a real kube-apiserver's, user
  with groups and extra, objectRef, annotations, a ``Request``-level share with a request object)
  and on the real lines of the bundled sample (``analysis/data/sample-audit.jsonl.gz``, repeated
  with new timestamps); the block path against the line-by-line one;
* **both cores**: ``scan_files`` on several files, ``jobs=1`` against ``jobs=2``: wall time, CPU
  seconds (this process and its workers) and cores kept busy, with the load average at that moment.
  On a shared machine with Linux's autogroup on, a session gets its fair share of the CPU however
  many processes it runs, so a loaded machine shows no speedup: the CPU seconds show what the pool costs;
* **a large log set**: ``--big-lines`` lines in ``--files`` rotated files of one apiserver under
  /tmp, read by ``read_logs`` (both passes) in a fresh process on every core: wall, lines/s, peak
  RSS of the reader and of its largest worker, and the progress lines it printed.

    python bench/bench_auditlog.py [--lines 300000] [--big-lines 4000000] [--files 4] [-o bench-auditlog.json]

The figures depend on the machine and on what else runs on it; ratios are measured side by side.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import numpy as np
import orjson

from audit_tune.analysis.auditlog import decode as dec
from audit_tune.analysis.auditlog import sample_path
from audit_tune.analysis.auditlog.block import _CLEAN
from audit_tune.analysis.auditlog.reader import LogFile
from audit_tune.analysis.auditlog.scan import available_cores, scan_file, scan_files

VERBS = ("get", "list", "create", "update", "patch", "delete", "watch")


def make_line(t: float, i: int, rnd: random.Random) -> bytes:
    """Line ``i``: request ``i // 2``, its RequestReceived (even ``i``) or ResponseComplete (odd)."""
    stage = "ResponseComplete" if i % 2 else "RequestReceived"
    i //= 2
    verb = VERBS[(i * 7919) % len(VERBS)]
    ts = datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    ev = {
        "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Request" if verb in ("create", "update") else "Metadata",
        "auditID": f"{rnd.getrandbits(128):032x}", "stage": stage,
        "requestURI": f"/api/v1/namespaces/ns-{i % 7}/configmaps/cm-{i % 100}", "verb": verb,
        "user": {"username": f"system:serviceaccount:ns-{i % 7}:controller", "uid": f"{rnd.getrandbits(64):016x}",
                 "groups": ["system:serviceaccounts", f"system:serviceaccounts:ns-{i % 7}", "system:authenticated"],
                 "extra": {"authentication.kubernetes.io/pod-name": [f"controller-{i % 5}"],
                           "authentication.kubernetes.io/pod-uid": [f"{rnd.getrandbits(64):016x}"]}},
        "sourceIPs": ["10.0.0.12"], "userAgent": "kube-controller-manager/v1.35.0 (linux/amd64) kubernetes/abcdef",
        "objectRef": {"resource": "configmaps", "namespace": f"ns-{i % 7}", "name": f"cm-{i % 100}", "apiVersion": "v1"},
        "requestReceivedTimestamp": ts, "stageTimestamp": ts,
    }
    if stage == "ResponseComplete":
        ev["responseStatus"] = {"metadata": {}, "code": 200}
        ev["annotations"] = {"authorization.k8s.io/decision": "allow",
                             "authorization.k8s.io/reason": "RBAC: allowed by ClusterRoleBinding \"system:controller\""}
        if ev["level"] == "Request":
            ev["requestObject"] = {"kind": "ConfigMap", "apiVersion": "v1", "metadata": {"name": f"cm-{i % 100}"},
                                   "data": {"k": "x" * rnd.randint(100, 800)}}
    return json.dumps(ev, separators=(",", ":")).encode()


def write_log(path: Path, n: int, t0: float = 1_790_000_000.0, rate: float = 2000.0, seed: int = 1) -> None:
    rnd = random.Random(seed)
    with open(path, "wb") as f:
        for i in range(n):
            f.write(make_line(t0 + i / rate, i, rnd) + b"\n")


def cpu_rate(fn, n: int, repeat: int = 3) -> float:
    """Lines per CPU second of this process (the machine is shared: wall time would measure the others)."""
    best = 0.0
    for _ in range(repeat):
        t = time.process_time()
        fn()
        best = max(best, n / max(time.process_time() - t, 1e-9))
    return best


def _cpu() -> float:
    """CPU seconds of this process and of its reaped children (the pool's workers)."""
    me, ch = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + ch.ru_utime + ch.ru_stime


def _autogroup() -> bool:
    """Linux autogroup: every session gets an equal CPU share, however many processes it runs, so
    on a busy machine a second process of this session adds no CPU."""
    try:
        return Path("/proc/sys/kernel/sched_autogroup_enabled").read_text().strip() == "1"
    except OSError:
        return False


def retimed(template: list[bytes], n: int, t0: float, rate: float) -> list[bytes]:
    """``n`` lines cycling through ``template``, each with a new ``stageTimestamp`` (``rate`` per second)."""
    us = (np.int64(round(t0 * 1e6)) + (np.arange(n, dtype=np.int64) * round(1e6 / rate))).astype("datetime64[us]")
    stamps = np.datetime_as_string(us, unit="us")
    parts = []
    for x in template:
        a = x.index(b'"stageTimestamp":"') + len(b'"stageTimestamp":"')
        parts.append((x[:a], x[x.index(b'"', a):]))
    return [parts[i % len(parts)][0] + stamps[i].encode() + b"Z" + parts[i % len(parts)][1] for i in range(n)]


def write_set(folder: Path, total: int, files: int, template: list[bytes], t0: float, rate: float = 5000.0) -> int:
    """``files`` rotated files of one apiserver, ``total`` lines in all, in time order; their bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    per, size = total // files, 0
    for k in range(files):
        name = "audit.log" if k == files - 1 else f"audit-2026-12-06T{k:02d}-00-00.000.log"
        with open(folder / name, "wb") as f:
            for j in range(0, per, 200_000):
                m = min(200_000, per - j)
                block = b"\n".join(retimed(template, m, t0 + (k * per + j) / rate, rate)) + b"\n"
                f.write(block)
                size += len(block)
    return size


_CHILD = """
import json, re, resource, sys, time
from pathlib import Path
from audit_tune.analysis.auditlog import read_logs
from audit_tune.analysis.auditlog.scan import RateLine
seen = []
line = RateLine(seen.append, every=1.0, after=1.0)
t = time.perf_counter()
r = read_logs([sys.argv[1]], jobs=int(sys.argv[2]), progress=line)
wall = time.perf_counter() - t
print(json.dumps({"lines": r.lines, "events": sum(v.events for v in r.instances.values()), "wall_s": round(wall, 2),
                  # VmHWM: this image's peak (ru_maxrss would include the parent's, kept across exec)
                  "peak_rss_mib": round(int(re.search(r"VmHWM:\\s+(\\d+)", Path("/proc/self/status").read_text())[1]) / 1024, 1),
                  "largest_worker_peak_rss_mib": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
                  "progress_lines": len(seen), "last_progress_line": seen[-1] if seen else None}))
"""


def big_read(folder: Path, jobs: int) -> dict[str, object]:
    """``read_logs`` of the folder in a fresh process, so its peak RSS is the read's alone."""
    out = subprocess.run([sys.executable, "-c", _CHILD, f"big={folder}", str(jobs)], capture_output=True, text=True,
                         check=True, timeout=3600)
    d: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    d["lines_per_s_wall"] = round(float(d["lines"]) / float(d["wall_s"]))  # type: ignore[arg-type]
    return d


def two_cores(fs: list[LogFile], rounds: int = 2) -> dict[str, object]:
    """``scan_files`` of ``fs`` with ``jobs=1`` and ``jobs=2``, interleaved, best of ``rounds``."""
    wall = {1: float("inf"), 2: float("inf")}
    cpu = {1: float("inf"), 2: float("inf")}
    loads = []
    for _ in range(rounds):
        for jobs in (1, 2):
            t, c = time.perf_counter(), _cpu()
            scan_files(fs, jobs=jobs)
            wall[jobs] = min(wall[jobs], time.perf_counter() - t)
            cpu[jobs] = min(cpu[jobs], _cpu() - c)
            loads.append(os.getloadavg()[0])
    n = sum(int(f.size) for f in fs)
    return {"files": len(fs), "mib": round(n / 2**20, 1), "jobs1_wall_s": round(wall[1], 2), "jobs2_wall_s": round(wall[2], 2),
            "speedup": round(wall[1] / wall[2], 2), "load_average_1m_during": [round(x, 2) for x in loads],
            "cpu_s_jobs1": round(cpu[1], 2), "cpu_s_jobs2": round(cpu[2], 2),
            "cores_busy_jobs1": round(cpu[1] / wall[1], 2), "cores_busy_jobs2": round(cpu[2] / wall[2], 2),
            "sched_autogroup": _autogroup()}


def two_cores_only(lines: int, files: int) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="bench-auditlog-"))
    p = tmp / "audit.log"
    write_log(p, lines)
    fs = []
    for k in range(files):
        pk = tmp / f"two-{k}.log"
        os.link(p, pk)
        fs.append(LogFile(f"i{k}", str(pk), pk.stat().st_size))
    d = two_cores(fs)
    d["lines"] = lines * files
    d["jobs1_lines_per_s"] = round(lines * files / float(d["jobs1_wall_s"]))  # type: ignore[arg-type]
    d["jobs2_lines_per_s"] = round(lines * files / float(d["jobs2_wall_s"]))  # type: ignore[arg-type]
    print(json.dumps({"two_cores": d}, indent=1))
    for f in tmp.iterdir():
        f.unlink()
    tmp.rmdir()
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lines", type=int, default=300_000, help="lines per file for the one- and two-core figures")
    ap.add_argument("--big-lines", type=int, default=4_000_000, help="lines of the large set (0: skip it)")
    ap.add_argument("--files", type=int, default=4, help="files of the large set and of the two-core figure")
    ap.add_argument("--two-cores-only", action="store_true", help="only the two-core figure (for a quiet moment)")
    ap.add_argument("-o", "--output")
    a = ap.parse_args()
    if a.two_cores_only:
        return two_cores_only(a.lines, a.files)
    tmp = Path(tempfile.mkdtemp(prefix="bench-auditlog-"))
    load0 = os.getloadavg()
    p = tmp / "audit.log"
    write_log(p, a.lines)
    lines = [x for x in p.read_bytes().split(b"\n") if x]
    real = [x for x in gzip.decompress(sample_path().read_bytes()).split(b"\n") if x]
    q = tmp / "real.log"
    q.write_bytes(b"\n".join(retimed(real, a.lines, 1_790_000_000.0, 2000.0)) + b"\n")
    sub = lines[: min(len(lines), 100_000)]
    blocks = [memoryview(b"".join(x + b"\n" for x in sub[k:k + 4000])) for k in range(0, len(sub), 4000)]  # ~4 MiB

    def with_orjson() -> None:
        for x in sub:
            d = orjson.loads(x)
            (d.get("apiVersion"), d.get("kind"), d.get("level"), d.get("stage"), d.get("stageTimestamp"), d.get("verb"),
             (d.get("user") or {}).get("username"), (d.get("objectRef") or {}).get("resource"))

    def with_json() -> None:
        for x in sub:
            d = json.loads(x)
            (d.get("apiVersion"), d.get("kind"), d.get("level"), d.get("stage"), d.get("stageTimestamp"), d.get("verb"),
             (d.get("user") or {}).get("username"), (d.get("objectRef") or {}).get("resource"))

    def with_msgspec() -> None:
        for x in sub:
            e = dec.decode_event(x)
            _ = (e.apiVersion, e.kind, e.level, e.stage, e.stageTimestamp, e.verb, e.user.username, e.objectRef.resource)

    def with_msgspec_block() -> None:
        for blk in blocks:
            for e in _CLEAN.decode_lines(blk):
                _ = (e.apiVersion, e.kind, e.level, e.stage, e.stageTimestamp, e.verb, e.user.username, e.objectRef.resource)

    dr = {"msgspec_block_decode_lines": 0.0, "msgspec_struct_per_line": 0.0, "orjson": 0.0, "json": 0.0}
    fns = {"msgspec_block_decode_lines": with_msgspec_block, "msgspec_struct_per_line": with_msgspec,
           "orjson": with_orjson, "json": with_json}
    for _ in range(3):  # interleaved, best of each
        for k, fn in fns.items():
            dr[k] = max(dr[k], cpu_rate(fn, len(sub), 1))
    one: dict[str, dict[str, float]] = {}
    for name, path in (("generated", p), ("real_sample_lines", q)):
        f = LogFile("a", str(path), path.stat().st_size)
        fast = slow = 0.0
        for _ in range(3):
            fast = max(fast, cpu_rate(lambda: scan_file(f), a.lines, 1))  # noqa: B023
            slow = max(slow, cpu_rate(lambda: scan_file(f, fast=False), a.lines, 1))  # noqa: B023
        one[name] = {"block_path_lines_per_cpu_s": round(fast), "line_by_line_lines_per_cpu_s": round(slow),
                     "block_over_line_by_line": round(fast / slow, 2)}
    fs = []
    for k in range(a.files):
        pk = tmp / f"two-{k}.log"
        os.link(p, pk)
        fs.append(LogFile(f"i{k}", str(pk), pk.stat().st_size))
    two = two_cores(fs)
    n2 = a.files * a.lines
    out: dict[str, object] = {
        "lines_per_file": a.lines, "mean_line_bytes": round(sum(map(len, lines)) / len(lines), 1),
        "real_mean_line_bytes": round(sum(map(len, real)) / len(real), 1), "cpus": available_cores(),
        "msgspec": msgspec.__version__, "orjson": orjson.__version__, "python": sys.version.split()[0],
        "load_average_at_start": [round(x, 2) for x in load0],
        "decode_lines_per_cpu_s": {k: round(v) for k, v in dr.items()},
        "decode_msgspec_block_over": {k: round(dr["msgspec_block_decode_lines"] / dr[k], 2) for k in list(dr)[1:]},
        "one_core_scan_file": one,
        "two_cores": {**two, "lines": n2, "jobs1_lines_per_s": round(n2 / float(two["jobs1_wall_s"])),  # type: ignore[arg-type]
                      "jobs2_lines_per_s": round(n2 / float(two["jobs2_wall_s"]))},  # type: ignore[arg-type]
    }
    print(json.dumps(out, indent=1), flush=True)
    for f in tmp.iterdir():
        f.unlink()
    if a.big_lines:
        big = tmp / "big"
        nbytes = write_set(big, a.big_lines, a.files, real, 1_790_000_000.0)
        small = tmp / "small"
        write_set(small, a.big_lines // 8, a.files, real, 1_790_000_000.0)
        out["large_set"] = {"lines": a.big_lines, "files": a.files, "gib": round(nbytes / 2**30, 2),
                            "read": big_read(big, available_cores()),
                            "an_eighth_of_it": big_read(small, available_cores()),
                            "load_average_1m_after": round(os.getloadavg()[0], 2)}
        for d in (big, small):
            for f in d.iterdir():
                f.unlink()
            d.rmdir()
        print(json.dumps({"large_set": out["large_set"]}, indent=1))
    tmp.rmdir()
    if a.output:
        Path(a.output).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
