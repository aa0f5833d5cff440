"""Oracle experiments behind docs/oracle-findings.md (run: python3 scripts/oracle_findings.py [a b c d e f g h i]).

Each experiment runs the real k8s.io/apiserver audit backends through sim.oracle.run_oracle and
prints the measured numbers. Build first: bash scripts/build-oracle.sh
"""
from __future__ import annotations

import json
import random
import statistics
import sys
from collections import Counter
from typing import Any

from audit_tune.sim.oracle import run_oracle

NO_THROTTLE = {"audit-webhook-batch-throttle-enable": "false"}


def doc(offsets: list[float], flags: dict[str, str], **kw: Any) -> dict[str, Any]:
    d: dict[str, Any] = {
        "format": "audit-tune-trace/v1", "seed": kw.pop("seed", 1), "backend": kw.pop("backend", "webhook"),
        "delegate": kw.pop("delegate", "model"), "flags": flags,
        "instances": [{"name": "apiserver-0", "offsets": offsets, "sizes": [850] * len(offsets)}],
        "stop_at": kw.pop("stop_at", max(offsets)), "detail": True,
    }
    d.update(kw)
    return d


def idx(audit_id: str) -> int:
    return int(audit_id.rsplit("-", 1)[1], 16)


def exp_a() -> dict[str, Any]:
    """(a) which statuses are retried by the real webhook backend: attempts for one 5-event batch."""
    res = {}
    for status in (400, 401, 403, 404, 409, 413, 422, 429, 500, 501, 502, 503, 504):
        flags = {**NO_THROTTLE, "audit-webhook-batch-max-size": "5", "audit-webhook-initial-backoff": "10ms"}
        out = run_oracle(doc([0.0] * 5, flags, delegate="real-webhook", stop_at=0.02,
                             webhook={"error_rate": 1.0, "error_status": status}), timeout=60)
        res[status] = {"batches": out["batches"], "attempts": out["attempts"], "by_code": out["attempts_by_code"],
                       "errors.webhook": out["errors"]["webhook"]}
    return res


def exp_b() -> dict[str, Any]:
    """(b) total time of a failing batch and each retry sleep, in units of initial-backoff."""
    initial = 0.2
    flags = {**NO_THROTTLE, "audit-webhook-batch-max-size": "1",
             "audit-webhook-initial-backoff": f"{int(initial * 1000)}ms"}
    offsets = [i * 0.01 for i in range(20)]
    out = run_oracle(doc(offsets, flags, delegate="real-webhook", stop_at=0.2,
                         webhook={"error_rate": 1.0, "error_status": 503}), timeout=120)
    totals = [(b["end"] - b["start"]) / initial for b in out["batches_detail"]]
    by_batch: dict[int, list[dict[str, Any]]] = {}
    for r in out["requests_detail"]:
        by_batch.setdefault(idx(r["first_audit_id"]), []).append(r)
    sleeps: list[list[float]] = [[], [], [], []]
    for reqs in by_batch.values():
        reqs.sort(key=lambda r: r["arrive"])
        for k in range(1, len(reqs)):
            # gap between the end of attempt k-1 (answer sent) and the arrival of attempt k
            sleeps[k - 1].append((reqs[k]["arrive"] - reqs[k - 1]["end"]) / initial)
    rtt = [r["end"] - r["arrive"] for r in out["requests_detail"]]
    return {
        "initial_backoff_s": initial, "batches": out["batches"], "attempts": out["attempts"],
        "attempts_per_batch": sorted(Counter(len(v) for v in by_batch.values()).items()),
        "total_over_initial": {"min": min(totals), "mean": statistics.mean(totals), "max": max(totals)},
        "sleep_over_initial": [{"min": min(s), "mean": statistics.mean(s), "max": max(s)} for s in sleeps],
        "server_time_per_attempt_ms_max": max(rtt) * 1000,
    }


def exp_c() -> dict[str, Any]:
    """(c) timer fired while events are waiting: batch close point.

    Sync log delegate (the collector is blocked in the first write by a 0.5 s stall) so 2000 events
    pile up in the buffer; then the collector resets its max-wait timer and drains."""
    res: dict[str, Any] = {}
    offsets = sorted(0.01 + 0.3 * i / 2000 for i in range(2000))
    for wait in ("0s", "20us", "10ms"):
        flags = {"audit-log-mode": "batch", "audit-log-batch-buffer-size": "10000",
                 "audit-log-batch-max-size": "100", "audit-log-batch-max-wait": wait}
        out = run_oracle(doc(offsets, flags, backend="log", stop_at=0.6,
                             log={"stalls": [{"start": 0.0, "end": 0.5}]}), timeout=120)
        sizes = out["batch_sizes"][1:]  # the first batch was taken before the pile-up
        drain = [s for s, t in zip(out["batch_sizes"], out["batch_dispatch_seconds"]) if t >= 0.5]
        res[wait] = {
            "batches": out["batches"], "delivered": out["delivered"],
            "mean_size_after_stall": statistics.mean(sizes) if sizes else None,
            "size_hist_first10": sorted(Counter(drain).items())[:10],
            "share_full_100": sum(1 for s in drain if s == 100) / max(1, len(drain)),
        }
    # geometric check for 0s: P(size=k) = 2^-k among non-empty batches
    return res


def exp_d() -> dict[str, Any]:
    """(d) truncate placement: truncate(buffered(delegate)) as options.ApplyTo vs the counterfactual."""
    flags = {**NO_THROTTLE, "audit-webhook-batch-max-size": "10", "audit-webhook-truncate-enabled": "true",
             "audit-webhook-truncate-max-batch-size": "2000", "audit-webhook-truncate-max-event-size": "1000"}
    outer = run_oracle(doc([0.0] * 40, flags, stop_at=0.05, delegate="real-webhook"), timeout=60)
    inner = run_oracle(doc([0.0] * 40, flags, stop_at=0.05, truncate_placement="inner",
                           delegate="real-webhook"), timeout=60)
    return {"outer_batch_sizes": outer["batch_sizes"], "outer_requests": outer["receiver"]["requests"],
            "inner_batch_sizes": inner["batch_sizes"], "inner_requests": inner["receiver"]["requests"],
            "event_bytes": 850}


def exp_e() -> dict[str, Any]:
    """(e) lone events: wait from arrival to dispatch, vs Uniform(0, max-wait) from window start.

    Three instances (three independent buffered backends) run at once to triple the sample."""
    wait = 0.1
    insts = []
    for i in range(3):
        rng = random.Random(7 + i)
        t, offsets = 0.05, []
        while len(offsets) < 120:
            offsets.append(round(t, 6))
            t += rng.uniform(0.11, 0.31)  # > max-wait: at most one event per window
        insts.append({"name": f"apiserver-{i}", "offsets": offsets, "sizes": [850] * len(offsets)})
    flags = {**NO_THROTTLE, "audit-webhook-batch-max-size": "400", "audit-webhook-batch-max-wait": "100ms"}
    d = doc([0.0], flags, stop_at=max(x["offsets"][-1] for x in insts) + 0.3)
    d["instances"] = insts
    out = run_oracle(d, timeout=120)
    ev = out["events_detail"]
    waits = sorted((e["delivered"] - e["created"]) / wait for e in ev if e["delivered"] is not None)
    n = len(waits)
    ks = max(max(abs((i + 1) / n - min(w, 1.0)), abs(i / n - min(w, 1.0))) for i, w in enumerate(waits))
    # window lattice: with no events a window is max-wait long and restarts right after the
    # previous dispatch, so consecutive dispatches are k windows apart (+ timer lateness per window)
    late = []
    first_k = []
    for inst in insts:
        starts = [b["start"] for b in out["batches_detail"] if b["instance"] == inst["name"]]
        first_k.append((starts[0] - out["run_returned_seconds"]) / wait)
        for a, b in zip(starts, starts[1:]):
            k = max(1, round((b - a) / wait))
            late.append((b - a - k * wait) / k * 1000)
    return {
        "events": n, "batch_sizes_all_1": all(s == 1 for s in out["batch_sizes"]),
        "wait_over_maxwait": {"min": waits[0], "p10": waits[n // 10], "p50": waits[n // 2],
                              "p90": waits[9 * n // 10], "max": waits[-1], "mean": statistics.mean(waits)},
        "ks_vs_uniform": ks, "ks_5pct_critical": 1.36 / n ** 0.5,
        "window_lateness_ms": {"p50": statistics.median(late), "p90": sorted(late)[9 * len(late) // 10],
                               "mean": statistics.mean(late)},
        "share_wait_over_maxwait": sum(1 for w in waits if w > 1.0) / n,
        "first_dispatch_in_windows_from_run": first_k,
    }


def exp_f() -> dict[str, Any]:
    """(f) log batch mode with max-size > 1 and max-wait 0: idle busy-spin (CPU seconds over 2 s idle)."""
    res = {}
    for wait in ("0s", "1s"):
        flags = {"audit-log-mode": "batch", "audit-log-batch-max-size": "100", "audit-log-batch-max-wait": wait}
        out = run_oracle(doc([0.0], flags, backend="log", stop_at=2.0), timeout=60)
        res[wait] = {"cpu_seconds": out["cpu_seconds"], "wall_seconds": out["wall_seconds"]}
    return res


def exp_h() -> dict[str, Any]:
    """(h) hang: the real 30 s client timeout per attempt (runs ~60 s)."""
    flags = {**NO_THROTTLE, "audit-webhook-batch-max-size": "1", "audit-webhook-initial-backoff": "10ms"}
    out = run_oracle(doc([0.0], flags, delegate="real-webhook", stop_at=0.01,
                         webhook={"outages": [{"start": 0.0, "end": 35.0, "kind": "hang"}]}), timeout=200)
    reqs = sorted(out["requests_detail"], key=lambda r: r["arrive"])
    return {"attempts": out["attempts"], "by_code": out["attempts_by_code"], "delivered": out["delivered"],
            "attempt_arrivals_s": [round(r["arrive"], 3) for r in reqs],
            "attempt_server_durations_s": [round(r["end"] - r["arrive"], 3) for r in reqs],
            "batch_seconds": out["batches_detail"][0]["end"] - out["batches_detail"][0]["start"]}


def exp_g() -> dict[str, Any]:
    """(g) the throttle bucket starts full: burst 3, qps 5, 10 one-event batches at t=0."""
    flags = {"audit-webhook-batch-max-size": "1", "audit-webhook-batch-throttle-qps": "5",
             "audit-webhook-batch-throttle-burst": "3"}
    out = run_oracle(doc([0.0] * 10, flags, stop_at=0.0), timeout=60)
    return {"dispatch_s": [round(t, 3) for t in out["batch_dispatch_seconds"]], "errors": out["errors"]}


def exp_i() -> dict[str, Any]:
    """(i) an event arriving after stopCh closed and the buffer was closed: counted under buffered."""
    flags = {**NO_THROTTLE, "audit-webhook-batch-max-size": "10", "audit-webhook-batch-max-wait": "1s"}
    out = run_oracle(doc([0.0, 0.0, 0.5], flags, stop_at=0.2), timeout=60)
    return {"batch_sizes": out["batch_sizes"], "errors": out["errors"], "delivered": out["delivered"],
            "consistent": out["checks"]["consistent"]}


if __name__ == "__main__":
    names = sys.argv[1:] or ["a", "b", "c", "d", "e", "f", "g", "i"]  # "h" takes ~60 s
    for name in names:
        print(json.dumps({name: globals()[f"exp_{name}"]()}, default=str), flush=True)
