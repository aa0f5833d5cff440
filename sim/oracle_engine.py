"""Engine ``oracle``: run a :class:`Scenario` through the REAL ``k8s.io/apiserver`` audit backends.

``run(sc)`` compiles the scenario into ``audit-tune-trace/v1`` documents (``docs/oracle-io.md``),
one per enabled backend, replays them in real time with :func:`sim.oracle.run_oracle` and
converts the output into the same :class:`sim.result.Result` the simulator engines return
(``engine="oracle"``), so ``.to_dict()`` has the same field names.

Compilation:

* arrivals: per instance, the event times and sizes of :func:`sim.workload.iter_events` (the very
  stream the fast and reference engines consume) become ``offsets`` / ``sizes``;
* ``stop_at``: when the simulator closes stopCh (``sim.shutdown``: once the non-long-running
  requests have drained); events after it are offered to the real backend too, which counts those
  after its channel closed as ``error_total{plugin="buffered"}``;
* ``flags``: ``sc.flags.to_dict()`` (kube-apiserver spelling);
* webhook backend: delegate ``real-webhook`` (the real client-go client, retries and timeouts
  against an in-process HTTPS receiver); log backend: delegate ``model`` (a sleep per batch);
* receiver: fixed latency -> ``latency_seconds``; any other distribution -> ``latency_samples_seconds``
  (2,000 quantiles of it, one drawn uniformly per attempt by the oracle); ``per_kib`` with one
  event size -> ``latency_per_event_seconds``; ``error_rate``/``error_status``; outages;
* log writer: ``per_batch`` -> ``write_seconds``, fixed ``per_event`` -> ``write_per_event_seconds``.

Not representable (each refused with a one-line :class:`InputError` naming it): blocking modes,
``--no-drain``, ``--restart-at`` (the kill and the new instance are the server's, not the backends'),
events after the HTTP server's shutdown timeout (the process exit is the server's), ``per_inflight``, ``per_kib`` with mixed event sizes, ``max_body_bytes``, a receiver
timeout other than the client's 30 s, log write failures or a non-fixed log write cost, truncation
of Request/RequestResponse events (the oracle's synthetic events are Metadata level).

Not measured by the oracle (reported as 0, listed in ``oracle.not_measured``): buffer occupancy,
peak memory, throttle wait. ``first_drop_seconds`` is known only for webhook drops (end of the
first failed batch). ``attempts`` (client-side ``rest_client_requests_total``) is one counter for
all instances; with several instances it is reported on the first one.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import cast

import numpy as np

from audit_tune.basics.errors import InputError
from audit_tune.basics.jsondata import JsonObject, JsonValue
from audit_tune.sim.oracle import TRACE_FORMAT, OracleResult, run_oracle
from audit_tune.sim.result import BackendStats, InstanceStats, Result
from audit_tune.sim.scenario import Scenario, result_config
from audit_tune.sim.shutdown import Plan
from audit_tune.sim.workload import LEVELS, iter_events

ENGINE = "oracle"
NOT_MEASURED = ("max_buffer_occupancy", "occupancy", "peak_memory_bytes", "throttle_wait_seconds_total")
LATENCY_SAMPLES = 2000


def _refuse(what: str) -> InputError:
    return InputError(f"--engine oracle: {what} is not supported by the oracle")


def compile_scenario(sc: Scenario) -> tuple[list[JsonObject], list[str], list[dict[str, int]]]:
    """The oracle input documents (one per enabled backend), the backend names in order, and per
    instance the requests by audit level (``apiserver_audit_level_total``, from the workload)."""
    sc.validate()
    if not sc.drain:
        raise _refuse("--no-drain (the real backends always shut down and drain)")
    for b in sc.enabled:
        mode = sc.flags.backend(b).mode
        if mode != "batch":
            raise _refuse(f"--audit-{b}-mode={mode} (only batch mode is replayed; request timing would depend on the backend)")
    if sc.shutdown.restart_at:
        raise _refuse("--restart-at (a kill and a new instance are the server's doing, not the backends')")
    w = sc.workload
    life = Plan(w, sc.shutdown, sc.request_timeout, sc.seed, 0).current
    instances: list[JsonValue] = []
    levels: list[dict[str, int]] = []
    last = 0.0
    sizes_seen: set[int] = set()
    for i in range(w.instances):
        ts, ss = [], []
        lv = {x: 0 for x in LEVELS}
        for ch in iter_events(w, sc.seed, i):
            ts.append(np.asarray(ch.t, dtype=float))
            ss.append(np.asarray(ch.size, dtype=np.int64))
            counts = getattr(ch, "class_counts", None)
            if counts is not None:
                for c, n in zip(w.classes, np.asarray(counts).tolist()):
                    lv[c.level] += int(n)
        levels.append(lv)
        t = np.concatenate(ts) if ts else np.empty(0)
        s = np.concatenate(ss) if ss else np.empty(0, dtype=np.int64)
        if len(t):
            last = max(last, float(t[-1]))
            sizes_seen.update(np.unique(s).tolist())
        instances.append({"name": f"apiserver-{i}", "offsets": cast(list[JsonValue], t.tolist()),
                          "sizes": cast(list[JsonValue], s.tolist())})
    for i in range(1, w.instances):
        if Plan(w, sc.shutdown, sc.request_timeout, sc.seed, i).current.drained != life.drained:
            raise _refuse("instances whose requests drain at different times (one stop_at for all)")
    if last > life.not_accepting + sc.request_timeout:
        raise _refuse(f"events after the HTTP server's shutdown timeout ({last:g}s > "
                      f"{life.not_accepting + sc.request_timeout:g}s: whether they are emitted is the server's exit)")
    stop_at = life.drained
    flags: JsonObject = dict(sc.flags.to_dict())
    for b in sc.enabled:
        if flags.get(f"audit-{b}-truncate-enabled") == "true" and any(c.level in ("Request", "RequestResponse") for c in w.classes):
            raise _refuse(f"--audit-{b}-truncate-enabled with Request/RequestResponse events (the oracle's events are Metadata level)")

    r = sc.receiver
    webhook: JsonObject = {"error_rate": r.error_rate, "error_status": r.error_status,
                               "outages": [{"start": o.start, "end": o.end, "kind": o.kind, "status": o.status,
                                            **({} if o.retry_after is None else {"retry_after": o.retry_after})}
                                           for o in r.outages]}
    if "webhook" in sc.enabled:
        if r.per_inflight:
            raise _refuse("--webhook-latency-per-inflight")
        if r.max_body_bytes:
            raise _refuse("--webhook-max-body (a receiver body limit)")
        if abs(r.timeout - 30.0) > 1e-9:
            raise _refuse(f"receiver.timeout={r.timeout:g}s (the real client timeout is 30s)")
        if r.latency.kind == "fixed":
            webhook["latency_seconds"] = r.latency.a
        else:
            u = (np.arange(LATENCY_SAMPLES) + 0.5) / LATENCY_SAMPLES
            webhook["latency_samples_seconds"] = [float(x) for x in r.latency.sample_array(u)]
        if r.per_kib:
            if len(sizes_seen) > 1:
                raise _refuse("--webhook-latency-per-kib with mixed event sizes")
            size = next(iter(sizes_seen), 0)
            webhook["latency_per_event_seconds"] = r.per_kib * size / 1024.0
    lw = sc.log_writer
    log: JsonObject = {"write_seconds": lw.per_batch, "write_per_event_seconds": 0.0}
    if "log" in sc.enabled:
        if lw.error_rate:
            raise _refuse("--log-failure-rate (log write failures)")
        if lw.per_event.kind != "fixed":
            raise _refuse(f"log write latency {lw.per_event.describe()} (only a fixed cost)")
        log["write_per_event_seconds"] = lw.per_event.a

    docs: list[JsonObject] = []
    for b in sc.enabled:
        docs.append({
            "format": TRACE_FORMAT, "seed": sc.seed, "backend": b,
            "delegate": "real-webhook" if b == "webhook" else "model",
            "flags": flags, "instances": instances, "stop_at": stop_at,
            "webhook": webhook, "log": log, "detail": True,
        })
    return docs, list(sc.enabled), levels


def _run_all(docs: list[JsonObject], timeout: float | None) -> list[OracleResult]:
    """Run the documents concurrently (the backends of a union are independent in batch mode)."""
    if len(docs) == 1:
        return [run_oracle(docs[0], timeout=timeout)]
    outs: list[OracleResult | BaseException | None] = [None] * len(docs)

    def one(k: int) -> None:
        try:
            outs[k] = run_oracle(docs[k], timeout=timeout)
        except BaseException as e:  # noqa: BLE001 - re-raised below in the caller's thread
            outs[k] = e

    threads = [threading.Thread(target=one, args=(k,)) for k in range(len(docs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    results: list[OracleResult] = []
    for o in outs:
        if isinstance(o, BaseException):
            raise o
        assert o is not None  # every thread set its slot
        results.append(o)
    return results


def _fill(bs: BackendStats, name: str, k: int, out: OracleResult, lat: list[float]) -> None:
    inst = out["instances"][k]
    for p, v in inst["errors"].items():
        bs.errors[p] += int(v)
    bs.delivered = int(inst["delivered"])
    bs.accepted = int(inst["events_total"]) - int(inst["errors"].get("buffered", 0)) - int(inst["errors"].get("truncate", 0))
    for n in inst["batch_sizes"]:
        bs.batch(int(n))
    bs.max_inflight = int(inst["max_inflight_batches"])
    if lat:
        bs.delivery.add(np.asarray(lat, dtype=float))
    fails = [b["end"] for b in out.get("batches_detail") or [] if b["instance"] == name and not b["ok"]]
    if fails:
        bs.first_drop = min(fails)
    if k == 0:
        bs.attempts = int(out.get("attempts", 0))
        for code, count in (out.get("attempts_by_code") or {}).items():
            bs.attempts_by_code[str(code)] += int(count)


def run(sc: Scenario, progress: Callable[[float], None] | None = None, timeout: float | None = None) -> Result:
    wall0 = time.perf_counter()
    docs, names, levels = compile_scenario(sc)
    outs = _run_all(docs, timeout)
    w = sc.workload
    insts: list[InstanceStats] = []
    end = 0.0
    for i in range(w.instances):
        iname = f"apiserver-{i}"
        bstats: dict[str, BackendStats] = {}
        for b, out in zip(names, outs):
            bs = BackendStats.of(sc, b)
            lat = [e["delivered"] - e["created"] for e in out.get("events_detail") or []
                   if e["instance"] == i and e["delivered"] is not None and e["created"] is not None]
            _fill(bs, iname, i, out, lat)
            bstats[b] = bs
            end = max(end, float(out["instances"][i].get("shutdown_done_seconds", 0.0)))
        st = InstanceStats(iname, bstats)
        st.events_total = int(outs[0]["instances"][i]["events_total"])
        for lv, n in levels[i].items():
            st.level_total[lv] += n
        st.requests_total = sum(st.level_total.values())
        insts.append(st)
    for st in insts:
        st.end_time = end
    if progress:
        progress(1.0)
    extra = {"oracle": {
        name: {k: out.get(k) for k in ("delegate", "versions", "arrival_lag_seconds", "stall_seconds", "checks", "cpu_seconds",
                                        "receiver", "receiver_errors", "run_returned_seconds", "effective",
                                        "wall_seconds")}
        for name, out in zip(names, outs)
    } | {"not_measured": list(NOT_MEASURED)}}
    primary = "webhook" if "webhook" in sc.enabled else "log"
    return Result(ENGINE, sc.seed, result_config(sc), insts, primary, simulated_seconds=end,
                  wall_seconds=time.perf_counter() - wall0, interval=sc.interval, extra=extra)


__all__ = ["run", "compile_scenario"]
