"""The shutdown model (sim/shutdown.py) against a REAL kube-apiserver: real watches, a real SIGTERM.

Each test starts its own loopback etcd + kube-apiserver (loadgen/local.py) with a webhook to an
in-process receiver, opens real watches that end by their own ``timeoutSeconds``, sends SIGTERM to
kube-apiserver, and compares what reached the receiver and what the apiserver logged (its
``HandlePluginError`` lines: ``apiserver_audit_error_total`` cannot be scraped from a process that
has exited) with the simulator's prediction for the same timeline. Serial; about 15 s each.
"""
from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from audit_tune.loadgen.local import LocalCluster
from audit_tune.sim.api import run
from audit_tune.sim.config import parse_flags
from audit_tune.sim.receiver import Receiver
from audit_tune.sim.scenario import Scenario
from audit_tune.sim.shutdown import ShutdownOptions
from audit_tune.sim.workload import Arrivals, RequestClass, Workload
from tests.conftest import AuditReceiver

WATCHES = 6
WATCH_SECONDS = 4
FLAGS = ["--audit-webhook-batch-max-wait=200ms", "--audit-webhook-batch-max-size=50"]
USER = "audit-tune-loadgen"  # the client-cert user of LocalCluster.session()
URI = f"/api/v1/namespaces/default/configmaps?watch=true&timeoutSeconds={WATCH_SECONDS}"
# HandlePluginError logs each impacted event after its error line (k8s.io/apiserver pkg/audit/metrics.go)
IMPACTED = re.compile(r'AUDIT: .*stage="ResponseComplete".*user="' + USER + r'".*uri="' + re.escape(URI) + '"')


def _watch(c: LocalCluster, opened: list[float]) -> None:
    s = c.session()
    url = c.server + URI
    with s.get(url, stream=True, timeout=WATCH_SECONDS + 30) as r:
        opened.append(time.monotonic())
        for _ in r.iter_content(chunk_size=None):
            pass
    s.close()


def _sigterm_with_watches(tmp_path, extra_args: list[str]) -> dict:
    """Open the watches, SIGTERM kube-apiserver 1 s later, wait for it to exit; what was seen."""
    recv = AuditReceiver()
    c = LocalCluster(f"shutdown-{os.getpid()}-{len(extra_args)}", flags=parse_flags(FLAGS), sink_url=recv.url,
                     extra_args=extra_args, state_root=tmp_path)
    c.up()
    try:
        opened: list[float] = []
        threads = [threading.Thread(target=_watch, args=(c, opened), daemon=True) for _ in range(WATCHES)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 10
        while len(opened) < WATCHES and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(opened) == WATCHES, "the watches did not open"
        time.sleep(1.0)
        api = next(p for p in c.processes if p.name == "kube-apiserver")
        t_term = time.monotonic()
        os.kill(api.pid, signal.SIGTERM)
        while api.alive() and time.monotonic() < t_term + 90:
            time.sleep(0.05)
        exited = time.monotonic() - t_term
        for t in threads:
            t.join(timeout=30)
        log = c.apiserver_log.read_text(errors="replace")
    finally:
        c.down()
        recv.close()
    mine = [e for e in recv.events() if e.get("requestURI") == URI and e.get("user", {}).get("username") == USER]
    return {"started": sum(e["stage"] == "ResponseStarted" for e in mine),
            "completed": sum(e["stage"] == "ResponseComplete" for e in mine),
            "buffered_errors": len(IMPACTED.findall(log)) if "audit backend shut down" in log else 0,
            "exit_after_sigterm": exited,
            "watch_end_after_sigterm": max(opened) + WATCH_SECONDS - t_term}


def _predict(watch_end_after_sigterm: float, watch_grace: float) -> dict:
    """The simulator on the same timeline: the watches open at 0 and end WATCH_SECONDS later; SIGTERM
    when their remaining time equals what the real run had (the run's duration)."""
    sigterm = WATCH_SECONDS - watch_end_after_sigterm
    watch = RequestClass("watch", level="Metadata", long_running=True, duration=WATCH_SECONDS, first_byte=0.001,
                         omit_stages=frozenset({"RequestReceived"}))
    w = Workload(Arrivals("trace", trace=tuple(0.001 * i for i in range(WATCHES))), sigterm, (watch,))
    sc = Scenario(flags=parse_flags(FLAGS), workload=w, receiver=Receiver(),
                  shutdown=ShutdownOptions(watch_grace=watch_grace)).validate()
    d = run(sc, engine="fast").to_dict(series=False)
    return {"completed": d["delivered"] - WATCHES, "buffered_errors": d["errors"]["buffered"],
            "not_emitted": d["events_not_emitted"], "exit_after_sigterm": d["simulated_seconds"] - sigterm}


def test_watch_final_events_hit_the_stopped_buffer(stack_binaries, tmp_path):
    real = _sigterm_with_watches(tmp_path, [])
    pred = _predict(real["watch_end_after_sigterm"], 0.0)
    # the audit backend stops at once (no non-long-running request in flight, no watch grace); the
    # process waits for the watch connections (HTTP server shutdown, up to the request timeout)
    assert real["started"] == WATCHES
    assert real["completed"] == pred["completed"] == 0
    assert real["buffered_errors"] == pred["buffered_errors"] == WATCHES
    assert pred["not_emitted"] == 0
    # exit when the last watch ended: four runs exited 0.23, 0.28, 0.36 and 0.41 s after the
    # predicted time (the process's own teardown, not modelled); buffered errors 6 and completed 0
    # every time
    assert abs(real["exit_after_sigterm"] - pred["exit_after_sigterm"]) < 1.0, (real, pred)


def test_watch_grace_period_delivers_them(stack_binaries, tmp_path):
    real = _sigterm_with_watches(tmp_path, ["--shutdown-watch-termination-grace-period=15s"])
    pred = _predict(real["watch_end_after_sigterm"], 15.0)
    assert real["started"] == WATCHES
    assert real["completed"] == pred["completed"] == WATCHES
    assert real["buffered_errors"] == pred["buffered_errors"] == 0


class _Refusing:
    """A webhook receiver that answers every POST 503 and remembers the audit IDs it was sent."""

    def __init__(self) -> None:
        self.ids: set[tuple[str, str]] = set()

        def fails(items: list[dict]) -> bool:
            self.ids.update((e["auditID"], e["stage"]) for e in items if e.get("user", {}).get("username") == USER)
            return True

        self.server = _receiver(fails)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/audit"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_restart_kill_loses_the_retry_chains(stack_binaries, tmp_path):
    """Audit Shutdown waits for every retry chain (10 s backoff): the kubelet's kill comes first."""
    kill_after, requests = 3.0, 20
    recv = _Refusing()
    c = LocalCluster(f"kill-{os.getpid()}", flags=parse_flags(FLAGS), sink_url=recv.url, state_root=tmp_path)
    c.up()
    try:
        s = c.session()
        for _ in range(requests):
            assert s.get(f"{c.server}/api/v1/namespaces/default/configmaps", timeout=10).status_code == 200
        s.close()
        time.sleep(1.0)  # every batch has had its first 503 and sleeps its backoff
        api = next(p for p in c.processes if p.name == "kube-apiserver")
        t_term = time.monotonic()
        os.kill(api.pid, signal.SIGTERM)
        while api.alive() and time.monotonic() < t_term + kill_after:
            time.sleep(0.05)
        alive_at_kill = api.alive()
        os.kill(api.pid, signal.SIGKILL)
        sent = {i for i, stage in recv.ids if stage == "ResponseComplete"}
    finally:
        c.down()
        recv.close()
    # the simulator: the same requests, a receiver answering 503, SIGTERM 1 s after the last one
    one = RequestClass("get", level="Request", omit_stages=frozenset({"RequestReceived"}))
    w = Workload(Arrivals("trace", trace=tuple(0.01 * i for i in range(requests))), 10.0, (one,))
    sc = Scenario(flags=parse_flags(FLAGS), workload=w, receiver=Receiver(error_rate=1.0),
                  shutdown=ShutdownOptions(restart_at=(0.01 * requests + 1.0,), kill_after=kill_after)).validate()
    d = run(sc, engine="fast").to_dict(series=False)
    life = d["lifetimes"][0][0]
    assert alive_at_kill and life["killed"]
    assert len(sent) == requests  # the real server had sent each event at least once, never acknowledged
    assert d["restart_loss"]["retry-chain-at-kill"] == requests and d["delivered"] == 0


ALL_STAGES_POLICY = """apiVersion: audit.k8s.io/v1
kind: Policy
rules:
  - level: Metadata
"""
STRICT = ["--audit-webhook-mode=blocking-strict", "--audit-webhook-initial-backoff=1s"]
TIMEOUT = 3.0
MARKER = "labelSelector=audit-tune-timeout"
# the two draw their backoff jitter independently: each retry chain lasts 8.125-9.75 s (backoffs
# 1, 1.5, 2.25, 3.375 s, each x U[1, 1.2)), and the real one adds its five POSTs and the 0.2 s
# polling of /metrics. Twelve runs (5 per policy over HTTP/1.1, one more over HTTP/2 and one with a
# 2 KB+ answer for the ResponseComplete case) counted the error 0.39 s before to 0.71 s after the
# simulator's seed-1 draws (9.30 s, 9.11 s) and answered or closed 3.006-3.088 s after the request:
# tolerance 1.2 s, which any real draw with up to 0.45 s of overhead meets
CHAIN_TOL = 1.2


def _metric(text: str, name: str) -> float:
    return sum(float(ln.split()[-1]) for ln in text.splitlines() if ln.startswith(name))


def _receiver(fails: Callable[[list[dict]], bool]) -> ThreadingHTTPServer:
    """A webhook receiver on loopback answering a batch 503 when ``fails`` (given its events) says
    so, else 200."""

    class H(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server API
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
            self.send_response(503 if fails(body.get("items", [])) else 200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *a: object) -> None:
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def _cluster(tmp_path, name: str, flags: list[str], policy: str | None, srv: ThreadingHTTPServer) -> LocalCluster:
    """A local apiserver auditing to ``srv`` with the request timeout of these tests (and ``policy`` when given)."""
    policy_file = None
    if policy is not None:
        policy_file = tmp_path / "policy.yaml"
        policy_file.write_text(policy)
    return LocalCluster(name, flags=parse_flags(flags), policy=policy_file,
                        sink_url=f"http://127.0.0.1:{srv.server_address[1]}/audit",
                        extra_args=[f"--request-timeout={TIMEOUT:g}s"], state_root=tmp_path)


def _strict_past_timeout(tmp_path, policy: str | None) -> dict:
    """blocking-strict, the receiver answering 503 to the marked request's events only, a 3 s
    request timeout: what the client saw and when, and when the audit counters moved."""
    srv = _receiver(lambda items: any(MARKER in e.get("requestURI", "") for e in items))
    c = _cluster(tmp_path, f"strict-{os.getpid()}-{policy is None:d}", STRICT, policy, srv)
    c.up()
    out: dict = {"rejected_at": None, "error_at": None}
    try:
        s = c.session()
        t0 = time.monotonic()
        try:
            out["status"] = s.get(f"{c.server}/api/v1/namespaces/default/configmaps?{MARKER}", timeout=60).status_code
        except requests.ConnectionError:
            out["status"] = 0  # the connection closed without an answer
        out["answered"] = time.monotonic() - t0
        settle = None
        while time.monotonic() < t0 + 20 and (settle is None or time.monotonic() < settle):
            m = s.get(c.metrics_url, timeout=10).text
            now = time.monotonic() - t0
            if out["rejected_at"] is None and _metric(m, "apiserver_audit_requests_rejected_total") >= 1:
                out["rejected_at"] = now
            if out["error_at"] is None and _metric(m, 'apiserver_audit_error_total{plugin="webhook"}') >= 1:
                out["error_at"] = now
                settle = time.monotonic() + 1.0  # the rejection, if any, is counted right after the error
            time.sleep(0.2)
        s.close()
    finally:
        c.down()
        srv.shutdown()
        srv.server_close()
    return out


def _predict_strict(omit: frozenset[str]) -> dict:
    """The simulator: one such request, every attempt failing, the same flags and timeout, SIGTERM
    after the retry chain (the real server was not stopped while it was watched)."""
    one = RequestClass("get", level="Metadata", omit_stages=omit)
    w = Workload(Arrivals("trace", trace=(0.0,)), 20.0, (one,))
    sc = replace(Scenario(flags=parse_flags(STRICT), workload=w, receiver=Receiver(error_rate=1.0)),
                 request_timeout=TIMEOUT).validate()
    return run(sc, engine="fast").to_dict(series=False)


def test_blocking_strict_request_received_past_the_timeout_is_a_504_then_a_rejection(stack_binaries, tmp_path):
    """The RequestReceived call blocks: nothing written at the deadline, the timeout filter answers
    504; the rejection is counted when the retry chain gives up, long after."""
    real = _strict_past_timeout(tmp_path, ALL_STAGES_POLICY)
    d = _predict_strict(frozenset())
    assert d["requests_timed_out"] == d["requests_timed_out_504"] == 1 and d["requests_closed_at_timeout"] == 0
    assert real["status"] == 504 and TIMEOUT <= real["answered"] < TIMEOUT + 0.5
    assert d["requests_rejected"] == d["requests_rejected_after_timeout"] == d["errors"]["webhook"] == 1
    sim_at = d["rejected_after_timeout_seconds"]["max"]
    assert real["rejected_at"] is not None and real["error_at"] is not None, real
    assert abs(real["rejected_at"] - sim_at) <= CHAIN_TOL and abs(real["error_at"] - sim_at) <= CHAIN_TOL, (real, sim_at)
    assert d["first_drop_seconds"] == sim_at


def test_blocking_strict_response_complete_past_the_timeout_closes_the_connection(stack_binaries, tmp_path):
    """The default policy omits RequestReceived: the handler writes its answer, then WithAudit's
    ResponseComplete call blocks; at the deadline the timeout writer can only abort (connection
    closed, no answer), and a failed ResponseComplete is never a rejection."""
    real = _strict_past_timeout(tmp_path, None)
    d = _predict_strict(frozenset({"RequestReceived"}))
    assert d["requests_timed_out"] == d["requests_closed_at_timeout"] == 1 and d["requests_timed_out_504"] == 0
    assert real["status"] == 0 and TIMEOUT <= real["answered"] < TIMEOUT + 0.5
    assert d["requests_rejected"] == 0 and real["rejected_at"] is None
    assert d["errors"]["webhook"] == 1 and real["error_at"] is not None, real
    assert abs(real["error_at"] - d["first_drop_seconds"]) <= CHAIN_TOL, (real, d["first_drop_seconds"])


EARLY, LATE = "labelSelector=audit-tune-early", "labelSelector=audit-tune-late"
EARLY_LEAD = 10.5  # the early request's retry chain (8.1-9.75 s and its POSTs) ends before the late one
# a blocking call stuck in its retry chain at SIGTERM (1 s after its request): sixteen runs (blocking
# and blocking-strict with RequestReceived or ResponseComplete blocking, three each, the late request
# alone; this test's two cases, two each) exited 0.124-0.274 s after the simulator's exit (the
# request's 3 s timeout), with three POSTs sent and no error or rejection logged for it every time
EXIT_TOL = 0.6


def _outlive(tmp_path, mode: str, policy: str | None) -> dict:
    """An early request whose retry chain ends before SIGTERM (its error and rejection show that
    they are logged), then a late one still retrying at SIGTERM 1 s after it: the process's exit,
    and what the receiver and the apiserver's log saw of each."""
    posts: list[str] = []

    def fails(items: list[dict]) -> bool:
        mine = [m for e in items for m in (EARLY, LATE) if m in e.get("requestURI", "")]
        posts.extend(mine)
        return bool(mine)

    srv = _receiver(fails)
    c = _cluster(tmp_path, f"outlive-{os.getpid()}-{mode}", [f"--audit-webhook-mode={mode}", *STRICT[1:]], policy, srv)
    c.up()
    out: dict = {}

    def get(marker: str) -> None:
        s = c.session()
        try:
            out[marker] = s.get(f"{c.server}/api/v1/namespaces/default/configmaps?{marker}", timeout=60).status_code
        except requests.ConnectionError:
            out[marker] = 0  # closed without an answer
        s.close()

    try:
        t_early = time.monotonic()
        threads = [threading.Thread(target=get, args=(EARLY,), daemon=True)]
        threads[0].start()
        time.sleep(EARLY_LEAD)
        t_late = time.monotonic()
        threads.append(threading.Thread(target=get, args=(LATE,), daemon=True))
        threads[1].start()
        time.sleep(1.0)
        api = next(p for p in c.processes if p.name == "kube-apiserver")
        t_term = time.monotonic()
        os.kill(api.pid, signal.SIGTERM)
        while api.alive() and time.monotonic() < t_term + 30:
            time.sleep(0.01)
        out["exit"] = time.monotonic() - t_early
        for t in threads:
            t.join(timeout=10)
        log = c.apiserver_log.read_text(errors="replace")
    finally:
        c.down()
        srv.shutdown()
        srv.server_close()
    out.update(late_at=t_late - t_early, sigterm=t_term - t_early)
    for m in (EARLY, LATE):
        out[f"posts {m}"] = posts.count(m)
        # HandlePluginError logs each impacted event (AUDIT: ... uri="...") after its error line
        out[f"errors {m}"] = len(re.findall(r'AUDIT: .*uri="[^"]*' + re.escape(m), log))
    out["rejections"] = log.count("failed to store audit event")  # responsewriters.InternalError's log line
    return out


def _predict_outlive(mode: str, omit: frozenset[str], real: dict) -> dict:
    """The simulator on the real run's timeline: the early request at 0, the late one and the
    SIGTERM (the run's end) when the real ones came."""
    one = RequestClass("get", level="Metadata", omit_stages=omit)
    w = Workload(Arrivals("trace", trace=(0.0, real["late_at"])), real["sigterm"], (one,))
    sc = replace(Scenario(flags=parse_flags([f"--audit-webhook-mode={mode}", *STRICT[1:]]), workload=w,
                          receiver=Receiver(error_rate=1.0)), request_timeout=TIMEOUT).validate()
    return run(sc, engine="fast").to_dict(series=False)


@pytest.mark.parametrize("mode,policy,late_status", [("blocking-strict", ALL_STAGES_POLICY, 504), ("blocking", None, 0)],
                         ids=["strict-request-received", "blocking-response-complete"])
def test_a_blocking_call_outliving_the_process_is_cut_off_at_its_exit(stack_binaries, tmp_path, mode, policy, late_status):
    """The drain wait group lets the late request go at its 3 s timeout (504 while RequestReceived
    blocks; a closed connection once ResponseComplete blocks) and the webhook's Shutdown does not
    wait: the process exits then, its retry chain cut off after three POSTs, no error, no rejection."""
    real = _outlive(tmp_path, mode, policy)
    omit = frozenset() if policy is not None else frozenset({"RequestReceived"})
    d = _predict_outlive(mode, omit, real)
    strict_rr = mode == "blocking-strict" and policy is not None
    # the early request: its chain gave up before SIGTERM, counted on both sides
    assert real[EARLY] == late_status and real[f"posts {EARLY}"] == 5 and real[f"errors {EARLY}"] == 1, real
    assert real["rejections"] == d["requests_rejected"] == (1 if strict_rr else 0), real
    assert d["errors"]["webhook"] == 1
    # the late one: cut off at the exit
    assert real[LATE] == late_status and real[f"posts {LATE}"] == 3 and real[f"errors {LATE}"] == 0, real
    assert d["blocking_calls_at_exit"] == 1 and d["delivered"] == 0
    assert d["attempts"] == real[f"posts {EARLY}"] + real[f"posts {LATE}"]
    assert d["requests_timed_out"] == 2 and d["requests_timed_out_504" if late_status else "requests_closed_at_timeout"] == 2
    assert d["simulated_seconds"] == pytest.approx(real["late_at"] + TIMEOUT)
    assert 0.0 <= real["exit"] - d["simulated_seconds"] < EXIT_TOL, (real, d["simulated_seconds"])
