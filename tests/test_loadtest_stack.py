"""End to end on the real local stack: load generator -> kube-apiserver (real audit pipeline) -> sink.

The invariant proven here is the one users rely on: every audit event the apiserver counts
(``apiserver_audit_event_total``) is either stored by the sink or counted as dropped
(``apiserver_audit_error_total``), once the pipeline is quiet. And each request the generator
made shows up in the sink as exactly the events the policy implies (default policy: RequestReceived
omitted, so 1 event per request, 2 per watch).
"""
from __future__ import annotations

import json
import os
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import requests

from audit_tune.loadgen import metrics_text as mt
from audit_tune.loadgen.faults import FaultConfig
from audit_tune.loadgen.kubetarget import check_safe, from_kubeconfig
from audit_tune.loadgen.loadtest import LoadTestConfig, run_loadtest
from audit_tune.loadgen.mix import RESOURCES, VERBS
from audit_tune.loadgen.sink import Sink, SinkConfig
from audit_tune.loadgen.store import verify

pytestmark = [pytest.mark.stack, pytest.mark.timeout(300)]


def _scrape(c) -> tuple[float, float]:
    s = requests.Session()
    s.trust_env = False
    text = s.get(c.metrics_url, cert=(str(c.client_cert), str(c.client_key)), verify=str(c.ca_file), timeout=30).text
    m = mt.parse(text)
    return m.total("apiserver_audit_event_total"), m.total("apiserver_audit_error_total")


def _quiet_balance(c, sink: Sink, wait: float, tries: int = 8) -> tuple[float, float, int]:
    """Scrape, let the pipeline flush, read the sink; retry until stored + dropped covers the scrape.

    The scrape's own ResponseComplete event is counted after its response was written, so
    ``stored + dropped`` is ``events + 1`` (plus any apiserver self-traffic in the window)."""
    last = (0.0, 0.0, 0)
    for _ in range(tries):
        events, dropped = _scrape(c)
        time.sleep(wait)
        stored = sink.stats()["events_stored"]
        last = (events, dropped, stored)
        if events <= stored + dropped <= events + 2:
            return last
    return last


def _cluster(tmp_path: Path, sink: Sink, extra_flags: list[str]):
    from audit_tune.loadgen.local import LocalCluster
    from audit_tune.sim.config import parse_flags

    flags = parse_flags(["--audit-webhook-batch-max-wait=1s", "--audit-webhook-batch-max-size=100", *extra_flags])
    return LocalCluster(f"lt-{os.getpid()}-{int(time.time()) % 100000}", flags=flags, sink_url=sink.url,
                        state_root=tmp_path / "clusters")


def test_apiserver_audit_count_equals_sink_stored_plus_drops(stack_binaries, tmp_path: Path) -> None:
    store = tmp_path / "events.jsonl"
    sink = Sink(SinkConfig(store=str(store)))
    sink.start()
    try:
        with _cluster(tmp_path, sink, []) as c:
            target = from_kubeconfig(c.kubeconfig)
            assert check_safe(target, False) == "local"
            cfg = LoadTestConfig(rate="100", duration=5.0, preseed=10, sink_url=sink.url, settle=5.0,
                                 mix="create=1,get=4,list=1,update=1,patch=1,delete=1,watch=0.3",
                                 watch_duration=1.0, max_lag=0.2)
            rec, trace = run_loadtest(cfg, target)
            load = rec["load"]
            assert load["kept_up"], load["behind_reason"]
            assert load["achieved_rate"] == pytest.approx(100, rel=0.03)
            assert all(k.startswith("2") for k in rec["status_codes"]), rec["status_codes"]
            assert rec["cleanup"]["leftover"] == 0 and not rec["cleanup"]["errors"]
            a = rec["audit"]
            assert a["event_total"] >= trace.n and a["dropped_events"] == 0
            assert a["webhook"]["requests_by_code"].get("200", 0) >= 1  # the webhook host filter found the sink
            assert rec["sink"]["delta"]["events_stored"] > 0
            # The flags in force come from the cluster's state.json when not given.
            assert "--audit-webhook-batch-max-wait=1s" in rec["flags"]["args"]

            events, dropped, stored = _quiet_balance(c, sink, wait=2.5)
            assert events <= stored + dropped <= events + 2, (events, dropped, stored)
            assert dropped == 0

            # Exact accounting for this run's own requests (default policy: RR omitted).
            evs = [json.loads(line)["event"] for line in store.read_text().splitlines()]
            run_ns = set(rec["cleanup"]["namespaces_deleted"])
            mine = [e for e in evs if (e.get("objectRef") or {}).get("namespace") in run_ns
                    and (e.get("objectRef") or {}).get("resource") in RESOURCES]
            v = trace.view()
            watches = int(np.count_nonzero(v["verb"] == VERBS.index("watch")))
            used_resources = len(RESOURCES)
            expected = 2 * cfg.preseed + trace.n + watches + 3 * used_resources  # cleanup: list, deletecollection, list
            assert len(mine) == expected, Counter((e["verb"], e["stage"]) for e in mine)
            assert Counter(e["stage"] for e in mine)["ResponseStarted"] == watches
    finally:
        sink.stop()
    # The apiserver's shutdown flushes the last scrape's event too; the chain holds every stored one.
    assert verify(store).events == sink.stats()["events_stored"] >= stored


def test_drops_are_counted_when_the_sink_fails(stack_binaries, tmp_path: Path) -> None:
    """A sink that answers 503 to 80% of attempts: with 5 attempts a batch is lost with p = 0.8^5,
    so some batches are dropped (apiserver_audit_error_total{plugin="webhook"}) and the balance
    events == stored + dropped must still hold."""
    store = tmp_path / "events.jsonl"
    sink = Sink(SinkConfig(store=str(store), faults=FaultConfig.from_flags(error_rate=0.8, error_status=503, seed=11)))
    sink.start()
    try:
        with _cluster(tmp_path, sink, ["--audit-webhook-initial-backoff=100ms", "--audit-webhook-batch-max-size=5",
                                       "--audit-webhook-batch-throttle-qps=50", "--audit-webhook-batch-throttle-burst=50"]) as c:
            rec, _ = run_loadtest(LoadTestConfig(rate="50", duration=4.0, preseed=5, sink_url=sink.url, settle=5.0,
                                                 max_lag=0.2), from_kubeconfig(c.kubeconfig))
            assert rec["cleanup"]["leftover"] == 0
            events, dropped, stored = _quiet_balance(c, sink, wait=4.0)
            assert dropped > 0 and stored > 0, (events, dropped, stored)
            assert events <= stored + dropped <= events + 2, (events, dropped, stored)
            assert sink.stats()["responses"].get("503", 0) > 0
    finally:
        sink.stop()


def test_https_sink_with_token_receives_the_audit_stream(stack_binaries, tmp_path: Path) -> None:
    """kube-apiserver's webhook client (Go TLS) trusts the sink's generated CA and sends the token."""
    store = tmp_path / "events.jsonl"
    sink = Sink(SinkConfig(store=str(store), tls_generate=str(tmp_path / "tls"), token="webhook-token-123"))
    sink.start()
    try:
        assert sink.url.startswith("https://")
        with _cluster_tls(tmp_path, sink) as c:
            rec, _ = run_loadtest(LoadTestConfig(rate="50", duration=2.0, preseed=2, sink_url=sink.url,
                                                 sink_ca=str(tmp_path / "tls" / "ca.crt"), settle=5.0, max_lag=0.2),
                                  from_kubeconfig(c.kubeconfig))
            assert rec["sink"]["delta"]["events_stored"] > 0
            assert rec["audit"]["dropped_events"] == 0
            assert sink.stats()["responses"].get("401", 0) == 0
            assert "webhook-token-123" not in json.dumps(rec)
    finally:
        sink.stop()
    assert verify(store).events > 0


def _cluster_tls(tmp_path: Path, sink: Sink):
    from audit_tune.loadgen.kubeconfig import SinkAuth
    from audit_tune.loadgen.local import LocalCluster
    from audit_tune.sim.config import parse_flags

    flags = parse_flags(["--audit-webhook-batch-max-wait=1s", "--audit-webhook-batch-max-size=100"])
    return LocalCluster(f"lt-tls-{os.getpid()}", flags=flags, sink_url=sink.url,
                        sink_auth=SinkAuth(ca_file=str(tmp_path / "tls" / "ca.crt"), token="webhook-token-123"),
                        state_root=tmp_path / "clusters")
