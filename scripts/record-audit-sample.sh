#!/usr/bin/env bash
# Record analysis/data/sample-audit.jsonl.gz: a real kube-apiserver's audit log (log backend, json)
# under 'tune loadtest' with 1 s bursts every 10 s (burst:10,120@10s/1s for 60 s), on the local stack
# of tests/auditstack.py (etcd + kube-apiserver, webhook to a sink, Prometheus). The rotated files
# are concatenated in time order into one gzipped file (< 300 KB) for 'tune recommend --audit-log sample'.
#
#   scripts/record-audit-sample.sh [OUT]      (default analysis/data/sample-audit.jsonl.gz)
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-analysis/data/sample-audit.jsonl.gz}"
nice -n 5 python - "$out" <<'PY'
import gzip, sys, tempfile
from pathlib import Path

from audit_tune.analysis.auditlog.reader import discover
from tests.auditstack import recorded

out = Path(sys.argv[1])
with recorded(Path(tempfile.mkdtemp(prefix="audit-tune-audit-sample-")), "burst:10,120@10s/1s", "60s",
              name="sample") as r:
    files = discover([str(r.log_dir)])
    data = b""
    for f in sorted(files, key=lambda f: (not f.gz, f.path)):  # rotated backups (.gz, oldest names first), then the live file
        with (gzip.open(f.path) if f.gz else open(f.path, "rb")) as fh:
            data += fh.read()
    tmp = out.with_suffix(".tmp")
    with gzip.open(tmp, "wb", compresslevel=9) as g:
        g.write(data)
    tmp.replace(out)
    n = data.count(b"\n")
    print(f"record-audit-sample: {n} lines, {out.stat().st_size} bytes -> {out} (loadtest exit {r.loadtest_rc})",
          file=sys.stderr)
PY
