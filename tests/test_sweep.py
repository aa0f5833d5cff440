"""``tune sweep``: same table on a local pool and on a Dask LocalCluster, resume, errors, partial journals.

The fixture spec (tests/fixtures/sweeps/small.yaml) is 72 configs x 3 seeds = 216 points of 5 simulated
seconds each (~5-20 ms a point on the fast engine).
"""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from audit_tune.analysis.executors import ExecutorOptions, map_points
from audit_tune.analysis.sweep import JOURNAL, NONDETERMINISTIC, load_journal, plan, run_sweep
from audit_tune.analysis.sweep_spec import load_spec, spec_from_dict
from audit_tune.basics.errors import InputError
from audit_tune.cli.app import main

pytestmark = pytest.mark.timeout(300)

FIX = Path(__file__).parent / "fixtures" / "sweeps"
SMALL = FIX / "small.yaml"


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def deterministic(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in NONDETERMINISTIC} for r in rows]


def journal_ids(path: Path) -> list[str]:
    return [json.loads(line)["id"] for line in path.read_bytes().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def local_run(tmp_path_factory) -> Path:
    """The fixture sweep, run once on a local pool of 2 processes through the CLI."""
    out = tmp_path_factory.mktemp("local")
    assert main(["sweep", str(SMALL), "-o", str(out), "--executor", "local", "-j", "2", "--no-progress", "-q"]) == 0
    return out


def test_local_sweep_writes_tidy_table_and_summary(local_run):
    rows = read_csv(local_run / "results.csv")
    assert len(rows) == 216
    assert [r["id"] for r in rows] == sorted(r["id"] for r in rows)
    assert len({r["id"] for r in rows}) == 216
    r = rows[0]
    for col in ("seed", "rate", "webhook-latency", "audit-webhook-batch-max-size", "audit-webhook-batch-throttle-qps",
                "duration", "events_total", "errors.buffered", "errors.webhook", "delivered", "drop_fraction",
                "max_buffer_occupancy", "max_inflight_batches", "peak_memory_bytes", "delivery_latency_p50",
                "delivery_latency_p99", "first_drop_seconds", "wall_seconds", "error"):
        assert col in r, col
    assert not any(r["error"] for r in rows)
    assert {r["seed"] for r in rows} == {"1", "2", "3"}
    # the JSON lines table holds the same rows, with types
    jl = [json.loads(x) for x in (local_run / "results.jsonl").read_text().splitlines()]
    assert [x["id"] for x in jl] == [r["id"] for r in rows]
    assert all(isinstance(x["events_total"], int) for x in jl)
    # drops: events lost = buffered + webhook + ...; drop_fraction = lost / events_total
    for x in jl:
        assert x["lost"] == x["errors.buffered"] + x["errors.webhook"] + x["errors.log"] + x["errors.truncate"]
        assert x["drop_fraction"] == pytest.approx(x["lost"] / x["events_total"])
        assert (x["first_drop_seconds"] is None) == (x["lost"] == 0)
    s = json.loads((local_run / "summary.json").read_text())
    assert s["points"] == s["finished"] == 216 and s["configs"] == 72
    assert s["flag_axes"] == ["audit-webhook-batch-max-size", "audit-webhook-batch-throttle-qps"]
    assert s["condition_axes"] == ["rate", "webhook-latency"]
    by_rate = {(c["condition"]["rate"], c["condition"]["webhook-latency"]): c for c in s["conditions"]}
    assert len(by_rate) == 6
    for (rate, _), c in by_rate.items():
        m = c["min_drain_capacity"]
        assert m is not None
        # 2,000-event buffer for 5 s: draining at least the offered rate never drops here
        assert m["events_per_second"] <= rate
        w = c["max_dropping_capacity"]
        if w:
            assert w["events_per_second"] < rate
    # a higher rate needs at least as much capacity
    caps = [by_rate[(r, "20ms")]["min_drain_capacity"]["events_per_second"] for r in (1000, 2000, 4000)]
    assert caps == sorted(caps)
    assert "drop-free" in (local_run / "summary.txt").read_text()


def test_dask_localcluster_gives_the_identical_table(local_run, tmp_path):
    out = tmp_path / "dask"
    spec = load_spec(SMALL)
    rep = run_sweep(spec, out, ExecutorOptions(kind="dask-local", workers=2, chunk_size=9))
    assert rep.n_workers == 2 and rep.ran == 216 and rep.errors == 0
    a, b = read_csv(local_run / "results.csv"), read_csv(out / "results.csv")
    assert deterministic(a) == deterministic(b)
    assert json.loads((local_run / "summary.json").read_text()) == json.loads((out / "summary.json").read_text())


def test_in_process_results_match_the_pool(local_run):
    """A few points run here, in this process, give the pool's numbers (the engine is deterministic)."""
    from audit_tune.analysis.sweep import run_point

    spec = load_spec(SMALL)
    pts = plan(spec)[::40]
    rows = {r["id"]: r for r in (json.loads(x) for x in (local_run / "results.jsonl").read_text().splitlines())}
    for p in pts:
        got = run_point({"id": p.id, "scenario": p.scenario, "engine": "fast"})
        want = rows[p.id]
        for k in ("events_total", "lost", "delivered", "max_buffer_occupancy", "delivery_latency_p99", "first_drop_seconds"):
            assert got[k] == want[k], k


def test_resume_skips_finished_points(local_run, tmp_path):
    out = tmp_path / "resume"
    args = ["sweep", str(SMALL), "-o", str(out), "-j", "2", "--no-progress", "-q"]
    assert main(args + ["--limit", "100"]) == 0
    assert len(journal_ids(out / JOURNAL)) == 100
    assert len(read_csv(out / "results.csv")) == 100  # a consistent partial table
    s = json.loads((out / "summary.json").read_text())
    assert s["finished"] == 100 and s["points"] == 216
    assert main(args) == 0
    ids = journal_ids(out / JOURNAL)
    assert len(ids) == 216 and len(set(ids)) == 216  # the second run ran only the other 116
    assert deterministic(read_csv(out / "results.csv")) == deterministic(read_csv(local_run / "results.csv"))
    # nothing left: a third run runs nothing and changes nothing
    before = (out / JOURNAL).read_bytes()
    rep = run_sweep(load_spec(SMALL), out, ExecutorOptions(kind="local", jobs=2))
    assert rep.ran == 0 and rep.skipped == 216 and (out / JOURNAL).read_bytes() == before


def test_truncated_journal_partial_line_is_ignored_and_repaired(local_run, tmp_path):
    out = tmp_path / "trunc"
    out.mkdir()
    data = (local_run / JOURNAL).read_bytes()
    lines = data.splitlines(keepends=True)
    partial = b"".join(lines[:50]) + lines[50][: len(lines[50]) // 2]  # killed mid-write of line 51
    (out / JOURNAL).write_bytes(partial)
    assert len(load_journal(out / JOURNAL)) == 50
    rep = run_sweep(load_spec(SMALL), out, ExecutorOptions(kind="local", jobs=2))
    assert rep.skipped == 50 and rep.ran == 166
    raw = (out / JOURNAL).read_bytes()
    assert raw.endswith(b"\n")
    parsed = [json.loads(x) for x in raw.splitlines()]  # every line whole again
    assert len(parsed) == 216 and len({p["id"] for p in parsed}) == 216
    assert deterministic(read_csv(out / "results.csv")) == deterministic(read_csv(local_run / "results.csv"))


def test_ctrl_c_leaves_a_consistent_partial_result(tmp_path):
    """A real SIGINT to a running 'tune sweep': exit 130, whole lines only, tables rebuilt from the journal."""
    out = tmp_path / "int"
    spec = tmp_path / "slow.yaml"
    # Points long enough that the sweep is still running when the journal has 8 lines: with the fused
    # fast path a 20 s point took ~8 ms (all 216 in 1.8 s, done before the signal came); an hour
    # measured 0.05-0.15 s of CPU a point (1,000-4,000 events/s, max-size 50, qps 5), so the signal
    # comes after about a second of a sweep that needs tens of seconds.
    spec.write_text(SMALL.read_text().replace("duration: 5s", "duration: 1h"))
    cmd = [sys.executable, "-m", "audit_tune.cli", "sweep", str(spec), "-o", str(out), "-j", "1", "--chunk-size", "4",
           "--no-progress", "-q"]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            j = out / JOURNAL
            if j.exists() and j.read_bytes().count(b"\n") >= 8:
                break
            time.sleep(0.05)
        else:
            pytest.fail("no results in the journal after 60 s")
        os.killpg(p.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the parent and its pool workers
        _, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    raw = (out / JOURNAL).read_bytes()
    assert raw.endswith(b"\n")
    ids = [json.loads(x)["id"] for x in raw.splitlines()]
    assert 8 <= len(ids) < 216 and len(set(ids)) == len(ids)
    rows = read_csv(out / "results.csv")
    assert sorted(r["id"] for r in rows) == sorted(ids)
    assert json.loads((out / "summary.json").read_text())["finished"] == len(ids)
    # and the run can be finished later
    rep = run_sweep(load_spec(spec), out, ExecutorOptions(kind="local", jobs=2), limit=20)
    assert rep.skipped == len(ids) and rep.ran == 20
    assert len(set(journal_ids(out / JOURNAL))) == len(ids) + 20


def test_points_that_raise_are_recorded_and_the_sweep_goes_on(tmp_path, monkeypatch, capsys):
    # (1) a point whose flags are invalid (throttle qps 0): recorded without running
    out = tmp_path / "bad"
    code = main(["sweep", "--axis", "audit-webhook-batch-throttle-qps=0,10,20", "--axis", "rate=1000,3000",
                 "--set", "duration=2s", "-o", str(out), "-j", "2", "--no-progress"])
    cap = capsys.readouterr()
    assert code == 0
    rows = read_csv(out / "results.csv")
    assert len(rows) == 6
    bad = [r for r in rows if r["audit-webhook-batch-throttle-qps"] == "0"]
    assert len(bad) == 2 and all("throttle-qps=0" in r["error"] and r["events_total"] == "" for r in bad)
    assert all(not r["error"] and int(r["events_total"]) > 0 for r in rows if r not in bad)
    assert "2 raised" in cap.err

    # (2) a point that raises inside the worker: recorded with its error, the other points still run
    import audit_tune.analysis.sweep as sw

    real_plan = sw.plan

    def broken_plan(spec):
        pts = real_plan(spec)
        pts[3].scenario = {**pts[3].scenario, "receiver": {"latency": "no-such-distribution"}}
        return pts

    monkeypatch.setattr(sw, "plan", broken_plan)
    out2 = tmp_path / "raise"
    spec = spec_from_dict({"base": {"duration": "2s"}, "axes": {"rate": [500, 1000, 2000, 4000, 8000]}, "seeds": 2})
    rep = sw.run_sweep(spec, out2, ExecutorOptions(kind="local", jobs=2, chunk_size=3))
    assert rep.ran == 10 and rep.errors == 1
    rows = [json.loads(x) for x in (out2 / "results.jsonl").read_text().splitlines()]
    errs = [r for r in rows if r["error"]]
    assert len(errs) == 1 and "InputError" in errs[0]["error"] and "no-such-distribution" in errs[0]["error"]
    assert sum(1 for r in rows if not r["error"] and r["events_total"] > 0) == 9
    # errors are finished points: a re-run skips them unless asked to retry
    monkeypatch.setattr(sw, "plan", real_plan)
    rep = sw.run_sweep(spec, out2, ExecutorOptions(kind="local", jobs=2))
    assert rep.ran == 0
    rep = sw.run_sweep(spec, out2, ExecutorOptions(kind="local", jobs=2), retry_errors=True)
    assert rep.ran == 1 and rep.errors == 0


@pytest.mark.parametrize("text,where", [
    ("axes:\n  --audit-webhook-batch-max-size: [100]\n  --audit-webhook-batch-max-sise: [1]\n",
     ":3: axes.--audit-webhook-batch-max-sise: unknown audit flag; did you mean --audit-webhook-batch-max-size?"),
    ("axes:\n  rate: [1000, abc]\n", ":2: axes.rate.1: 'abc' is not a valid rate"),
    ("axes:\n  rate: [1000\n  x: 2\n", ":3: not valid YAML"),
    ("axes:\n  ratez: [1000]\n", ":2: axes.ratez: unknown parameter; did you mean rate?"),
    ("axes:\n  rate: {min: 1, max: 10}\n", ":2: axes.rate: a range on a grid needs steps"),
    ("axes:\n  rate: [1]\nsampel: lhs\n", ":3: sampel: unknown key; did you mean sample?"),
    ("axes:\n  rate: [1]\nsample: lhs\n", ":3: sample: sample lhs needs n > 0 points"),
    ("axes:\n  rate: [1]\nseeds: 0\n", ":3: seeds: 0: expected an integer >= 1"),
    ("base:\n  webhook-failure-rate: lots\n", ":2: base.webhook-failure-rate: 'lots' is not a valid float"),
    ("axes:\n  --audit-webhook-mode: [batch, fast]\n", ":2: axes.--audit-webhook-mode.1:"),
    ("- just\n- a list\n", "expected a mapping"),
])
def test_bad_spec_is_one_line_naming_key_and_line(tmp_path, capsys, text, where):
    f = tmp_path / "spec.yaml"
    f.write_text(text)
    code = main(["sweep", str(f), "--dry-run"])
    err = capsys.readouterr().err
    assert code == 1
    assert err.count("\n") == 1 and err.startswith(f"tune: error: {f}"), err
    assert where in err, err


def test_bad_json_spec_and_options(tmp_path, capsys):
    f = tmp_path / "s.json"
    f.write_text('{"axes": {"rate": [1]}\n "seeds": 2}')
    assert main(["sweep", str(f)]) == 1
    assert "line 2: not valid JSON" in capsys.readouterr().err
    assert main(["sweep", "--axis", "rate=1000", "--executor", "dask"]) == 1
    assert "--scheduler" in capsys.readouterr().err
    assert main(["sweep", "--axis", "rate=1000", "--executor", "ray"]) == 1
    assert "--executor ray" in capsys.readouterr().err
    assert main(["sweep"]) == 1
    assert "SPEC" in capsys.readouterr().err


def test_sampling_random_and_lhs_are_seeded():
    d = {"axes": {"--audit-webhook-batch-max-size": {"min": 50, "max": 5000, "log": True},
                  "webhook-failure-rate": {"min": 0, "max": 0.2},
                  "rate": [1000, 2000, 4000, 8000]},
         "sample": "lhs", "n": 40, "sample_seed": 7, "seeds": 2}
    a = spec_from_dict(d).configs()
    assert a == spec_from_dict(d).configs() and len(a) == 40
    assert a != spec_from_dict({**d, "sample_seed": 8}).configs()
    sizes = sorted(c["--audit-webhook-batch-max-size".lstrip("-")] for c in a)
    assert all(isinstance(x, int) and 50 <= x <= 5000 for x in sizes)
    # Latin hypercube: exactly one point in each of the 40 (log-)strata of every range axis
    import math

    strata = sorted(int(40 * (math.log(x) - math.log(50)) / (math.log(5000) - math.log(50))) for x in sizes)
    assert len(set(min(s, 39) for s in strata)) >= 38  # rounding to integers may move a boundary point
    fr = sorted(int(40 * c["webhook-failure-rate"] / 0.2) for c in a)
    assert fr == list(range(40))
    assert sorted(c["rate"] for c in a) == sorted([1000, 2000, 4000, 8000] * 10)  # discrete axis: balanced
    r = spec_from_dict({**d, "sample": "random"})
    assert len(r.points()) == 80 and r.configs() == spec_from_dict({**d, "sample": "random"}).configs()
    grid = spec_from_dict({"axes": {"rate": {"min": 1000, "max": 8000, "steps": 4, "log": True}}})
    assert [c["rate"] for c in grid.configs()] == [1000.0, 2000.0, 4000.0, 8000.0]


def test_burst_and_workload_axes_build_scenarios(tmp_path):
    spec = spec_from_dict({
        "base": {"duration": "4s", "burst-off": 500, "burst-mean-on": "1s", "burst-mean-off": "2s",
                 "webhook-latency": "lognormal:median=50ms,p99=400ms"},
        "axes": {"burst-on": [2000, 6000], "instances": [1, 3], "webhook-failure-rate": [0, 0.1]}})
    pts = plan(spec)
    assert len(pts) == 8 and all(p.scenario for p in pts)
    assert {p.scenario["workload"]["instances"] for p in pts} == {1, 3}
    assert all("onoff" in p.scenario["workload"]["arrivals"] for p in pts)
    bad = spec_from_dict({"axes": {"burst-on": [2000]}})
    assert "burst-" in plan(bad)[0].error
    # id: same scenario + seed -> same id; anything else -> another
    assert len({p.id for p in pts}) == 8 and [p.id for p in plan(spec)] == [p.id for p in pts]


def _square(x: int) -> int:
    return x * x


def test_map_points_keeps_input_order():
    seen = []
    assert map_points(_square, range(23), "local", jobs=2, chunk_size=4,
                      on_chunk=lambda done, res: seen.append(done)) == [x * x for x in range(23)]
    assert seen[-1] == 23 and len(seen) == 6
    assert map_points(_square, [], "local") == []
    with pytest.raises(InputError):
        map_points(_square, [1], "dask")


def test_dask_scheduler_address_survives_a_killed_worker(local_run, tmp_path):
    """--executor dask --scheduler tcp://...: a worker killed mid-sweep; Dask reruns its tasks, nothing is
    lost or duplicated, and the table is the local one."""
    import logging

    from distributed import Client, LocalCluster

    out = tmp_path / "sched"
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None,
                      silence_logs=logging.ERROR) as cluster, Client(cluster) as client:
        cmd = [sys.executable, "-m", "audit_tune.cli", "sweep", str(SMALL), "-o", str(out), "--executor", "dask",
               "--scheduler", cluster.scheduler_address, "--chunk-size", "6", "--no-progress", "-q"]
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                j = out / JOURNAL
                if j.exists() and j.read_bytes().count(b"\n") >= 12:
                    break
                time.sleep(0.02)
            pids = client.run(os.getpid)
            assert p.poll() is None, "the sweep finished before a worker could be killed"
            os.kill(next(iter(pids.values())), signal.SIGKILL)  # the nanny restarts it
            _, err = p.communicate(timeout=120)
        finally:
            if p.poll() is None:
                p.kill()
    assert p.returncode == 0, err
    ids = journal_ids(out / JOURNAL)
    assert len(ids) == 216 and len(set(ids)) == 216
    assert deterministic(read_csv(out / "results.csv")) == deterministic(read_csv(local_run / "results.csv"))


def test_parquet_table(local_run):
    import pyarrow.parquet as pq  # a test extra: the parquet output is tested, never skipped

    t = pq.read_table(local_run / "results.parquet")
    rows = read_csv(local_run / "results.csv")
    assert t.num_rows == len(rows) == 216
    assert t.column("id").to_pylist() == [r["id"] for r in rows]
    assert str(t.schema.field("events_total").type) == "int64"


def test_one_writer_per_folder_and_dry_run(tmp_path, capsys):
    from audit_tune.analysis.sweep import Journal

    spec = spec_from_dict({"base": {"duration": "1s"}, "axes": {"rate": [100, 200]}})
    with Journal(tmp_path / JOURNAL):
        with pytest.raises(InputError, match="another 'tune sweep' is writing"):
            run_sweep(spec, tmp_path, ExecutorOptions(kind="local", jobs=1))
    assert main(["sweep", str(SMALL), "--dry-run", "--seeds", "2"]) == 0
    assert capsys.readouterr().out.strip() == "144 points (72 configs x 2 seeds)"
