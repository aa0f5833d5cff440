"""The measured window of a load test: one worker's open-loop scheduler over :mod:`loadgen.rawhttp`.

Model (one process, one event loop; :mod:`loadgen.workers` runs several of these):

* **Share of the schedule.** Every worker computes the same seeded schedule
  (:class:`loadgen.arrivals.Schedule`) and the same mix draws; worker ``k`` of ``N`` takes the
  entries ``i`` with ``i mod N == k``. One seed gives the same schedule whatever ``N`` is.
* **Open loop, never ahead, never more.** The scheduler sleeps until an entry's time and never
  sends it earlier; every entry is sent at most once, so a run never sends more than its schedule.
* **Shedding.** An entry that would go out more than ``max_late`` after its scheduled time (the
  event loop was busy, or every connection of this worker's ``max_inflight`` share was busy and
  it waited in the backlog) is *shed*: not sent, its trace row stays ``unsent``, and it is
  counted. Falling behind never turns into a catch-up storm; the scheduler yields to the loop
  every 256 entries while behind, so signals and responses are served.
* **Bounded end.** The schedule ends at ``duration``; requests in flight (and late entries still
  within ``max_late``) get until ``duration + drain_timeout``, then the rest are cancelled: the
  window never outlives that. A stop (SIGINT/SIGTERM) cancels at once.

Objects: get/update/patch/delete take a live name from this worker's pool (names are split between
workers, so two workers never act on one object); an empty pool turns the request into a create
(``substituted``). Created names are ``lt-c<i>`` for schedule entry ``i``: unique across workers.
Timestamps come from :func:`loadgen.rawhttp.now` (CLOCK_MONOTONIC, ns resolution).
"""
from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import quote, urlsplit

import numpy as np

from audit_tune.loadgen.arrivals import Schedule, parse_profile
from audit_tune.loadgen.kubetarget import Target
from audit_tune.loadgen.ltconfig import LoadTestConfig
from audit_tune.loadgen.mix import RESOURCES, RUN_LABEL, Mix, make_patch, object_template
from audit_tune.loadgen.rawhttp import Conn, ConnPool, encode_request, now
from audit_tune.loadgen.record import ST_ERROR, Trace

V_CREATE, V_GET, V_LIST, V_UPDATE, V_PATCH, V_DELETE, V_WATCH = range(7)
YIELD_EVERY = 256
MAX_DIALS = 8


@dataclass
class WorkerResult:
    """What one worker hands back: its trace rows (``idx`` = global schedule index of each row)
    and its counters."""

    worker: int
    idx: np.ndarray
    sched: np.ndarray
    send: np.ndarray
    latency: np.ndarray
    status: np.ndarray
    verb: np.ndarray
    resource: np.ndarray
    overflow: int = 0
    created: int = 0
    deleted: int = 0
    substituted: int = 0
    shed: int = 0
    cancelled_at_drain: int = 0
    max_inflight: int = 0
    max_inflight_seen: int = 0
    connections: int = 0
    connect_errors: int = 0
    cpu_s: float = 0.0
    elapsed_s: float = 0.0
    drain_s: float = 0.0
    interrupted: bool = False
    notes: list[str] = field(default_factory=list)


class Engine:
    """Worker ``worker`` of ``workers``: ``await Engine(...).run(t0)`` with ``t0`` a
    :func:`loadgen.rawhttp.now` instant (the start of the window, shared by all workers)."""

    def __init__(self, cfg: LoadTestConfig, target: Target, ns_names: list[str], run_id: str,
                 pool: dict[tuple[int, int], list[str]], worker: int = 0, workers: int = 1,
                 progress: Callable[[float, float, int, int], None] | None = None) -> None:
        self.cfg, self.target, self.ns_names, self.run_id = cfg, target, ns_names, run_id
        self.k, self.n = worker, workers
        self.progress = progress
        self.profile = parse_profile(cfg.rate, cfg.duration)
        self.schedule = Schedule(self.profile, cfg.arrivals, cfg.seed)
        self.mix = Mix.parse(cfg.mix, cfg.resources, cfg.namespaces)
        self.pool = {key: list(v) for key, v in pool.items()}
        self.rng = np.random.default_rng(cfg.seed + 2 + 7919 * worker)
        cap = min(self.schedule.capacity_hint(), cfg.max_records) // workers + 2
        self.trace = Trace(cap)
        self.idx = np.zeros(cap, dtype=np.int64)
        self.limit = cfg.worker_inflight(worker)
        self.res = WorkerResult(worker, *(np.zeros(0),) * 7, max_inflight=self.limit)
        self.inflight = 0
        self.backlog: deque[tuple[int, int, int, int, int]] = deque()
        self.stopping = False
        self.draining = False
        self._idle_event: asyncio.Event | None = None
        self._stop_event = asyncio.Event()
        self._sched_task: asyncio.Task | None = None
        self.gen = 0
        self.t0 = 0.0
        u = urlsplit(target.server)
        tls = target.ssl_context() if u.scheme == "https" else None
        self.conns = ConnPool(u.hostname or "127.0.0.1", u.port or (443 if tls else 80),
                              tls if tls is not None and tls is not True else None,  # type: ignore[arg-type]
                              self.limit, self._free, self._connect_failed)
        self.host = u.netloc
        tok = target.token
        self.hdrs = ("User-Agent: audit-tune-loadtest\r\nAccept: application/json\r\n"
                     + (f"Authorization: Bearer {tok}\r\n" if tok else ""))
        self.coll = {(ns, r): f"/api/v1/namespaces/{name}/{res}" for ns, name in enumerate(ns_names)
                     for r, res in enumerate(RESOURCES)}
        self.tmpl = {key: object_template(RESOURCES[key[1]], ns_names[key[0]], run_id, cfg.object_size)
                     for key in self.coll}
        lim = f"?limit={cfg.list_limit}" if cfg.list_limit else ""
        self.list_req = {key: encode_request("GET", p + lim, self.host, self.hdrs) for key, p in self.coll.items()}
        self.watch_s = max(1, int(math.ceil(cfg.watch_duration)))
        sel = quote(f"{RUN_LABEL}={run_id}", safe="=")
        self.watch_req = {key: encode_request("GET", f"{p}?watch=1&timeoutSeconds={self.watch_s}&labelSelector={sel}",
                                              self.host, self.hdrs) for key, p in self.coll.items()}

    # ------------------------------------------------------------------ connections
    def _free(self, conn: Conn) -> None:
        """A connection is up or done: give it the oldest waiting entry that is not too late."""
        bl = self.backlog
        while bl and not self.stopping:
            j, i, v, r, ns = bl.popleft()
            if now() - self.t0 - self.trace.sched[j] > self.cfg.max_late:
                self.res.shed += 1
                continue
            self._send(conn, j, i, v, r, ns)
            return
        self.conns.park(conn)

    def _connect_failed(self, e: BaseException) -> None:
        self.res.connect_errors += 1
        if self.backlog:
            j = self.backlog.popleft()[0]
            t = now() - self.t0
            self.trace.send[j] = t
            self.trace.latency[j] = 0.0
            self.trace.status[j] = ST_ERROR
        if len(self.res.notes) < 5:
            self.res.notes.append(f"connect to {self.host} failed: {e.__class__.__name__}: {str(e)[:100]}")

    def _dispatch(self, j: int, i: int, v: int, r: int, ns: int) -> None:
        c = self.conns.get()
        if c is not None:
            self._send(c, j, i, v, r, ns)
            return
        self.backlog.append((j, i, v, r, ns))
        # Dial only for requests no dial in progress will serve, and a few at a time (a TLS
        # handshake costs as much CPU as hundreds of requests; a busy connection often frees first).
        if self.conns.can_open() and self.conns.connecting < min(len(self.backlog), MAX_DIALS):
            self.conns.open()

    # ------------------------------------------------------------------ one request
    def _send(self, conn: Conn, j: int, i: int, v: int, r: int, ns: int) -> None:
        key = (ns, r)
        name: str | None = None
        timeout = self.cfg.request_timeout
        if v in (V_GET, V_UPDATE, V_PATCH, V_DELETE):
            lst = self.pool.get(key)
            if lst:
                x = int(self.rng.integers(len(lst)))
                lst[x], lst[-1] = lst[-1], lst[x]
                name = lst.pop()
            else:
                self.res.substituted += 1
                self.trace.verb[j] = v = V_CREATE
        if v == V_CREATE:
            name = f"lt-c{i}"
            a, b, c = self.tmpl[key]
            req = encode_request("POST", self.coll[key], self.host, self.hdrs, a + name.encode() + b + b"0" + c)
        elif v == V_GET:
            req = encode_request("GET", f"{self.coll[key]}/{name}", self.host, self.hdrs)
        elif v == V_UPDATE:
            self.gen += 1
            a, b, c = self.tmpl[key]
            req = encode_request("PUT", f"{self.coll[key]}/{name}", self.host, self.hdrs,
                                 a + name.encode() + b + str(self.gen).encode() + c)  # type: ignore[union-attr]
        elif v == V_PATCH:
            self.gen += 1
            req = encode_request("PATCH", f"{self.coll[key]}/{name}", self.host, self.hdrs, make_patch(self.gen),
                                 "application/merge-patch+json")
        elif v == V_DELETE:
            req = encode_request("DELETE", f"{self.coll[key]}/{name}", self.host, self.hdrs)
        elif v == V_LIST:
            req = self.list_req[key]
        else:
            req = self.watch_req[key]
            timeout += self.watch_s
        self.inflight += 1
        if self.inflight > self.res.max_inflight_seen:
            self.res.max_inflight_seen = self.inflight
        t_send = now()
        self.trace.send[j] = t_send - self.t0

        def done(status: int) -> None:
            self.trace.latency[j] = now() - t_send
            self.trace.status[j] = status
            self.inflight -= 1
            if name is not None:
                if v == V_CREATE:
                    if status == 201:
                        self.res.created += 1
                        self.pool.setdefault(key, []).append(name)
                elif v == V_DELETE and status in (200, 202, 404):
                    self.res.deleted += status != 404
                else:
                    self.pool[key].append(name)
            if self.inflight == 0 and self.draining and self._idle_event is not None:
                self._idle_event.set()

        conn.send(req, done, t_send + timeout)

    # ------------------------------------------------------------------ the window
    async def _schedule(self) -> None:
        k, n, trace, max_late = self.k, self.n, self.trace, self.cfg.max_late
        rng = np.random.default_rng(self.cfg.seed + 1)
        t0, base, behind = self.t0, 0, 0
        next_progress = 1.0
        stop_at = self.profile.duration + self.cfg.drain_timeout
        for chunk in self.schedule.chunks():
            verbs, ress, nss = self.mix.draw(rng, len(chunk))
            first = (k - base) % n
            rows = zip(range(base + first, base + len(chunk), n), chunk[first::n].tolist(),
                       verbs[first::n].tolist(), ress[first::n].tolist(), nss[first::n].tolist())
            base += len(chunk)
            for i, off, v, r, ns in rows:
                t = now() - t0
                if off > t:
                    behind = 0
                    while off > t:  # timers may fire early: never send ahead of schedule
                        await asyncio.sleep(max(off - t, 0.001))
                        t = now() - t0
                else:
                    behind += 1
                    if behind >= YIELD_EVERY:
                        behind = 0
                        await asyncio.sleep(0)
                if self.stopping:
                    return
                j = trace.add(off, v, r)
                if j < 0:
                    continue
                self.idx[j] = i
                if t - off > max_late or t > stop_at:
                    self.res.shed += 1
                    continue
                self._dispatch(j, i, v, r, ns)
                if self.progress is not None and off >= next_progress:
                    next_progress = off + 1.0
                    self.progress(off, self.profile.duration, trace.n, self.inflight)

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(0.1)
            self.conns.expire(now())

    def stop(self) -> None:
        """Stop sending and cancel what is in flight (SIGINT/SIGTERM)."""
        if self.stopping:
            return
        self.stopping = True
        self.res.interrupted = True
        if self._sched_task is not None:
            self._sched_task.cancel()
        if self._idle_event is not None:
            self._idle_event.set()
            self._stop_event.set()

    async def run(self, t0: float) -> WorkerResult:
        self.t0 = t0
        self._idle_event = asyncio.Event()
        self._stop_event = asyncio.Event()
        cpu0 = time.process_time()
        wait = t0 - now()
        if wait > 0:
            await asyncio.sleep(wait)
        sweeper = asyncio.ensure_future(self._sweep())
        self._sched_task = asyncio.ensure_future(self._schedule())
        try:
            try:
                await self._sched_task
            except asyncio.CancelledError:
                if not self.stopping:
                    raise
            rest = self.profile.duration - (now() - t0)
            if rest > 0 and not self.stopping:
                try:
                    await asyncio.wait_for(self._stop_event.wait(), rest)
                except TimeoutError:
                    pass
            end = now()
            self.draining = True
            left = t0 + self.profile.duration + self.cfg.drain_timeout - end  # the stated bound on the window
            if self.inflight and not self.stopping and left > 0:
                self._idle_event.clear()
                try:
                    await asyncio.wait_for(self._idle_event.wait(), left)
                except TimeoutError:
                    pass
            self.res.drain_s = now() - end
        finally:
            sweeper.cancel()
            left = self.inflight
            self.res.shed += len(self.backlog)
            self.backlog.clear()
            self.conns.abort_all()
            if left and not self.res.interrupted:
                self.res.cancelled_at_drain = left
                self.res.notes.append(f"{left} requests still in flight after the {self.cfg.drain_timeout:g} s "
                                      "drain were cancelled")
        self.res.elapsed_s = now() - t0
        self.res.cpu_s = time.process_time() - cpu0
        self.res.connections = self.conns.connects
        n = self.trace.n
        v = self.trace.view()
        self.res.idx = self.idx[:n].copy()
        self.res.sched, self.res.send, self.res.latency = v["sched"].copy(), v["send"].copy(), v["latency"].copy()
        self.res.status, self.res.verb, self.res.resource = v["status"].copy(), v["verb"].copy(), v["resource"].copy()
        self.res.overflow = self.trace.overflow
        return self.res

