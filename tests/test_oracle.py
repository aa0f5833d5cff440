"""The Go oracle against hand-built traces whose answer is known from the upstream code.

These run the REAL k8s.io/apiserver audit backends in real time (a few seconds each). The
session fixture builds the oracle with scripts/build-oracle.sh, so a fresh clone builds it; a
failed build fails the tests (they never skip).
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from audit_tune.basics.errors import BuildMissingError, InputError, TimeoutExceeded
from audit_tune.sim.oracle import oracle_binary, run_oracle

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.oracle


@pytest.fixture(scope="session", autouse=True)
def oracle_built() -> Path:
    proc = subprocess.run(
        ["bash", str(REPO / "scripts" / "build-oracle.sh")],
        capture_output=True, text=True, timeout=900, check=False,
    )
    if proc.returncode != 0:
        pytest.fail(f"bash scripts/build-oracle.sh failed:\n{proc.stdout}\n{proc.stderr}")
    sys.stderr.write(proc.stdout)
    return oracle_binary()


def trace(
    offsets: list[float],
    flags: dict[str, str],
    *,
    backend: str = "webhook",
    delegate: str = "model",
    stop_at: float | None = None,
    webhook: dict[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "format": "audit-tune-trace/v1",
        "seed": 1,
        "backend": backend,
        "delegate": delegate,
        "flags": flags,
        "instances": [{"name": "apiserver-0", "offsets": offsets, "sizes": [850] * len(offsets)}],
        "stop_at": max(offsets) if stop_at is None else stop_at,
        "webhook": webhook or {},
    }
    doc.update(extra)
    return doc


NO_THROTTLE = {"audit-webhook-batch-throttle-enable": "false"}


def test_size_trigger_then_shutdown_flush() -> None:
    # 25 events at t=0, max-size 10, max-wait 1s: two full batches at once, the 5 left are sent
    # when stopCh closes (t=0.3), before the 1 s window would end.
    flags = {**NO_THROTTLE, "audit-webhook-batch-max-size": "10", "audit-webhook-batch-max-wait": "1s"}
    out = run_oracle(trace([0.0] * 25, flags, stop_at=0.3), timeout=30)
    assert out["batch_sizes"] == [10, 10, 5]
    assert out["events_total"] == 25 and out["delivered"] == 25
    assert out["errors"] == {"buffered": 0, "webhook": 0, "log": 0, "truncate": 0}
    t = out["batch_dispatch_seconds"]
    assert t[0] < 0.1 and t[1] < 0.1
    assert 0.29 <= t[2] < 0.5  # the shutdown flush, not the 1 s timer
    assert out["checks"]["consistent"] is True
    assert out["arrival_lag_seconds"]["max"] < 0.1
    assert out["versions"]["k8s.io/apiserver"] == "v0.37.2"


def test_size_trigger_then_window_close() -> None:
    flags = {**NO_THROTTLE, "audit-webhook-batch-max-size": "10", "audit-webhook-batch-max-wait": "400ms"}
    out = run_oracle(trace([0.0] * 25, flags, stop_at=0.8), timeout=30)
    assert out["batch_sizes"] == [10, 10, 5]
    # the window restarts after each dispatch (~t=0), so the third batch closes at ~0.4 s
    assert 0.38 <= out["batch_dispatch_seconds"][2] < 0.6


def test_max_size_one_has_no_timer() -> None:
    flags = {**NO_THROTTLE, "audit-webhook-batch-max-size": "1", "audit-webhook-batch-max-wait": "10s"}
    out = run_oracle(trace([0.0, 0.05, 0.1, 0.15], flags, stop_at=0.3), timeout=30)
    assert out["batch_sizes"] == [1, 1, 1, 1]
    assert out["delivery_latency_seconds"]["max"] < 0.05


def test_buffer_overflow_counted_by_real_counter() -> None:
    # buffer 5, max-size 1, throttle 2 qps / burst 1, 20 events 10 ms apart: the collector takes
    # event 1 (the bucket starts full: dispatched), takes event 2 and blocks ~0.5 s in
    # throttle.Accept; events 3-7 fill the buffer; events 8-20 hit the non-blocking send and are
    # dropped. (Spacing the events keeps the count exact: with all 20 at the same instant the
    # real code drops 13, 14 or 15 depending on when the collector goroutine first runs.)
    flags = {
        "audit-webhook-batch-buffer-size": "5",
        "audit-webhook-batch-max-size": "1",
        "audit-webhook-batch-throttle-enable": "true",
        "audit-webhook-batch-throttle-qps": "2",
        "audit-webhook-batch-throttle-burst": "1",
    }
    offsets = [0.05 + 0.01 * i for i in range(20)]
    out = run_oracle(trace(offsets, flags, stop_at=0.3), timeout=30)
    assert out["errors"]["buffered"] == 13  # apiserver_audit_error_total{plugin="buffered"}
    assert out["checks"]["errors_from_layers"]["buffered"] == 13
    assert out["delivered"] == 7 and out["batches"] == 7
    # the shutdown drain is still throttled: one batch per 0.5 s after the first
    gaps = [b - a for a, b in zip(out["batch_dispatch_seconds"], out["batch_dispatch_seconds"][1:])]
    assert all(g > 0.45 for g in gaps)


def test_burst_at_once_drops_counted_by_real_counter() -> None:
    # the brief's literal case: 20 events at once, buffer 5, throttle qps 1 / burst 1. The exact
    # count depends on whether the collector goroutine ran before the burst (13..15), but the
    # real counter, the layer accounting and the deliveries must agree.
    flags = {
        "audit-webhook-batch-buffer-size": "5",
        "audit-webhook-batch-max-size": "1",
        "audit-webhook-batch-throttle-enable": "true",
        "audit-webhook-batch-throttle-qps": "1",
        "audit-webhook-batch-throttle-burst": "1",
    }
    out = run_oracle(trace([0.0] * 20, flags, stop_at=0.0), timeout=30)
    drops = out["errors"]["buffered"]
    assert 13 <= drops <= 15
    assert out["checks"]["errors_from_layers"]["buffered"] == drops
    assert out["delivered"] + drops == 20


def test_real_webhook_500_is_retried_five_times_then_dropped() -> None:
    flags = {
        **NO_THROTTLE,
        "audit-webhook-batch-max-size": "10",
        "audit-webhook-batch-max-wait": "100ms",
        "audit-webhook-initial-backoff": "20ms",
    }
    web = {"error_rate": 1.0, "error_status": 500}
    out = run_oracle(trace([0.0] * 25, flags, delegate="real-webhook", stop_at=0.2, webhook=web), timeout=30)
    assert out["batches"] == 3
    assert out["attempts"] == 15 and out["attempts_by_code"] == {"500": 15}
    assert out["receiver"]["requests"] == 15
    assert out["errors"]["webhook"] == 25  # apiserver_audit_error_total{plugin="webhook"}
    assert out["delivered"] == 0
    assert out["checks"]["consistent"] is True


@pytest.mark.parametrize("status", [400, 413])
def test_real_webhook_retries_4xx_too(status: int) -> None:
    flags = {**NO_THROTTLE, "audit-webhook-batch-max-size": "5", "audit-webhook-initial-backoff": "10ms"}
    web = {"error_rate": 1.0, "error_status": status}
    out = run_oracle(trace([0.0] * 5, flags, delegate="real-webhook", stop_at=0.05, webhook=web), timeout=30)
    assert out["batches"] == 1
    assert out["attempts"] == 5 and out["attempts_by_code"] == {str(status): 5}
    assert out["errors"]["webhook"] == 5


def test_real_webhook_success_and_latency() -> None:
    flags = {**NO_THROTTLE, "audit-webhook-batch-max-size": "4", "audit-webhook-batch-max-wait": "1s"}
    web = {"latency_seconds": 0.1}
    out = run_oracle(trace([0.0] * 8, flags, delegate="real-webhook", stop_at=0.05, webhook=web), timeout=30)
    assert out["batch_sizes"] == [4, 4]
    assert out["delivered"] == 8 and out["attempts"] == 2 and out["errors"]["webhook"] == 0
    lat = out["delivery_latency_seconds"]
    assert 0.1 <= lat["p50"] < 0.4 and lat["max"] < 0.5


def test_async_slow_webhook_runs_batches_concurrently() -> None:
    # one batch every 50 ms (max-size 1), each POST takes 300 ms: ~6 in flight at once
    flags = {**NO_THROTTLE, "audit-webhook-batch-max-size": "1"}
    offsets = [i * 0.05 for i in range(20)]
    web = {"latency_seconds": 0.3}
    out = run_oracle(trace(offsets, flags, delegate="real-webhook", webhook=web), timeout=30)
    assert out["delivered"] == 20
    assert out["max_inflight_batches"] >= 4
    assert out["receiver"]["max_inflight_requests"] >= 4


def test_sync_log_delegate_blocks_the_collector() -> None:
    # log backend in batch mode: AsyncDelegate=false, so a 200 ms write runs on the collector
    flags = {
        "audit-log-mode": "batch",
        "audit-log-batch-max-size": "5",
        "audit-log-batch-max-wait": "50ms",
    }
    doc = trace([0.0] * 15, flags, backend="log", stop_at=0.0, log={"write_seconds": 0.2})
    out = run_oracle(doc, timeout=30)
    assert out["max_inflight_batches"] == 1
    assert out["delivered"] == 15 and out["batches"] >= 3
    t = out["batch_dispatch_seconds"]
    assert all(b - a >= 0.19 for a, b in zip(t, t[1:]))


def test_refuse_outage_then_recovery_real_connections() -> None:
    # the listener is closed for 0..0.3 s: attempts fail with connection refused (code <error>),
    # the real retry loop (backoff 50 ms x1.5, jitter 0.2) reaches past 0.3 s and succeeds
    flags = {**NO_THROTTLE, "audit-webhook-batch-max-size": "3", "audit-webhook-initial-backoff": "50ms"}
    web = {"outages": [{"start": 0.0, "end": 0.3, "kind": "refuse"}]}
    out = run_oracle(trace([0.01] * 3, flags, delegate="real-webhook", stop_at=0.02, webhook=web), timeout=30)
    assert out["delivered"] == 3 and out["errors"]["webhook"] == 0
    assert out["attempts_by_code"].get("<error>", 0) >= 2
    assert out["attempts_by_code"].get("200") == 1
    assert out["delivery_latency_seconds"]["p50"] >= 0.28


def test_blocking_mode_calls_webhook_per_event_and_two_instances() -> None:
    # audit-webhook-mode=blocking: no buffered backend, each event is its own POST from its own
    # request goroutine; two instances share the receiver
    doc = trace([0.0, 0.01, 0.02], {"audit-webhook-mode": "blocking"}, delegate="real-webhook",
                stop_at=0.05, webhook={"latency_seconds": 0.1})
    doc["instances"].append({"name": "apiserver-1", "offsets": [0.0, 0.01]})
    out = run_oracle(doc, timeout=30)
    assert out["batch_sizes"] == [1] * 5 and out["delivered"] == 5
    assert out["max_inflight_batches"] >= 4 and out["attempts"] == 5
    assert [i["events_total"] for i in out["instances"]] == [3, 2]


def test_truncate_outside_buffered_does_not_split_batches() -> None:
    # options.ApplyTo builds truncate(buffered(webhook)): truncate sees one event per call, so
    # a 2000-byte truncate max-batch-size does not split the 10-event (≈8.5 KB) buffered batches
    flags = {
        **NO_THROTTLE,
        "audit-webhook-batch-max-size": "10",
        "audit-webhook-truncate-enabled": "true",
        "audit-webhook-truncate-max-batch-size": "2000",
        "audit-webhook-truncate-max-event-size": "1000",
    }
    out = run_oracle(trace([0.0] * 20, flags, stop_at=0.05), timeout=30)
    assert out["batch_sizes"] == [10, 10] and out["errors"]["truncate"] == 0
    inner = run_oracle(trace([0.0] * 20, flags, stop_at=0.05, truncate_placement="inner"), timeout=30)
    assert inner["batch_sizes"] == [2] * 10  # what a split would look like (not how kube-apiserver wires it)


def test_truncate_drops_oversized_metadata_event() -> None:
    flags = {
        **NO_THROTTLE,
        "audit-webhook-truncate-enabled": "true",
        "audit-webhook-truncate-max-event-size": "1000",
    }
    doc = trace([0.0, 0.0, 0.0], flags, stop_at=0.05)
    doc["instances"][0]["sizes"] = [850, 5000, 850]
    out = run_oracle(doc, timeout=30)
    assert out["errors"]["truncate"] == 1 and out["delivered"] == 2


def test_bad_input_is_one_line_input_error() -> None:
    with pytest.raises(InputError, match=r"batch-max-size"):
        run_oracle(trace([0.0], {"audit-webhook-batch-max-size": "lots"}), timeout=30)


def test_timeout_kills_the_oracle() -> None:
    with pytest.raises(TimeoutExceeded):
        run_oracle(trace([0.0], NO_THROTTLE, stop_at=5.0), timeout=0.5)


def test_missing_binary_raises_build_missing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AUDIT_TUNE_CACHE", str(tmp_path))
    with pytest.raises(BuildMissingError, match="oracle not built: run bash scripts/build-oracle.sh"):
        oracle_binary()
    with pytest.raises(BuildMissingError):
        run_oracle(trace([0.0], NO_THROTTLE))
