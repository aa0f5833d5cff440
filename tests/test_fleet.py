"""`tune recommend --all-clusters` against a real Prometheus holding three clusters' data
(promtool-backfilled fixture 'clusters': prod-eu, prod-us, staging, two apiservers each)."""
from __future__ import annotations

import json

import pytest

from audit_tune.analysis.fleet import split_by_cluster
from audit_tune.cli.app import main
from audit_tune.sim.config import parse_flags

# the healthy objective only: the fleet's mechanics are under test here, and a receiver outage
# (the default 2m scenario, tests/test_outage.py) is lost by the default flags of every cluster
FAST = ["--seeds", "2", "--peak-window", "2m", "--tolerate-outage", "none", "--no-progress"]


@pytest.fixture(scope="module")
def clusters_prom(prometheus_installed):
    from promfixtures import backfilled_prometheus

    with backfilled_prometheus(["clusters"]) as (prom, truths):
        yield prom, truths["clusters"]


def _window(tr) -> list[str]:
    return ["--end", str(int(tr.end)), "--history", f"{int(tr.end - tr.start)}s", "--step", "30s"]


def test_all_clusters_one_recommendation_each(clusters_prom, tmp_path, capsys):
    prom, tr = clusters_prom
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    code = main(["recommend", "-p", prom.url, *_window(tr), "--all-clusters", "-f", "json", "--output-dir", str(out_dir),
                 "--jobs", "2", *FAST])
    cap = capsys.readouterr()
    fleet = json.loads(cap.out)
    # every apiserver here offers <= 1,000 events/s; the default flags drain 10 x 400 = 4,000 >= 2 x peak
    assert code == 0, cap.err
    assert sorted(r["cluster"] for r in fleet["summary"]) == ["prod-eu", "prod-us", "staging"]
    peaks: dict[str, float] = {}
    for _name, it in tr.instances.items():
        peaks[it.cluster] = max(peaks.get(it.cluster, 0.0), it.peak_rate)
    for row in fleet["summary"]:
        assert row["instances"] == 2
        flags = parse_flags(row["recommended_flags"])
        # each cluster sized for its own busiest apiserver x headroom 2, not for the fleet's
        assert flags.webhook.batch.drain_capacity >= 2 * peaks[row["cluster"]] * 0.98
        rep = fleet["clusters"][row["cluster"]]
        assert {c["instance"] for c in rep["calibration"]} == {n for n, it in tr.instances.items() if it.cluster == row["cluster"]}
    caps = {r["cluster"]: parse_flags(r["recommended_flags"]).webhook.batch.drain_capacity for r in fleet["summary"]}
    assert caps["prod-eu"] > caps["staging"]
    # per-cluster files and the summary
    for c in ("prod-eu", "prod-us", "staging"):
        assert json.loads((out_dir / f"{c}.json").read_text())["recommended"]["flags"] == fleet["clusters"][c]["recommended"]["flags"]
    assert json.loads((out_dir / "summary.json").read_text())["summary"] == fleet["summary"]


def test_dask_local_gives_the_same_recommendations(clusters_prom, tmp_path, capsys):
    prom, tr = clusters_prom
    snap = tmp_path / "s.json"
    assert main(["snapshot", "-p", prom.url, *_window(tr), "-o", str(snap), "--no-progress"]) == 0
    capsys.readouterr()
    res = {}
    for ex in ("local", "dask-local"):
        code = main(["recommend", "--snapshot", str(snap), "--all-clusters", "-f", "json", "--executor", ex, *FAST])
        cap = capsys.readouterr()
        assert code == 0, cap.err  # as above: the default flags cover every cluster
        res[ex] = json.loads(cap.out)
    assert res["local"]["summary"] == res["dask-local"]["summary"]


def test_split_and_bad_options(tmp_path, capsys):
    snap = {"instances": {"a": {"cluster": "x"}, "b": {"cluster": "y"}, "c": {}},
            "missing": [{"instance": "a", "item": "i"}, {"instance": "*", "item": "j"}]}
    parts = split_by_cluster(snap)
    assert list(parts) == ["", "x", "y"] and list(parts["x"]["instances"]) == ["a"]
    assert [m["item"] for m in parts["x"]["missing"]] == ["i", "j"] and [m["item"] for m in parts["y"]["missing"]] == ["j"]
    assert main(["recommend", "--all-clusters", "--executor", "spark"]) == 1
    assert "--executor" in capsys.readouterr().err
    assert main(["recommend", "--all-clusters", "--executor", "dask"]) == 1
    assert "--scheduler" in capsys.readouterr().err
    assert main(["recommend", "--output-dir", str(tmp_path)]) == 1
    assert "--all-clusters" in capsys.readouterr().err
