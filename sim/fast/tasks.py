"""Phase 2 of the fast engine: every async webhook batch's retry loop, vectorised.

A batch's goroutine is independent of every other batch (the receiver model draws each attempt's
outcome from the batch's identity, attempt number, start time and size), so all batches of a
chunk go through attempt 0 together, the failed ones sleep their backoff and go through attempt 1
together, and so on for the 5 attempts (``plugin/pkg/audit/webhook/webhook.go``). The arithmetic
is the reference's: ``start + duration``, then ``+ backoff``.

Not covered: latency that grows with the number of requests in flight (``per_inflight``) couples
batches; the fast engine hands such scenarios to the reference model.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from audit_tune.sim.receiver import ATTEMPTS, Receiver, backoff_sleep_array


@dataclass
class TaskOutcome:
    end: np.ndarray  # when the goroutine finished (delivered, or dropped after the last attempt)
    ok: np.ndarray  # delivered?
    attempt_starts: np.ndarray  # every attempt's start time
    attempt_codes: np.ndarray  # its code (HTTP status or -1)
    first_end: np.ndarray  # when each batch's first attempt ended


def run_tasks(rcv: Receiver, initial: float, seed: int, inst: int, seq: np.ndarray, d: np.ndarray,
              nbytes: np.ndarray) -> TaskOutcome:
    n = len(d)
    start = d.astype(float).copy()
    end = np.empty(n)
    ok = np.zeros(n, dtype=bool)
    alive = np.arange(n)
    starts, codes = [], []
    first_end = np.empty(n)
    for k in range(ATTEMPTS):
        if not len(alive):
            break
        s = start[alive]
        dur, okk, code = rcv.attempt_array(seed, inst, seq[alive], k, s, nbytes[alive])
        starts.append(s)
        codes.append(code)
        tend = s + dur
        if k == 0:
            first_end[:] = tend
        done = alive[okk]
        end[done] = tend[okk]
        ok[done] = True
        fail = alive[~okk]
        if k < ATTEMPTS - 1:
            start[fail] = tend[~okk] + backoff_sleep_array(initial, seed, inst, seq[fail], k)
        else:
            end[fail] = tend[~okk]
        alive = fail
    return TaskOutcome(end, ok, np.concatenate(starts) if starts else np.empty(0),
                       np.concatenate(codes) if codes else np.empty(0, dtype=np.int64), first_end)
