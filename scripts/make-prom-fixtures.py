#!/usr/bin/env python3
"""Write the synthetic Prometheus fixtures (OpenMetrics, '# EOF' terminated, with timestamps).

    scripts/make-prom-fixtures.py OUTDIR [--scenario NAME ...] [--backfill TSDB_DIR]

For each scenario (analysis/fixtures.py: steady, diurnal, bursty, skewed, webhook-slow, drops,
missing, clusters) writes OUTDIR/<name>.om.txt and OUTDIR/<name>.truth.json (what the generator
used: event totals, drops, posts per instance). With --backfill, also runs
'promtool tsdb create-blocks-from openmetrics' into TSDB_DIR; start Prometheus with
--storage.tsdb.path=TSDB_DIR and a long --storage.tsdb.retention.time, and query with --end set to
the scenario's end (in the truth file).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from promfixtures import backfill, scenarios, write_scenario  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("outdir", type=Path)
    ap.add_argument("--scenario", action="append", choices=sorted(scenarios()), help="only these (repeatable)")
    ap.add_argument("--backfill", type=Path, metavar="TSDB_DIR", help="also backfill a Prometheus TSDB here")
    a = ap.parse_args()
    all_sc = scenarios()
    files = []
    for name in a.scenario or list(all_sc):
        path, truth = write_scenario(all_sc[name], a.outdir)
        (a.outdir / f"{name}.truth.json").write_text(json.dumps(truth.to_dict(), indent=1) + "\n")
        files.append(path)
        print(f"{path}  end={int(truth.end)}  history={int(truth.end - truth.start)}s  "
              f"instances={', '.join(truth.instances)}", file=sys.stderr)
    if a.backfill:
        backfill(files, a.backfill)
        print(f"backfilled {len(files)} file(s) into {a.backfill}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
