"""Several worker processes for one load test, and the exact merge of what they record.

Model: ``N`` processes (``spawn``ed, so none inherits the parent's event loop or connections),
each runs one :class:`loadgen.engine.Engine` with its own connections, its share of
``max_inflight`` and the schedule entries ``i mod N == k``. They are started before the parent's
setup phase (imports overlap it) and report ready; the parent then sends each its share of the
preseeded objects and a common start instant on CLOCK_MONOTONIC, which all processes of the
machine share. Each worker answers with a :class:`loadgen.engine.WorkerResult`.

Merging is exact: every worker's rows carry their global schedule index, so the merged trace is
the rows put back in schedule order, the same rows a single worker would have written; counters
add up; per-worker figures are kept (:func:`worker_figures`).

Stop: the parent forwards SIGINT/SIGTERM to its workers by pid (SIGTERM); a worker stops
sending, cancels what is in flight and still sends its result.
"""
from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import signal
from collections.abc import Callable
from multiprocessing.connection import Connection
from types import FrameType
from typing import Any, NotRequired, TypedDict

import numpy as np

from audit_tune.basics.errors import ServiceError
from audit_tune.loadgen.engine import Engine, WorkerResult
from audit_tune.loadgen.eventloop import loop_factory
from audit_tune.loadgen.kubetarget import Target
from audit_tune.loadgen.ltconfig import LoadTestConfig
from audit_tune.loadgen.record import Trace, latency_histogram, percentiles_us

START_MARGIN_S = 0.05


def split_pool(pool: dict[tuple[int, int], list[str]], workers: int) -> list[dict[tuple[int, int], list[str]]]:
    """Object names dealt round-robin per (namespace, resource): worker ``k`` gets names ``k, k+N, ...``."""
    return [{key: names[k::workers] for key, names in pool.items()} for k in range(workers)]


def merge(results: list[WorkerResult]) -> Trace:
    """The workers' rows in global schedule order, as one :class:`loadgen.record.Trace`."""
    idx = np.concatenate([r.idx for r in results]) if results else np.zeros(0, dtype=np.int64)
    order = np.argsort(idx, kind="stable")
    tr = Trace(max(1, len(idx)))
    for col in ("sched", "send", "latency", "status", "verb", "resource"):
        arr = np.concatenate([getattr(r, col) for r in results]) if results else np.zeros(0)
        getattr(tr, col)[:len(idx)] = arr[order]
    tr.n = len(idx)
    tr.overflow = sum(r.overflow for r in results)
    return tr


class WorkerFigures(TypedDict):
    """One worker's own numbers in the record's ``workers`` list (the latency histogram is taken out
    and merged over the workers into the record's own)."""

    worker: int
    scheduled: int
    sent: int
    completed: int
    shed: int
    cancelled_at_drain: int
    achieved_rate: float
    max_inflight: int
    max_inflight_seen: int
    connections: int
    connect_errors: int
    created: int
    deleted: int
    substituted_creates: int
    cpu_s: float
    elapsed_s: float
    drain_s: float
    cpu_util: float | None
    lag_us: dict[str, int | None]
    latency_us: dict[str, int | None]
    latency_histogram_us: NotRequired[list[list[int]]]


def worker_figures(r: WorkerResult, duration: float) -> WorkerFigures:
    """One worker's own numbers for the record's ``workers`` list."""
    sent = np.isfinite(r.send)
    done = sent & (r.status > 0)
    lag = (r.send - r.sched)[sent]
    return WorkerFigures(
        worker=r.worker, scheduled=int(len(r.idx)) + r.overflow, sent=int(sent.sum()),
        completed=int(done.sum()), shed=r.shed, cancelled_at_drain=r.cancelled_at_drain,
        achieved_rate=float(np.count_nonzero(sent & (r.send < duration)) / duration) if duration > 0 else 0.0,
        max_inflight=r.max_inflight, max_inflight_seen=r.max_inflight_seen, connections=r.connections,
        connect_errors=r.connect_errors, created=r.created, deleted=r.deleted,
        substituted_creates=r.substituted, cpu_s=r.cpu_s, elapsed_s=r.elapsed_s, drain_s=r.drain_s,
        cpu_util=r.cpu_s / r.elapsed_s if r.elapsed_s > 0 else None,
        lag_us=percentiles_us(lag), latency_us=percentiles_us(r.latency[done]),
        latency_histogram_us=latency_histogram(r.latency[done]),
    )


def _child(conn: Connection) -> None:
    """A worker process: report ready, wait for the go message, run, send the result."""
    stop = {"early": False}

    def early(signum: int, frame: FrameType | None) -> None:
        stop["early"] = True

    signal.signal(signal.SIGINT, early)
    signal.signal(signal.SIGTERM, early)
    conn.send("ready")
    try:
        msg = conn.recv()
    except (EOFError, OSError):
        return
    if msg is None:
        return
    cfg, target, ns_names, run_id, pool, k, n, t0 = msg
    eng = Engine(cfg, target, ns_names, run_id, pool, k, n)

    async def main() -> WorkerResult:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, eng.stop)
        if stop["early"]:
            eng.stop()
        return await eng.run(t0)

    with asyncio.Runner(loop_factory=loop_factory()) as r:
        res = r.run(main())
    conn.send(res)
    conn.close()


class WorkerSet:
    """``n`` started worker processes; :meth:`run` hands out the work and collects the results."""

    def __init__(self, n: int) -> None:
        ctx = mp.get_context("spawn")
        self.procs: list[Any] = []
        self.pipes: list[Connection] = []
        for _ in range(n):
            parent, child = ctx.Pipe()
            p = ctx.Process(target=_child, args=(child,), daemon=True, name="audit-tune-loadtest-worker")
            p.start()
            child.close()
            self.procs.append(p)
            self.pipes.append(parent)
        self.ready = [False] * n
        self.stopped = False

    async def run(self, cfg: LoadTestConfig, target: Target, ns_names: list[str], run_id: str,
                  pool: dict[tuple[int, int], list[str]],
                  clock: Callable[[], float]) -> tuple[float, list[WorkerResult], list[str]]:
        """Wait for every worker to be ready, start them together; returns ``(t0, results, notes)``."""
        loop = asyncio.get_running_loop()
        n = len(self.procs)
        notes: list[str] = []
        for k, pipe in enumerate(self.pipes):
            try:
                await loop.run_in_executor(None, pipe.recv)
                self.ready[k] = True
            except (EOFError, OSError):
                if not self.stopped:
                    raise ServiceError(f"load test worker {k} died while starting (exit {self.procs[k].join(1) or self.procs[k].exitcode})") from None
        if self.stopped:
            return clock(), [], ["stopped before the window started"]
        t0 = clock() + START_MARGIN_S
        for k, (pipe, share) in enumerate(zip(self.pipes, split_pool(pool, n))):
            pipe.send((cfg, target, ns_names, run_id, share, k, n, t0))
        results = []
        for k, pipe in enumerate(self.pipes):
            try:
                results.append(await loop.run_in_executor(None, pipe.recv))
            except (EOFError, OSError):
                notes.append(f"worker {k} died (exit {self.procs[k].exitcode}); its requests are missing")
        return t0, results, notes

    def stop(self) -> None:
        """Forward a stop to every live worker that is up (SIGTERM by pid); one still starting
        is told by :meth:`run` instead (its signal handlers may not be in place yet)."""
        self.stopped = True
        for p, ready in zip(self.procs, self.ready):
            if ready and p.is_alive() and p.pid is not None:
                try:
                    os.kill(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass

    def close(self) -> None:
        for pipe in self.pipes:
            try:
                pipe.send(None)
            except (OSError, ValueError):
                pass
        for p in self.procs:
            p.join(2)
            if p.is_alive():
                p.kill()
                p.join(1)
        for pipe in self.pipes:
            pipe.close()
