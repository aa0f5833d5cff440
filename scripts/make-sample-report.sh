#!/usr/bin/env bash
# Regenerate reports/sample/ (index.html, report.md + PNGs, data.json) from the bundled inputs:
#   analysis/data/sample-snapshot.json           the bundled Prometheus snapshot (recorded from the real local stack)
#   reports/sample/inputs/loadtest-run.json       the 'tune loadtest' record of that same recording run (+ its trace CSV)
# with the flags the sample was recorded with (analysis/data/sample-flags.txt) as the current flags. Deterministic: --seed 1 gives the
# same data.json byte for byte. Exit 3 from 'tune report' means "written; the current flags violate the
# objective", which is what this sample shows (it drops events), so it counts as success here.
#
#   scripts/make-sample-report.sh [REPORTS_DIR]      (default: reports)
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${1:-reports}"
rc=0
nice -n 10 python -m audit_tune.cli report --current-flags analysis/data/sample-flags.txt --loadtest reports/sample/inputs/loadtest-run.json \
  --name sample --reports-dir "$dir" --seed 1 --no-progress || rc=$?
if [ "$rc" -ne 0 ] && [ "$rc" -ne 3 ]; then
  echo "make-sample-report: tune report failed (exit $rc)" >&2
  exit "$rc"
fi
echo "make-sample-report: $dir/sample/index.html" >&2
