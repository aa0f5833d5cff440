"""Delegates behind the buffered backend, and the blocking-mode calls.

* :func:`webhook_batch`: one goroutine per batch (``AsyncDelegate``): POST, and on any failure
  sleep the backoff and retry, up to 5 attempts; then drop the batch as ``plugin="webhook"``
  (``plugin/pkg/audit/webhook/webhook.go``).
* :func:`log_batch`: the log backend's ``ProcessEvents`` run inline on the collector
  (``AsyncDelegate: false``), so the buffer is not drained while it writes
  (``plugin/pkg/audit/log/backend.go``).
* :func:`webhook_event`, :func:`log_event`: the same calls made from the request goroutine in
  ``blocking`` / ``blocking-strict`` mode, one event at a time; log writes share one mutex
  (lumberjack's), modelled as a FIFO resource of capacity 1. Nothing waits for these calls at
  shutdown (the webhook backend's ``Shutdown`` does nothing; the drain wait group lets a request
  go at its timeout): one still running when the process exits is cut off there, returns ``None``
  and counts nothing more, not even the attempt under way's outcome (sim/shutdown.py).
"""
from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING

import numpy as np
import simpy

from audit_tune.sim.receiver import ATTEMPTS, backoff_sleep
from audit_tune.sim.reference.clock import PIPELINE, TASK, at

if TYPE_CHECKING:
    from audit_tune.sim.reference.buffered import Pipe
    from audit_tune.sim.reference.frontend import Frontend


def _post_with_retries(pipe: Pipe, key: int, nbytes: int, priority: int,
                       fe: Frontend | None = None) -> Generator[simpy.Event, object, bool | None]:
    """``WithExponentialBackoff`` around the POST: up to 5 attempts, backoff sleeps between. Returns
    ok, or None when the request goroutine ``fe`` runs it (blocking modes) and its process exited
    meanwhile (the attempt under way was sent; its answer is never read)."""
    env, st, rcv = pipe.env, pipe.stats, pipe.receiver
    ok = False
    for k in range(ATTEMPTS):
        pipe.active += 1
        dur, ok, code = rcv.attempt(pipe.seed, pipe.inst, key, k, env.now, nbytes, pipe.active)
        st.attempts += 1
        st.attempts_by_code[code] += 1
        yield at(env, env.now + dur, priority)
        pipe.active -= 1
        if fe is not None and env.now > fe.exit_at:
            return None
        if ok:
            break
        if k == 0 and key in pipe.live:
            pipe.live[key][1] = 1
        if k < ATTEMPTS - 1:
            yield at(env, env.now + backoff_sleep(pipe.initial_backoff, pipe.seed, pipe.inst, key, k), priority)
            if fe is not None and env.now > fe.exit_at:
                return None
    return ok


def webhook_batch(pipe: Pipe, times: list[float], sizes: list[int], seq: int) -> Generator[simpy.Event, object, None]:
    """Send one batch with retries; records attempts, delivery or the drop.

    The caller counts the batch in flight at dispatch; this goroutine uncounts it when done."""
    env, st = pipe.env, pipe.stats
    n, nbytes = len(times), int(sum(sizes))
    pipe.live[seq] = [n, 0]
    ok = yield from _post_with_retries(pipe, seq, nbytes, TASK)  # Shutdown waits for it: never cut off
    del pipe.live[seq]
    if ok:
        st.delivered += n
        st.delivery.add(env.now - np.asarray(times))
    else:
        st.drop("webhook", n, env.now)
    pipe.inflight -= 1
    pipe.release(nbytes, n)


def log_batch(pipe: Pipe, times: list[float], sizes: list[int], ids: list[int]) -> Generator[simpy.Event, object, None]:
    env, st = pipe.env, pipe.stats
    cost, failed = pipe.log_writer.write(pipe.seed, pipe.inst, ids)
    pipe.inflight += 1
    st.max_inflight = max(st.max_inflight, pipe.inflight)
    pipe.writing = len(times)
    yield at(env, env.now + cost)
    pipe.writing = 0
    ok_times = [t for t, f in zip(times, failed) if not f]
    st.delivered += len(ok_times)
    st.drop("log", len(times) - len(ok_times), env.now)
    if ok_times:
        st.delivery.add(env.now - np.asarray(ok_times))
    pipe.inflight -= 1
    pipe.release(int(sum(sizes)), len(times))


def webhook_event(fe: Frontend, inst_pipe: Pipe, t: float, size: int, key: int) -> Generator[simpy.Event, object, bool | None]:
    """Blocking mode: POST this one event with retries in the request goroutine. Returns ok, None
    when the process exited during the call."""
    env, st = fe.env, inst_pipe.stats
    inst_pipe.hold(size)
    inst_pipe.inflight += 1
    st.max_inflight = max(st.max_inflight, inst_pipe.inflight)
    ok = yield from _post_with_retries(inst_pipe, key, size, PIPELINE, fe)
    if ok is None:
        inst_pipe.inflight -= 1
        inst_pipe.release(size, 1)  # the process's memory is gone; the event is counted at the exit
        return None
    st.batch(1)
    if ok:
        st.delivered += 1
        st.delivery.add(env.now - t)
    else:
        st.drop("webhook", 1, env.now)
    inst_pipe.inflight -= 1
    inst_pipe.release(size, 1)
    return ok


def log_event(fe: Frontend, inst_pipe: Pipe, mutex: simpy.Resource, t: float, size: int, key: int) -> Generator[simpy.Event, object, bool | None]:
    """Blocking mode: encode and write this event under the file's mutex. Returns ok, None when
    the process exited during the call."""
    env, st = fe.env, inst_pipe.stats
    inst_pipe.hold(size)
    with mutex.request() as req:
        yield req
        cost, failed = inst_pipe.log_writer.write(fe.seed, fe.inst, [key])
        if env.now <= fe.exit_at:
            yield at(env, env.now + cost)
        if env.now > fe.exit_at:
            inst_pipe.release(size, 1)
            return None
    st.batch(1)
    if failed[0]:
        st.drop("log", 1, env.now)
    else:
        st.delivered += 1
        st.delivery.add(env.now - t)
    inst_pipe.release(size, 1)
    return not failed[0]
