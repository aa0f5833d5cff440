"""The buffered backend (``plugin/pkg/audit/buffered/buffered.go``) as a SimPy process.

* ``ProcessEvents`` (:meth:`Pipe.offer`): non-blocking send into a channel of ``BufferSize``;
  when full the event is dropped and counted as ``plugin="buffered"``; it always returns true.
* One collector (:meth:`Pipe.collector`), looping: reset the ``MaxBatchWait`` timer (only when
  ``MaxBatchSize > 1``), collect until ``MaxBatchSize`` events or the timer fires or stop, then
  ``processEvents``: nothing for an empty batch; else ``throttle.Accept()`` (blocking), then
  hand the batch to the delegate: a new goroutine (async, webhook) or inline (sync, log).
  The window of the next batch therefore opens only after the throttle wait (and the sync
  delegate) returned.
* Stop: the partial batch ends and is processed, the channel is closed, the rest is drained in
  full batches (still throttled), and ``Shutdown`` waits for every delegate goroutine.

Ties at one instant: arrivals are enqueued before the collector acts (see ``clock``); the timer
wins over an event arriving exactly at the deadline. With ``MaxBatchSize > 1`` and
``MaxBatchWait = 0`` the real timer has always fired, so Go's random ``select`` takes the first
event (the collector spins until one arrives) and then each further *ready* event with probability
1/2: batch sizes are Geometric(1/2) (``rng.extra_takes``), as the oracle measured.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Generator

import simpy

from audit_tune.sim import rng
from audit_tune.sim.config import BackendOptions
from audit_tune.sim.receiver import LogWriter, Receiver
from audit_tune.sim.reference.clock import PIPELINE, at
from audit_tune.sim.reference.delegates import log_batch, webhook_batch
from audit_tune.sim.result import BackendStats
from audit_tune.sim.throttle import TokenBucket


class Pipe:
    """One backend of one apiserver: its buffer and collector (batch mode), or just its state
    (blocking modes), and its statistics."""

    def __init__(self, env: simpy.Environment, name: str, opts: BackendOptions, stats: BackendStats,
                 seed: int, inst: int, receiver: Receiver, log_writer: LogWriter, initial_backoff: float,
                 initial_tokens: float | None = None) -> None:
        self.env, self.name, self.opts, self.stats = env, name, opts, stats
        self.seed, self.inst = seed, inst
        self.receiver, self.log_writer, self.initial_backoff = receiver, log_writer, initial_backoff
        c = opts.batch
        self.cap = c.buffer_size
        self.max_size = c.max_batch_size
        self.max_wait = c.max_batch_wait
        self.bucket = TokenBucket(c.effective_qps, c.throttle_burst, 0.0, initial_tokens) if c.throttle_enable else None
        self.async_ = c.async_delegate
        self.queue: deque[tuple[float, int, int]] = deque()
        self.closed = False
        self.stopping = False
        self.stop_ev = env.event()
        self._waiter: simpy.Event | None = None
        self.held = 0
        self.held_events = 0
        self.inflight = 0
        self.active = 0
        self.seq = 0
        self.tasks: list[simpy.Process] = []
        self.collecting: list[tuple[float, int, int]] = []
        self.after_close: list[float] = []  # offers after the channel closed (sim/shutdown.py sorts them)
        self.live: dict[int, list[int]] = {}  # async batch seq -> [events, had a failed attempt]
        self.writing = 0  # events in the sync write under way
        self.done: simpy.Process | None = None
        if opts.mode == "batch":
            self.done = env.process(self.collector())

    # ---- memory ----
    def hold(self, size: int) -> None:
        self.held += size
        self.held_events += 1
        if self.held > self.stats.peak_memory:
            self.stats.peak_memory = self.held

    def release(self, nbytes: int, n: int) -> None:
        self.held -= nbytes
        self.held_events -= n

    # ---- request side ----
    def offer(self, t: float, size: int, ordinal: int) -> None:
        """``ProcessEvents`` with one event: enqueue or drop; never blocks."""
        st = self.stats
        if self.closed:
            self.after_close.append(t)
            return
        if len(self.queue) >= self.cap:
            st.drop("buffered", 1, self.env.now)
            return
        self.queue.append((t, size, ordinal))
        st.accepted += 1
        self.hold(size)
        occ = len(self.queue)
        if occ > st.max_occupancy:
            st.max_occupancy = occ
        st.occupancy.observe(self.env.now, occ)
        if self._waiter is not None and not self._waiter.triggered:
            self._waiter.succeed()

    def kill_losses(self) -> tuple[int, int, int]:
        """What a kill now loses: (accepted but not sent, in a first POST or sync write, being retried)."""
        buffered = len(self.queue) + len(self.collecting)
        inflight = self.writing + sum(n for n, failed in self.live.values() if not failed)
        retry = sum(n for n, failed in self.live.values() if failed)
        return buffered, inflight, retry

    def stop(self) -> None:
        self.stopping = True
        if not self.stop_ev.triggered:
            self.stop_ev.succeed()

    # ---- collector ----
    def _take(self, batch: list[tuple[float, int, int]], limit: int) -> None:
        q = self.queue
        took = 0
        while q and len(batch) < limit:
            batch.append(q.popleft())
            took += 1
        if took:
            self.stats.occupancy.observe(self.env.now, len(q))

    def collector(self) -> Generator:
        env = self.env
        while True:
            deadline = env.now + self.max_wait if self.max_size > 1 else float("inf")
            one_only = self.max_size > 1 and self.max_wait <= 0
            limit = self.max_size
            if one_only:
                limit = min(self.max_size, 1 + int(rng.extra_takes(self.seed, self.inst, [self.seq])[0]))
            batch: list[tuple[float, int, int]] = []
            self.collecting = batch
            while len(batch) < limit:
                if self.stopping:
                    break
                if not one_only and env.now >= deadline:
                    break
                if one_only and batch and not self.queue:
                    break  # the timer has fired: nothing ready, the select takes it
                if self.queue:
                    self._take(batch, limit)
                    continue
                self._waiter = env.event()
                waits = [self._waiter, self.stop_ev]
                if deadline != float("inf") and not one_only:
                    waits.append(at(env, deadline, PIPELINE))
                yield env.any_of(waits)
                self._waiter = None
            yield from self._process(batch)
            if self.stopping:
                break
        # Shutdown: close the channel, drain what is left in full batches, still throttled.
        self.closed = True
        while True:
            batch = []
            self.collecting = batch
            self._take(batch, self.max_size)
            if not batch:
                break
            yield from self._process(batch)
        self.collecting = []
        for task in self.tasks:
            if task.is_alive:
                yield task

    def _process(self, batch: list[tuple[float, int, int]]) -> Generator:
        if not batch:
            return
        env = self.env
        if self.bucket is not None:
            wait = self.bucket.reserve(env.now)
            if wait > 0:
                self.stats.throttle_wait += wait
                yield at(env, env.now + wait, PIPELINE)
        self.collecting = []
        seq = self.seq
        self.seq += 1
        self.stats.batch(len(batch))
        times = [b[0] for b in batch]
        sizes = [b[1] for b in batch]
        if self.async_:
            self.inflight += 1
            if self.inflight > self.stats.max_inflight:
                self.stats.max_inflight = self.inflight
            proc = env.process(webhook_batch(self, times, sizes, seq))
            self.tasks = [t for t in self.tasks if t.is_alive]
            self.tasks.append(proc)
        else:
            yield from log_batch(self, times, sizes, [b[2] for b in batch])
