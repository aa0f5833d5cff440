#!/usr/bin/env bash
# Record analysis/data/sample-snapshot.json through the real Prometheus path.
#
# Now: the "drops" fixture (analysis/fixtures.py: two apiservers on default flags, 10 x 400 =
# 4,000 events/s, one of them overflowing its 10,000-event buffer in bursts) is written as
# OpenMetrics, backfilled with promtool into a temp TSDB, served by the real Prometheus
# (loadgen/prometheus.py, 127.0.0.1) and read with 'tune snapshot'. So the sample is a genuine
# snapshot, with synthetic metric history.
#
# Later (docs/snapshot.md): re-record it from the real local stack: LocalCluster with small
# --audit-webhook-batch-* flags + Prometheus.for_cluster + ~60 s of 'tune loadtest' so that some
# events are dropped, then 'tune snapshot -p <its url> --history 5m --step 1s'.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-analysis/data/sample-snapshot.json}"
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
