"""Audit sink throughput, this tree against a baseline commit, measured side by side.

    python bench/bench_sink.py --baseline accca66 --rounds 3 [-o bench-sink.json]

The baseline is exported with ``git archive`` and installed (``pip --target``, no deps) into a
scratch folder; each round runs both sinks one after the other (order alternating, so machine
load drifts hit both alike) as real ``tune sink serve --store ... --fsync F`` processes, and
``--clients`` threads post ``--batches`` 400-event EventLists of ~740-byte Metadata events.
It prints events/s per sink and the ratio this/baseline per round.
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
EVENT = {"kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata", "auditID": "a" * 36,
         "stage": "ResponseComplete", "requestURI": "/api/v1/namespaces/default/configmaps/x?timeout=30s",
         "verb": "get", "user": {"username": "kubernetes-admin", "groups": ["system:masters", "system:authenticated"]},
         "sourceIPs": ["127.0.0.1"], "userAgent": "kubectl/v1.37.0",
         "objectRef": {"resource": "configmaps", "namespace": "default", "name": "x", "apiVersion": "v1"},
         "responseStatus": {"metadata": {}, "code": 200}, "requestReceivedTimestamp": "2026-11-28T11:00:00.000000Z",
         "stageTimestamp": "2026-11-28T11:00:00.002000Z",
         "annotations": {"authorization.k8s.io/decision": "allow", "authorization.k8s.io/reason": ""}}


def install_baseline(commit: str, into: Path) -> Path:
    src = into / "src"
    src.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(src)], input=archive, check=True)
    site = into / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps",
                    "--target", str(site), str(src)], check=True)
    return site


def run_sink(site: Path | None, fsync: str, body: bytes, batches: int, clients: int) -> float:
    """Events/s stored and acknowledged by one ``tune sink serve`` (from ``site``, else this tree)."""
    env = dict(os.environ)  # run outside the repository, whose audit_tune/ folder would shadow the baseline
    if site is not None:
        env["PYTHONPATH"] = str(site)
    with tempfile.TemporaryDirectory() as d:
        proc = subprocess.Popen([sys.executable, "-c", "from audit_tune.cli.app import main; main()", "sink", "serve",
                                 "--store", f"{d}/e.jsonl", "--fsync", fsync], env=env, cwd=d, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True)
        try:
            url = json.loads(proc.stdout.readline())["url"]  # type: ignore[union-attr]
            n_events = len(json.loads(body)["items"])

            def worker(n: int) -> int:
                s = requests.Session()
                return sum(n_events for _ in range(n) if s.post(url, data=body, timeout=120).status_code == 200)

            t = time.perf_counter()
            with cf.ThreadPoolExecutor(clients) as ex:
                stored = sum(ex.map(worker, [batches // clients] * clients))
            return stored / (time.perf_counter() - t)
        finally:
            proc.terminate()
            proc.wait(30)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", default="accca66")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batches", type=int, default=40)
    ap.add_argument("--batch-size", type=int, default=400)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--fsync", default="always,never")
    ap.add_argument("-o", "--output")
    a = ap.parse_args(argv)
    body = json.dumps({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "metadata": {},
                       "items": [EVENT] * a.batch_size}).encode()
    out: dict = {"baseline": a.baseline, "batch_bytes": len(body), "batch_size": a.batch_size, "clients": a.clients,
                 "load_before": os.getloadavg()[0], "rounds": []}
    with tempfile.TemporaryDirectory() as d:
        site = install_baseline(a.baseline, Path(d))
        for r in range(a.rounds):
            row: dict = {}
            for fsync in a.fsync.split(","):
                order = [("baseline", site), ("this", None)]
                for name, s in (order if r % 2 == 0 else order[::-1]):
                    row[f"{name}_{fsync}"] = round(run_sink(s, fsync, body, a.batches, a.clients))
                row[f"ratio_{fsync}"] = round(row[f"this_{fsync}"] / row[f"baseline_{fsync}"], 2)
            out["rounds"].append(row)
            print(json.dumps(row), flush=True)
    out["load_after"] = os.getloadavg()[0]
    print(f"load average before {out['load_before']:.1f}, after {out['load_after']:.1f}")
    if a.output:
        Path(a.output).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
