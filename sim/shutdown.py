"""The apiserver's graceful termination and restarts: when the audit backend stops, when the
process exits, which events are emitted at all.

Mirrors ``RunWithContext`` in ``staging/src/k8s.io/apiserver/pkg/server/genericapiserver.go`` and
``RunServer`` in ``pkg/server/secure_serving.go``. For one apiserver lifetime that starts serving
at ``up`` and receives SIGTERM at ``sigterm``:

* ``not_accepting = sigterm + --shutdown-delay-duration``: until then new requests are served;
  after it the listener is closed and new requests are refused (never audited);
* ``drained`` (``InFlightRequestsDrained``): once every non-long-running request admitted before
  ``not_accepting`` has finished (``NonLongRunningRequestWaitGroup``) and, only when
  ``--shutdown-watch-termination-grace-period`` > 0, every watch has ended or that grace period
  has passed (``WatchRequestWaitGroup``). With the default 0 watches are not waited for;
* the audit backend's ``Run(stopCh)`` stops at ``drained``: the partial batch is processed, the
  buffer channel is closed (events offered after that are ``error_total{plugin="buffered"}``),
  the rest is drained, then ``Shutdown`` waits for every webhook goroutine (``finish``);
* the HTTP server's ``Shutdown`` starts at ``not_accepting`` with a timeout of
  ``--request-timeout`` (``ShutdownTimeout = RequestTimeout``, ``pkg/server/config.go``) and
  returns when every connection is idle: so while watches stay open it returns at
  ``not_accepting + request timeout``;
* the process exits when both are done: ``exit = max(finish, min(not_accepting + request
  timeout, last request end))``. Watch events after ``exit`` are never emitted.
* blocking modes: the wait group sits outside the timeout filter (``DefaultBuildHandlerChain``),
  so it lets a request go at its ``--request-timeout`` even while its audit call (the webhook's
  retry chain, in the request goroutine) carries on, and the blocking webhook's ``Shutdown`` does
  nothing. The exit does not wait for such a call: it is cut off there, its event emitted but
  neither delivered nor counted as an error or a rejection (``blocking-call-at-exit``); the
  request's later stages are never emitted. A kill cuts off the calls under way the same way.

A restart (``--restart-at T``) is a SIGTERM at ``T``; the kubelet kills the process at
``T + --kill-after`` (``terminationGracePeriodSeconds``) if it has not exited, losing what was
still buffered, in flight or being retried. A new instance (empty buffer, full throttle bucket)
serves from ``exit + restart gap``. The run's end (``--duration``) is a final SIGTERM with no kill.

Request handler times are fixed per request class, so ``drained`` is found from the arrivals
alone (one pass over the requests, only when some class has a non-zero duration).
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TypedDict

import numpy as np

from audit_tune.basics.errors import InputError
from audit_tune.sim import kernels, rng
from audit_tune.sim.workload import EventChunk, Workload, iter_events, iter_requests

RESTART_GAP = 5.0  # seconds from the old process's exit until the new instance serves


@dataclass(frozen=True)
class ShutdownOptions:
    """kube-apiserver's shutdown flags, the restarts and the kubelet's grace period."""

    delay: float = 0.0  # --shutdown-delay-duration
    watch_grace: float = 0.0  # --shutdown-watch-termination-grace-period
    restart_at: tuple[float, ...] = ()  # SIGTERM times inside the run
    kill_after: float = 30.0  # --kill-after: the kubelet's terminationGracePeriodSeconds
    restart_gap: float = RESTART_GAP  # exit of the old process to the new instance serving

    def validate(self, duration: float) -> ShutdownOptions:
        for name, v in (("--shutdown-delay-duration", self.delay),
                        ("--shutdown-watch-termination-grace-period", self.watch_grace),
                        ("--restart-gap", self.restart_gap)):
            if not (v >= 0 and math.isfinite(v)):
                raise InputError(f"{name}={v}: must be a duration >= 0")
        if not self.kill_after > 0 or not math.isfinite(self.kill_after):
            raise InputError(f"--kill-after={self.kill_after}: must be a positive duration")
        prev = 0.0
        for t in self.restart_at:
            if not prev < t < duration:
                raise InputError(f"--restart-at={t:g}s: restarts must be increasing, after 0 and before "
                                 f"--duration ({duration:g}s)")
            prev = t
        return self


@dataclass
class Lifetime:
    """One apiserver process: its timeline (seconds) and what it lost."""

    up: float
    sigterm: float
    not_accepting: float
    drained: float  # audit backend stopCh
    last_end: float  # the last admitted request's end
    kill: float  # inf for the run's final shutdown
    exit: float = math.nan
    finish: float = math.nan  # audit Shutdown returned (or the kill)
    lost: dict[str, int] = field(default_factory=lambda: dict.fromkeys(LOSS_CAUSES, 0))

    def exit_time(self, finish: float, request_timeout: float) -> float:
        """When the process is gone: audit shutdown done and the HTTP server stopped, or killed."""
        http_stopped = min(self.not_accepting + request_timeout, max(self.last_end, self.not_accepting))
        return min(self.kill, max(finish, http_stopped, self.drained))


LOSS_CAUSES: tuple[str, ...] = ("buffer-at-kill", "in-flight-at-kill", "retry-chain-at-kill", "blocking-call-at-exit",
                                "not-emitted")


def needs_pass(w: Workload) -> bool:
    """Whether ``drained``/``last_end`` need the arrivals (some class with a handler time)."""
    return any(c.duration > 0 or c.first_byte > 0 for c in w.classes)


def last_arrivals(w: Workload, seed: int, inst: int, cuts: list[float]) -> np.ndarray:
    """``out[k, c]``: the last arrival of class ``c`` before ``cuts[k]`` (``-inf`` if none)."""
    ncls = len(w.classes)
    out = np.full((len(cuts), ncls), -np.inf)
    cut = np.asarray(cuts)
    for rc in iter_requests(w, seed, inst):
        if not len(rc.t):
            continue
        cls = np.asarray(rc.cls)
        for c in range(ncls):
            tc = rc.t[cls == c]
            if not len(tc):
                continue
            pos = np.searchsorted(tc, cut, side="left") - 1
            ok = pos >= 0
            out[ok, c] = np.maximum(out[ok, c], tc[pos[ok]])
    return out


class Plan:
    """The lifetimes of one apiserver, built one after the other: each new instance's start
    depends on when the previous process exited, which the engine reports (:meth:`close`)."""

    def __init__(self, w: Workload, opts: ShutdownOptions, request_timeout: float, seed: int, inst: int) -> None:
        self.w, self.opts, self.rt = w, opts, request_timeout
        sig = [*opts.restart_at, w.duration]
        self.sigterms = sig
        cuts = [s + opts.delay for s in sig]
        self._last = last_arrivals(w, seed, inst, cuts) if needs_pass(w) else None
        self.lifetimes: list[Lifetime] = []
        self.start(0.0)

    @property
    def current(self) -> Lifetime:
        return self.lifetimes[-1]

    @property
    def final(self) -> bool:
        return len(self.lifetimes) == len(self.sigterms)

    def start(self, up: float) -> Lifetime:
        k = len(self.lifetimes)
        s = max(self.sigterms[k], up)  # a restart that comes up after the workload's end is stopped once up
        na = s + self.opts.delay
        drained, last_end = na, na
        if self._last is not None:
            for c, cls in enumerate(self.w.classes):
                t = self._last[k, c]
                if not t >= up:
                    continue  # no request of this class admitted in this lifetime
                end = t + max(cls.duration, cls.first_byte)
                last_end = max(last_end, end)
                if not cls.long_running:
                    drained = max(drained, end)
                elif self.opts.watch_grace > 0:
                    drained = max(drained, min(na + self.opts.watch_grace, end))
        kill = s + self.opts.kill_after if k < len(self.opts.restart_at) else math.inf
        lt = Lifetime(up, s, na, min(drained, kill), last_end, kill)
        self.lifetimes.append(lt)
        return lt

    def close(self, finish: float) -> Lifetime:
        """The engine ran the current lifetime: its audit shutdown returned at ``finish`` (or
        the process was killed); fix its exit and open the next lifetime, if any."""
        lt = self.current
        lt.finish = finish
        lt.exit = lt.exit_time(finish, self.rt)
        if not self.final:
            self.start(lt.exit + self.opts.restart_gap)
        return lt

    def to_dict(self) -> list[LifetimeRecord]:
        return [{"up": float(lt.up), "sigterm": float(lt.sigterm), "not_accepting": float(lt.not_accepting),
                 "audit_stopped": float(lt.drained), "exit": float(lt.exit),
                 "killed": bool(lt.finish >= lt.kill), "lost": dict(lt.lost)} for lt in self.lifetimes]


def split_after_close(times: np.ndarray, exit_t: float) -> tuple[int, int]:
    """Events offered after the buffer closed: (buffered errors up to the exit, never emitted)."""
    n_err = int(np.count_nonzero(times <= exit_t))  # the last request ends, then its connection is idle
    return n_err, len(times) - n_err


def _offsets(w: Workload) -> np.ndarray | None:
    """``off[class, stage]``: a stage's time after its request's arrival; None when all are 0."""
    off = np.zeros((len(w.classes), 4))
    for c, cls in enumerate(w.classes):
        for stage, o in cls.stages(w.policy_omit_stages):
            off[c, stage] = o
    return off if off.any() else None


class EventRouter:
    """The instance's event stream cut into lifetimes, the same for every engine.

    For the current lifetime it yields the events that process emits before it is killed: those of
    requests that arrived while it accepted them (``[up, not_accepting)``). Events of requests that
    arrived while no instance accepted are refused (never audited); events of an earlier lifetime's
    requests after its kill are never emitted; later lifetimes' events wait for their turn."""

    def __init__(self, w: Workload, seed: int, inst: int, plan: Plan) -> None:
        self.w, self.plan = w, plan
        self.src = iter_events(w, seed, inst)
        self.head: EventChunk | None = None
        self.simple = not plan.opts.restart_at
        self.off = _offsets(w)
        self.refused = 0
        cum_w = np.cumsum([c.weight for c in w.classes], dtype=float)
        self._cum_w = cum_w / cum_w[-1]
        self._h0 = np.uint64(rng.hash_start(seed, rng.S_REQ_CLASS))
        self._inst = np.uint64(inst)
        self._class_of = kernels.class_of

    def _arrivals(self, c: EventChunk) -> np.ndarray:
        if self.off is None:
            return c.t
        if len(self.w.classes) == 1:
            cls = np.zeros(len(c), dtype=np.int64)
        else:
            cls = self._class_of(self._h0, self._inst, c.req, np.uint64(0), self._cum_w)
        arrivals: np.ndarray = c.t - self.off[cls, c.stage]
        return arrivals

    def chunks(self) -> Iterator[EventChunk]:
        """The current lifetime's events (each chunk keeps its ``class_counts`` for the level metric)."""
        if self.simple:
            yield from self.src
            return
        lts = self.plan.lifetimes
        lt = lts[-1]
        prev_na = lts[-2].not_accepting if len(lts) > 1 else -math.inf
        pend: list[EventChunk] = []
        while True:
            c = self.head if self.head is not None else next(self.src, None)
            self.head = None
            if c is None:
                break
            tail = None
            if len(c) and c.t[-1] >= lt.kill:
                k = int(np.searchsorted(c.t, lt.kill, side="left"))
                tail = _slice(c, k, len(c), zero_counts=True)
                c = _slice(c, 0, k, zero_counts=False)
            arr = self._arrivals(c)
            mine = (arr >= lt.up) & (arr < lt.not_accepting)
            later = arr >= lt.not_accepting
            gone = ~mine & ~later
            if gone.any():
                # arrived while no instance accepted them, or an earlier instance's after its kill
                refused = gone & (arr >= prev_na)
                self.refused += int(refused.sum())
                if len(lts) > 1:
                    lts[-2].lost["not-emitted"] += int((gone & ~refused).sum())
            if later.any():
                pend.append(_take(c, later, zero_counts=True))
            yield _take(c, mine, zero_counts=False)
            if tail is not None:
                pend.append(tail)
                break
        if pend:
            self.head = pend[0] if len(pend) == 1 else _concat(pend)


def _slice(c: EventChunk, a: int, b: int, zero_counts: bool) -> EventChunk:
    counts = None if zero_counts or c.class_counts is None else c.class_counts
    return EventChunk(c.t[a:b], c.size[a:b], c.meta[a:b], c.level[a:b], c.req[a:b], c.stage[a:b],
                      np.zeros_like(c.class_counts) if (zero_counts and c.class_counts is not None) else counts)


def _take(c: EventChunk, m: np.ndarray, zero_counts: bool) -> EventChunk:
    counts = c.class_counts
    if zero_counts and counts is not None:
        counts = np.zeros_like(counts)
    return EventChunk(c.t[m], np.asarray(c.size)[m], np.asarray(c.meta)[m], np.asarray(c.level)[m], c.req[m],
                      np.asarray(c.stage)[m], counts)


def _concat(parts: list[EventChunk]) -> EventChunk:
    """Pieces already in time order, one after the other."""
    cols = [np.concatenate([np.asarray(getattr(p, f)) for p in parts]) for f in ("t", "size", "meta", "level", "req", "stage")]
    return EventChunk.of(cols, np.zeros_like(parts[0].class_counts) if parts[0].class_counts is not None else None)


class LifetimeRecord(TypedDict):
    """One process's timeline and losses, as reported in ``lifetimes``."""
    up: float
    sigterm: float
    not_accepting: float
    audit_stopped: float
    exit: float
    killed: bool
    lost: dict[str, int]


class ShutdownReport(TypedDict):
    """The result fields :func:`shutdown_report` adds."""
    events_not_emitted: int
    blocking_calls_at_exit: int
    events_refused: int
    restart_loss: dict[str, int]
    lifetimes: list[list[LifetimeRecord]]


def shutdown_report(lives: list[tuple[Plan, int]]) -> ShutdownReport:
    """The result fields of the shutdown model, summed over apiservers:

    * ``events_not_emitted``: events of requests still running when their process exited (watch
      ends after the exit, anything after a kill); not in ``apiserver_audit_event_total``;
    * ``blocking_calls_at_exit``: events whose blocking audit call was still running when their
      process exited or was killed, the run's end included: emitted, never delivered, no error;
    * ``events_refused``: events of requests that arrived while no instance accepted them;
    * ``restart_loss``: events lost by the restarts, by cause (``buffer-at-kill``: accepted but not
      yet sent; ``in-flight-at-kill``: in a batch whose first POST had not ended;
      ``retry-chain-at-kill``: in a batch being retried; ``blocking-call-at-exit``: in a blocking
      call when the process exited; ``not-emitted``);
    * ``lifetimes``: per apiserver, each process's timeline and losses."""
    total = dict.fromkeys(LOSS_CAUSES, 0)
    not_emitted = cut = 0
    for plan, _ in lives:
        for lt in plan.lifetimes:
            not_emitted += lt.lost["not-emitted"]
            cut += lt.lost["blocking-call-at-exit"]
        for lt in plan.lifetimes[:-1]:
            for k, v in lt.lost.items():
                total[k] += v
    return {"events_not_emitted": not_emitted, "blocking_calls_at_exit": cut, "events_refused": sum(r for _, r in lives),
            "restart_loss": total, "lifetimes": [plan.to_dict() for plan, _ in lives]}
