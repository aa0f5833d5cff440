"""The request side: audit stages leave the request goroutine and pass truncate, then the union.

``audit.Union(log, webhook)`` calls each backend in turn, log first, and ANDs the results
(``apiserver/pkg/audit/union.go``). Each backend is ``truncate(batchWrap(backend))``
(``pkg/server/options/audit.go``): truncation is per event, synchronous; an event still too big
after its bodies are stripped is dropped as ``plugin="truncate"`` for that backend only.

In batch mode the union returns at once (``buffered.ProcessEvents`` never blocks); in blocking
modes the request goroutine waits for the backend, and in ``blocking-strict`` a failed
RequestReceived stage rejects the request with a 500 (``requests_rejected``).

The audit filter runs inside the timeout filter (``apiserver/pkg/server/config.go``
``DefaultBuildHandlerChain``; ``pkg/server/filters/timeout.go``). A non-long-running request whose
audit stages and handler together outlast ``--request-timeout`` (60 s) is timed out at arrival +
timeout (``requests_timed_out``, the real ``apiserver_request_terminations_total{code="504"}``)
while its goroutine carries on, and what the client sees depends on whether the handler had
written its response by then:

* not yet (the RequestReceived audit call, or the handler itself, still running): the timeout
  writer answers 504 (``requests_timed_out_504``). A blocking-strict rejection is still counted when
  the RequestReceived call returns, after the 504 (``requests_rejected_after_timeout``, when:
  ``rejected_after_timeout_seconds``);
* already (the handler returned; the ResponseComplete audit call is blocking in ``WithAudit``'s
  deferred function): the timeout writer cannot answer any more and panics with
  ``http.ErrAbortHandler``, so the connection is closed (HTTP/1.1) or the stream reset (HTTP/2)
  without a complete answer (``requests_closed_at_timeout``). A failing ResponseComplete is never
  a rejection (only RequestReceived is, in ``pkg/endpoints/filters/audit.go``); the backend counts
  it in ``apiserver_audit_error_total`` when its call gives up.

Nothing waits for a blocking audit call at shutdown: the drain wait group (``WithWaitGroup``) sits
outside the timeout filter, so it lets a request go at its timeout while the call carries on, and
the blocking webhook's ``Shutdown`` does nothing (``plugin/pkg/audit/webhook/webhook.go``). A call
still running when the process exits is cut off (:meth:`Frontend.cut_at_exit`): its event is
emitted but never delivered, its error or rejection never counted (``blocking-call-at-exit``),
the request's later stages are never emitted, and its timeout (due before the exit, since the wait
group waited for it) is counted as above.
"""
from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass

import simpy

from audit_tune.sim.reference.buffered import Pipe
from audit_tune.sim.reference.clock import ARRIVAL, at
from audit_tune.sim.reference.delegates import log_event, webhook_event
from audit_tune.sim.result import InstanceStats
from audit_tune.sim.workload import LEVELS, RC, RR, RequestClass

REQUEST_LEVEL = LEVELS.index("Request")


@dataclass(frozen=True)
class InCall:
    """A request goroutine inside an audit stage's call: what its cut-off at the exit leaves."""

    arrival: float
    long_running: bool
    written: float | None  # when the handler had written its response, if it had
    later_stages: int  # stages it would emit after this one


class Frontend:
    def __init__(self, env: simpy.Environment, pipes: dict[str, Pipe], stats: InstanceStats, seed: int, inst: int,
                 request_timeout: float) -> None:
        self.env, self.pipes, self.stats = env, pipes, stats
        self.seed, self.inst = seed, inst
        self.request_timeout = request_timeout
        self.order = [p for name, p in pipes.items() if name == "log"] + [p for name, p in pipes.items() if name == "webhook"]
        self.log_mutex = simpy.Resource(env, capacity=1)
        self.running: dict[simpy.Process, float] = {}  # non-long-running request process -> when its 504 is due
        self.finish: float | None = None  # when the audit backends' Shutdown returned
        self.exit_at = float("inf")  # when the process exits (set at shutdown)
        self.not_emitted = 0
        self.in_call: dict[int, InCall] = {}  # request -> its stage call under way (blocking modes)

    def _truncated_size(self, pipe: Pipe, size: int, meta: int, level: int) -> int | None:
        t = pipe.opts.truncate
        if not t.enabled or size <= t.max_event_size:
            return size
        if level >= REQUEST_LEVEL:
            size = meta
            if size <= t.max_event_size:
                return size
        pipe.stats.drop("truncate", 1, self.env.now)
        return None

    def offer_batch(self, t: float, size: int, meta: int, level: int) -> None:
        """All backends in batch mode: hand the event to each buffered backend, instantly."""
        ordinal = self.stats.events_total
        self.stats.events_total += 1
        for pipe in self.order:
            s = self._truncated_size(pipe, size, meta, level)
            if s is not None:
                pipe.offer(t, s, ordinal)

    def emit(self, t: float, size: int, meta: int, level: int, key: int) -> Generator[simpy.Event, object, bool | None]:
        """One stage through the union, from the request goroutine. Returns the AND of results,
        None when the process exited during a call (the later backends are never called)."""
        if self.env.now > self.exit_at:
            self.not_emitted += 1  # the process has exited: the request's later stages never run
            return True
        self.stats.events_total += 1
        result = True
        for pipe in self.order:
            s = self._truncated_size(pipe, size, meta, level)
            if s is None:
                continue
            mode = pipe.opts.mode
            if mode == "batch":
                pipe.offer(t, s, key)
                continue
            if pipe.name == "webhook":
                ok = yield from webhook_event(self, pipe, t, s, key)
            else:
                ok = yield from log_event(self, pipe, self.log_mutex, t, s, key)
            if ok is None:
                return None
            if mode == "blocking-strict":
                result = result and ok
        return result

    def request(self, t: float, cls: RequestClass, plan: list[tuple[int, float]], req: int) -> Generator[simpy.Event, object, None]:
        """A request whose stages are audited synchronously (some backend in a blocking mode)."""
        env = self.env
        yield at(env, t, ARRIVAL)
        sizes = cls.stage_sizes()
        level = LEVELS.index(cls.level)
        added = 0.0
        handler_start = t
        written: float | None = None  # when the handler had written its response (ResponseComplete begins)
        for i, (stage, off) in enumerate(plan):
            if stage == RR:
                t0 = env.now
                self.in_call[req] = InCall(t, cls.long_running, written, len(plan) - i - 1)
                ok = yield from self.emit(env.now, sizes[stage], min(850, sizes[stage]), level, req * 4 + stage)
                if ok is None:
                    return  # cut off at the exit: counted by cut_at_exit
                del self.in_call[req]
                added += env.now - t0
                handler_start = env.now
                if not ok:
                    # blocking-strict: the rejection is counted when the audit call returns, even
                    # after the timeout filter (outside the audit filter) answered 504
                    self.stats.requests_rejected += 1
                    self.stats.added_latency.add(added)
                    if not cls.long_running and added > self.request_timeout:
                        self.stats.timed_out_504 += 1
                        self.stats.rejected_after_timeout += 1
                        self.stats.rejected_after_timeout_at.add(added)
                    return
                continue
            target = handler_start + off
            if target > env.now:
                yield at(env, target, ARRIVAL)
            if stage == RC:
                written = env.now
            t0 = env.now
            self.in_call[req] = InCall(t, cls.long_running, written, len(plan) - i - 1)
            if (yield from self.emit(env.now, sizes[stage], min(850, sizes[stage]), level, req * 4 + stage)) is None:
                return
            del self.in_call[req]
            added += env.now - t0
            if stage != RC:
                handler_start += env.now - t0  # the handler waited for this stage's audit call
        self.stats.added_latency.add(added)
        if cls.long_running or added + cls.duration <= self.request_timeout:
            return
        self._timed_out(t, written)

    def _timed_out(self, arrival: float, written: float | None) -> None:
        if written is not None and written - arrival <= self.request_timeout:
            self.stats.closed_at_timeout += 1  # ResponseComplete was blocking at the deadline
        else:
            self.stats.timed_out_504 += 1

    def cut_at_exit(self, exit_t: float) -> int:
        """The process exited (or was killed) at ``exit_t``: the requests still inside an audit
        call never return from it. Counts their timeouts (due by then) and their never-emitted
        later stages; returns how many calls were cut off."""
        for c in self.in_call.values():
            self.not_emitted += c.later_stages
            if not c.long_running and c.arrival + self.request_timeout <= exit_t:
                self._timed_out(c.arrival, c.written)
        n = len(self.in_call)
        self.in_call.clear()
        return n
