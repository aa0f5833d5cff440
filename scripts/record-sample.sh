#!/usr/bin/env bash
# Record analysis/data/sample-snapshot.json through the real Prometheus path.
#
#   scripts/record-sample.sh [real|fixture] [OUT]      (default: real, OUT = analysis/data/sample-snapshot.json)
#
# real (default): the real local stack, as a user would see it:
#   * an audit sink (loadgen/sink.py) on 127.0.0.1 answering each batch after lognormal ~50 ms;
#   * etcd + kube-apiserver (loadgen/local.py LocalCluster) with deliberately small buffering flags:
#     --audit-webhook-batch-buffer-size=200 --audit-webhook-batch-max-size=10
#     --audit-webhook-batch-throttle-qps=5 --audit-webhook-batch-throttle-burst=5 --audit-webhook-batch-max-wait=1s
#     i.e. at most 5 x 10 = 50 events/s leave the buffer;
#   * Prometheus (loadgen/prometheus.py) scraping the apiserver every second;
#   * 'tune loadtest' at 70 requests/s for 60 s (above the 50 events/s the flags drain, so the buffer
#     overflows and apiserver_audit_error_total{plugin="buffered"} grows);
#   * 'tune snapshot -p <that Prometheus> --history 2m --step 1s --webhook-host <sink host:port>'
#     (the sink listens on loopback, so the webhook host must be named: host detection skips loopback).
# fixture: the "drops" fixture (analysis/fixtures.py) backfilled with promtool into a temp TSDB and served
#   by the real Prometheus; genuine snapshot, synthetic history.
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-real}"
out="${2:-analysis/data/sample-snapshot.json}"
case "$mode" in
fixture)
nice -n 10 python - "$out" <<'PY'
import sys
from analysis.fixtures import backfilled_prometheus
from tune.cli import main

out = sys.argv[1]
with backfilled_prometheus(["drops"]) as (prom, truths):
    tr = truths["drops"]
    rc = main(["snapshot", "-p", prom.url, "-o", out, "--end", str(int(tr.end)),
               "--history", f"{int(tr.end - tr.start)}s", "--step", "15s"])
sys.exit(rc)
PY
;;
real)
nice -n 5 python - "$out" <<'PY'
import sys, tempfile, time
from pathlib import Path
from urllib.parse import urlsplit

from loadgen.faults import FaultConfig
from loadgen.local import LocalCluster
from loadgen.prometheus import Prometheus
from loadgen.sink import Sink, SinkConfig
from sim.config import parse_flags
from tune.cli import main

out = sys.argv[1]
FLAGS = ["--audit-webhook-batch-buffer-size=200", "--audit-webhook-batch-max-size=10",
         "--audit-webhook-batch-throttle-qps=5", "--audit-webhook-batch-throttle-burst=5",
         "--audit-webhook-batch-max-wait=1s"]
tmp = Path(tempfile.mkdtemp(prefix="audit-tune-sample-"))
sink = Sink(SinkConfig(faults=FaultConfig.from_flags(latency="lognormal:median=50ms,p99=300ms", seed=3)))
sink.start()
try:
    with LocalCluster(f"sample-{int(time.time()) % 100000}", flags=parse_flags(FLAGS), sink_url=sink.url,
                      state_root=tmp / "clusters") as c:
        with Prometheus.for_cluster(c, interval="1s", retention="1d") as prom:
            prom.wait_for_series("apiserver_audit_event_total", timeout=60)
            time.sleep(3)
            t0 = time.time()    # the window starts once Prometheus has a few scrapes
            rc = main(["loadtest", "--kubeconfig", str(c.kubeconfig), "--rate", "70", "--duration", "60s",
                       "--sink-url", sink.url, "--no-progress", "-o", str(tmp / "run.json")])
            print(f"record-sample: tune loadtest exit {rc}", file=sys.stderr)
            time.sleep(5)   # the last scrapes
            hist = int(time.time() - t0)
            host = urlsplit(sink.url).netloc
            rc = main(["snapshot", "-p", prom.url, "-o", out, "--history", f"{hist}s", "--step", "1s",
                       "--webhook-host", host])
            if rc:
                sys.exit(rc)
finally:
    sink.stop()
PY
;;
*) echo "usage: $0 [real|fixture] [OUT]" >&2; exit 1;;
esac
