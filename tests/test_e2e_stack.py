"""End to end: real etcd + kube-apiserver (LocalCluster) -> audit webhook -> sink, checked against
the simulator's prediction (``loadgen.verify``, ``tune loadtest --verify``).

Four runs, each on its own cluster with its own flags and sink (numbers in docs/verification.md):

1. **overload**: 150 req/s for 30 s against deliberately small flags (throttle 2 qps x 10 events,
   buffer 50): the buffer overflows, and the observed drops must match the prediction within
   the tolerance (5% of events_total + one batch); ``tune loadtest --verify`` exits 3 because
   drops exceed ``--max-drops 0``, and for that reason only;
2. **covered**: the same load with flags that cover it: zero drops, ``--verify`` exits 0, the
   store's chain verifies and its count equals the apiserver's ``apiserver_audit_event_total``;
3. **slow sink**: a 3 s sink: batches pile up in flight (several at once), nothing is dropped;
4. **sink outage**: the sink answers 503 for 5 s in the middle of the load with a 200 ms initial
   backoff: batches are dropped after 5 attempts (``plugin="webhook"``), as many as predicted.

Every run also checks the accounting: events_total = delivered + dropped over the whole run, once
the pipeline is quiet (no lost events). The binaries come from the conftest fixture that builds
them: a missing binary fails these tests, it never skips them.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from audit_tune.loadgen.faults import FaultConfig
from audit_tune.loadgen.kubetarget import check_safe, from_kubeconfig
from audit_tune.loadgen.loadtest import LoadTestConfig, run_loadtest
from audit_tune.loadgen.local import DEFAULT_POLICY, LocalCluster
from audit_tune.loadgen.quiet import read_baseline
from audit_tune.loadgen.sink import Sink, SinkConfig
from audit_tune.loadgen.store import verify as verify_store
from audit_tune.loadgen.verify import (
    ReplayOptions,
    TraceRows,
    VerifyReport,
    accounting,
    event_times,
    render,
    scrape_totals,
    verify_live,
    verify_run,
    wait_quiet,
)
from audit_tune.sim.config import parse_flags

pytestmark = [pytest.mark.timeout(420)]
stack = pytest.mark.stack

SMALL = ["--audit-webhook-batch-throttle-qps=2", "--audit-webhook-batch-max-size=10",
         "--audit-webhook-batch-buffer-size=50", "--audit-webhook-batch-max-wait=1s"]
COVER = ["--audit-webhook-batch-max-wait=1s"]  # defaults otherwise: 10 qps x 400 events, buffer 10000
TIMES: dict[str, float] = {}


def _row(report: dict, metric: str) -> dict:
    """A row of the record's ``verify`` section (the JSON document the CLI writes)."""
    return next(r for r in report["rows"] if r["metric"] == metric)


def _log(name: str, report: VerifyReport | dict, t0: float) -> None:
    TIMES[name] = time.monotonic() - t0
    text = render(report) if isinstance(report, VerifyReport) else json.dumps(report["rows"], indent=1) + "\n"
    sys.stderr.write(f"\n=== {name} ({TIMES[name]:.1f} s)\n{text}")
    doc = report.to_dict() if isinstance(report, VerifyReport) else report
    out = os.environ.get("AUDIT_TUNE_E2E_REPORTS")
    if out:  # collect the numbers for docs/verification.md
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / f"{name}.json").write_text(json.dumps({"seconds": TIMES[name], "report": doc}, indent=1,
                                                           default=float))


class Stack:
    """A sink (own faults) and a LocalCluster whose webhook points at it; quiet before the run."""

    def __init__(self, tmp: Path, name: str, flags: list[str], faults: FaultConfig | None = None) -> None:
        self.flags = parse_flags(flags)
        tmp.mkdir(parents=True, exist_ok=True)
        self.store = tmp / "events.jsonl"
        self.sink = Sink(SinkConfig(store=str(self.store), faults=faults or FaultConfig()))
        self.sink.start()
        self.cluster = LocalCluster(f"e2e-{name}-{os.getpid()}", flags=self.flags, sink_url=self.sink.url,
                                    state_root=tmp / "clusters")
        try:
            self.cluster.up()
        except BaseException:
            self.sink.stop()
            raise
        self.target = from_kubeconfig(self.cluster.kubeconfig)
        assert check_safe(self.target, False) == "local"

    def baseline(self) -> tuple[dict, dict]:
        """Wait until the start-up audit traffic has been delivered or dropped and the throttle's bucket
        is full again (the replay starts that way), then read both sides."""
        wait_quiet(self.sink.stats, self.flags, timeout=60, retries=False, refill=True)
        return read_baseline(self.target, self.sink.stats)

    def close(self) -> None:
        try:
            self.cluster.down()
        finally:
            self.sink.stop()


@pytest.fixture
def stacks(stack_binaries, tmp_path: Path):
    made: list[Stack] = []

    def make(name: str, flags: list[str], faults: FaultConfig | None = None) -> Stack:
        s = Stack(tmp_path / name, name, flags, faults)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


def _cli(st: Stack, out: Path, *extra: str) -> tuple[int, dict, str]:
    """``tune loadtest --verify`` against the stack, as a user runs it."""
    cmd = [sys.executable, "-m", "audit_tune.cli", "loadtest", "--kubeconfig", str(st.cluster.kubeconfig),
           "--rate", "150", "--duration", "30s", "--preseed", "5", "--max-lag", "500ms",
           "--sink-url", st.sink.url, "--verify", "--no-progress", "-o", str(out), *extra]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    rec = json.loads(out.read_text()) if out.exists() else {}
    return p.returncode, rec, p.stderr


@stack
def test_overload_drops_match_the_prediction(stacks, tmp_path: Path) -> None:
    t0 = time.monotonic()
    st = stacks("overload", SMALL)
    code, rec, err = _cli(st, tmp_path / "overload.json")
    assert "verify" in rec, err[-3000:]
    rep = rec["verify"]
    _log("overload", rep, t0)
    assert rec["load"]["achieved_ratio"] > 0.8, rec["load"]["behind_reason"]  # the replay uses the real sends
    buffered = _row(rep, "buffered drops")
    assert buffered["observed"] > 1000, rep  # the small flags really overflow: 150 ev/s into 20 ev/s
    for metric in ("events_total", "buffered drops", "webhook drops", "delivered"):
        assert _row(rep, metric)["ok"], (metric, rep["rows"], rep["inputs"])
    assert rep["accounting"]["lost"] == 0, rep["accounting"]
    # exit 3, and only because the observed drops exceed --max-drops 0
    assert code == 3, err[-3000:]
    assert [f for f in rep["failures"] if not f.startswith("observed drops")] == [], rep["failures"]
    assert "observed drops" in err and "predicted" in err


@stack
def test_covering_flags_deliver_everything(stacks, tmp_path: Path) -> None:
    t0 = time.monotonic()
    st = stacks("covered", COVER)
    code, rec, err = _cli(st, tmp_path / "covered.json")
    assert "verify" in rec, err[-3000:]
    rep = rec["verify"]
    _log("covered", rep, t0)
    assert code == 0, (err[-3000:], rep["failures"])
    assert rep["ok"] and rep["observed"]["buffered"] == 0 and rep["observed"]["webhook"] == 0, rep
    assert rep["predicted"]["buffered"] == 0 and rep["predicted"]["webhook"] == 0
    assert rep["accounting"]["lost"] == 0 and rep["accounting"]["residual"] <= 0, rep["accounting"]
    # the store holds every event the apiserver ever counted: chain intact, count = event_total
    wait_quiet(st.sink.stats, st.flags, timeout=30, retries=False)
    a = scrape_totals(st.target)
    time.sleep(st.flags.webhook.batch.max_batch_wait + 1.5)
    assert sum(a["errors"].values()) == 0, a
    summary = verify_store(st.store)
    assert summary.head_checked
    # the store also has this last scrape's own event (counted after its value was read)
    assert summary.events == st.sink.stats()["events_stored"]
    assert 0 <= summary.events - a["event_total"] <= 2, (summary.events, a)


def _run(st: Stack, name: str, t0: float, rate: str, duration: float, faults: FaultConfig | None,
         max_drops: float = 0) -> tuple[dict, VerifyReport]:
    a0, s0 = st.baseline()
    rec, trace = run_loadtest(LoadTestConfig(rate=rate, duration=duration, preseed=5, sink_url=st.sink.url,
                                             max_lag=0.5, audit_flags=tuple(st.flags.to_flags())), st.target)
    rep = verify_live(rec, trace, st.target, st.sink.url, (a0, s0), policy=str(DEFAULT_POLICY), faults=faults,
                      max_drops=max_drops)
    _log(name, rep, t0)
    # The replay uses the real send times, so a generator a little behind schedule (the apiserver
    # spends CPU logging every dropped event) does not spoil the comparison; most of the load must go out.
    assert rec["load"]["achieved_ratio"] > 0.8, rec["load"]["behind_reason"]
    return rec, rep


@stack
def test_slow_sink_piles_up_in_flight_without_drops(stacks) -> None:
    t0 = time.monotonic()
    faults = FaultConfig.from_flags(latency="3s")
    st = stacks("slow", ["--audit-webhook-batch-max-wait=1s", "--audit-webhook-batch-max-size=100"], faults)
    rec, rep = _run(st, "slow-sink", t0, "100", 15.0, faults)
    assert rep.ok, (rep.failures, rep.rows)
    assert rep.observed["buffered"] == 0 and rep.observed["webhook"] == 0
    # batches leave about once a second and each takes 3 s: several are in flight at once
    assert st.sink.stats()["max_inflight"] >= 3 and rep.predicted["max_inflight_batches"] >= 3
    assert rep.predicted["p50"] > 3.0 and rep.observed["p50"] > 3.0


@stack
def test_sink_outage_drops_batches_after_retries(stacks) -> None:
    t0 = time.monotonic()
    lead = 14.0  # the run starts about this long after the sink (cluster start-up, quiet, setup)
    faults = FaultConfig.from_flags(outages=[f"{lead + 5:g}s-{lead + 10:g}s:503"])
    st = stacks("outage", ["--audit-webhook-batch-max-wait=1s", "--audit-webhook-batch-max-size=20",
                           "--audit-webhook-initial-backoff=200ms"], faults)
    started = st.sink.stats()["started_unix"]
    wait = started + lead - 2.0 - time.time()  # baseline takes ~2 s
    assert wait > 0, "the cluster took too long to start for the outage to fall inside the run"
    time.sleep(wait)
    rec, rep = _run(st, "sink-outage", t0, "100", 15.0, faults)
    (o_start, o_end, _), = rep.inputs.outages_run_relative
    assert 1.0 < o_start and o_end < 14.0, rep.inputs.outages_run_relative  # inside the window
    assert rep.observed["webhook"] > 0 and rep.observed["buffered"] == 0, rep.observed
    for metric in ("events_total", "buffered drops", "webhook drops", "delivered"):
        assert rep.row(metric).ok, (metric, rep.rows, rep.inputs)
    assert rep.accounting["lost"] == 0, rep.accounting
    assert st.sink.stats()["responses"].get("503", 0) > 0


# ----------------------------------------------------------------------------- offline (no stack)

def test_accounting_names_lost_events() -> None:
    a0 = {"event_total": 100.0, "errors": {}}
    a1 = {"event_total": 400.0, "errors": {"buffered": 50.0}}
    s0, s1 = {"events_stored": 90}, {"events_stored": 330}
    acc = accounting(a0, a1, s0, s1)
    assert acc["events_total"] == 300 and acc["delivered"] == 240 and acc["residual"] == 10 and acc["lost"] == 10
    # more delivered than counted (events already in the pipeline at a0) is not a loss
    assert accounting(a0, a1, s0, {"events_stored": 345})["lost"] == 0


def test_event_times_follow_the_policy_in_force() -> None:
    tr = TraceRows(send=np.array([1.0, 2.0, 3.0, np.nan]), latency=np.array([0.5, 4.0, 0.1, np.nan]),
                   status=np.array([200, 200, 0, -1]), verb=["get", "watch", "get", "get"],
                   resource=["configmaps", "secrets", "configmaps", "configmaps"])
    t, lv, sg, method, detail = event_times(tr, str(DEFAULT_POLICY), ("u", ("system:masters",)), "ns", None)
    # default policy: RequestReceived omitted; get -> RC at completion; watch -> RS at send + RC at its end;
    # the transport error and the unsent request made no event; the before-window scrape at 0
    assert t.tolist() == [0.0, 1.5, 2.0, 6.0] and set(lv.tolist()) == {"Metadata"}
    assert sg.tolist() == ["ResponseComplete", "ResponseComplete", "ResponseStarted", "ResponseComplete"]
    assert method.startswith("policy") and detail["watch secrets"]["stages"] == ["ResponseStarted", "ResponseComplete"]
    t2, _, _, method2, _ = event_times(tr, "/nonexistent/policy.yaml", ("u", ()), "ns", 3.0)
    assert len(t2) == 3 and "measured ratio" in method2 and "1.5000" in method2


def _synthetic(n_obs: dict) -> dict:
    return {"window": {"start_unix": 1000.0, "end_unix": 1010.0, "duration_s": 10.0, "elapsed_s": 10.0},
            "audit": {"event_total": n_obs["events"], "error_total_by_plugin": {"buffered": n_obs["buffered"]}},
            "flags": {"args": SMALL}, "config": {"seed": 1}, "load": {"kept_up": True}, "cleanup": {},
            "sink": {"delta": {"events_stored": 1501 - n_obs["buffered"], "events_received": 1501 - n_obs["buffered"],
                               "bytes_received": 850 * (1501 - n_obs["buffered"])}}}


def test_verify_run_compares_and_decides() -> None:
    """150 req/s for 10 s into 2 batches/s x 10 events (burst 15, buffer 50): about 1501 - (150 + 200 + 50) dropped."""
    n = 1500
    tr = TraceRows(send=np.arange(n) / 150.0, latency=np.full(n, 0.004), status=np.full(n, 200),
                   verb=["get"] * n, resource=["configmaps"] * n)
    rep = verify_run(_synthetic({"events": 1501.0, "buffered": 1101.0}), tr, policy=str(DEFAULT_POLICY))
    pred = rep.predicted
    assert pred["events_total"] == 1501 and abs(pred["buffered"] - 1101) <= 20 and pred["webhook"] == 0
    assert rep.row("buffered drops").ok and rep.exit_code == 3  # drops > --max-drops 0
    assert [f for f in rep.failures if not f.startswith("observed drops")] == []
    far = verify_run(_synthetic({"events": 1501.0, "buffered": 500.0}), tr, policy=str(DEFAULT_POLICY),
                     options=ReplayOptions(max_drops=10_000))
    assert not far.row("buffered drops").ok and far.exit_code == 3
    assert any(f.startswith("buffered drops: observed 500") for f in far.failures)
    assert far.to_dict()["rows"] == [r.to_dict() for r in far.rows] and far.to_dict()["ok"] is False


def test_cli_verify_needs_a_sink() -> None:
    p = subprocess.run([sys.executable, "-m", "audit_tune.cli", "loadtest", "--server", "https://127.0.0.1:9",
                        "--verify"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 1 and "--verify needs --sink-url" in p.stderr
