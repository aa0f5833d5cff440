"""Events at absolute times.

SimPy's ``timeout(delay)`` fires at ``now + delay``; ``now + (t - now)`` is not always exactly
``t`` in floating point, and a one-ulp difference can reorder an arrival and a batch deadline.
Every process here schedules at absolute times computed by the same expressions the fast engine
uses, with explicit priorities for events at the same instant:

* ``ARRIVAL`` (SimPy's URGENT): events reach the backends first at a given instant;
* ``STOP``: the audit backend's stop signal, after the arrivals of the same instant;
* ``PIPELINE`` (NORMAL): then the collector's timer, throttle wake-ups and sync writes;
* ``TASK`` (2): last, the async webhook goroutines' attempt ends and backoff wake-ups. So a batch
  dispatched at the instant another one finishes counts both as in flight, and memory released
  at an instant never hides the bytes accepted at that instant.
"""
from __future__ import annotations

from heapq import heappush

import simpy
from simpy.core import NORMAL, URGENT

ARRIVAL = URGENT
STOP = (URGENT + NORMAL) / 2  # the audit stopCh: after the arrivals of its instant, before the collector
PIPELINE = NORMAL
TASK = NORMAL + 1


def at(env: simpy.Environment, t: float, priority: int = PIPELINE) -> simpy.Event:
    """An event that fires at absolute time ``t`` (never earlier than now)."""
    ev = simpy.Event(env)
    ev._ok = True
    ev._value = None
    when = t if t > env.now else env.now
    heappush(env._queue, (when, priority, next(env._eid), ev))  # noqa: SLF001 - absolute scheduling
    return ev
