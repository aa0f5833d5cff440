"""A real kube-apiserver writing its audit log under ``tune loadtest``, with Prometheus and a sink.

Shared by ``tests/test_auditlog_stack.py`` and ``scripts/record-audit-sample.sh``: etcd +
kube-apiserver (``loadgen.local.LocalCluster``) with the log backend on (``--audit-log-path``,
rotated every 1 MB, rotated files gzipped), the webhook to ``loadgen.sink.Sink`` (lognormal
~50 ms), Prometheus scraping every ``scrape``, and ``tune loadtest`` at ``rate`` (e.g.
``burst:20,300@10s/1s``: bursts far shorter than the scrape interval).
"""
from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from audit_tune.cli.app import main
from audit_tune.loadgen.faults import FaultConfig
from audit_tune.loadgen.local import LocalCluster
from audit_tune.loadgen.prometheus import Prometheus
from audit_tune.loadgen.sink import Sink, SinkConfig
from audit_tune.sim.config import parse_flags

WEBHOOK_FLAGS = ["--audit-webhook-batch-max-wait=1s", "--audit-webhook-batch-max-size=100",
                 "--audit-webhook-batch-buffer-size=10000"]


@dataclass
class Recorded:
    log_dir: Path
    store: Path  # the sink's store (every event the webhook delivered)
    prom: Any
    cluster: Any
    sink: Any
    webhook_host: str
    t0: float  # unix: loadtest start (Prometheus had a few scrapes by then)
    t1: float  # unix: after the last scrape of the run
    loadtest_rc: int


@contextlib.contextmanager
def recorded(tmp: Path, rate: str, duration: str, scrape: str = "5s", name: str = "auditlog") -> Iterator[Recorded]:
    """Run the load; yield while Prometheus and the log are still there."""
    log_dir = tmp / "audit"
    log_dir.mkdir(parents=True, exist_ok=True)
    flags = parse_flags([f"--audit-log-path={log_dir / 'audit.log'}", "--audit-log-maxsize=1",
                         "--audit-log-maxbackup=50", "--audit-log-compress=true", *WEBHOOK_FLAGS])
    sink = Sink(SinkConfig(faults=FaultConfig.from_flags(latency="lognormal:median=50ms,p99=300ms", seed=3),
                           store=str(tmp / "sink-store.jsonl")))
    sink.start()
    try:
        with LocalCluster(f"{name}-{int(time.time()) % 100000}", flags=flags, sink_url=sink.url,
                          state_root=tmp / "clusters") as c:
            with Prometheus.for_cluster(c, interval=scrape, retention="1d") as prom:
                prom.wait_for_series("apiserver_audit_event_total", timeout=90)
                time.sleep(2)
                t0 = time.time()
                rc = main(["loadtest", "--kubeconfig", str(c.kubeconfig), "--rate", rate, "--duration", duration,
                           "--sink-url", sink.url, "--no-progress", "--preseed", "2", "-o", str(tmp / "run.json")])
                from audit_tune.sim.units import parse_duration

                time.sleep(2 * parse_duration(scrape, "scrape") + 1)  # the last scrapes
                yield Recorded(log_dir, tmp / "sink-store.jsonl", prom, c, sink, urlsplit(sink.url).netloc, t0, time.time(), rc)
    finally:
        sink.stop()
