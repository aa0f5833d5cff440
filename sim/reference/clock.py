"""Events at absolute times.

SimPy's ``timeout(delay)`` fires at ``now + delay``; ``now + (t - now)`` is not always exactly
``t`` in floating point, and a one-ulp difference can reorder an arrival and a batch deadline.
Every process here schedules at absolute times computed by the same expressions the fast engine
uses, with explicit priorities for events at the same instant:

* ``ARRIVAL`` (SimPy's URGENT): events reach the backends first at a given instant;
* ``PIPELINE`` (NORMAL): the collector's timer, throttle wake-ups and delegate completions after.
"""
from __future__ import annotations

from heapq import heappush

import simpy
from simpy.core import NORMAL, URGENT

ARRIVAL = URGENT
PIPELINE = NORMAL


def at(env: simpy.Environment, t: float, priority: int = PIPELINE) -> simpy.Event:
    """An event that fires at absolute time ``t`` (never earlier than now)."""
    ev = simpy.Event(env)
    ev._ok = True
    ev._value = None
    when = t if t > env.now else env.now
    heappush(env._queue, (when, priority, next(env._eid), ev))  # noqa: SLF001 - absolute scheduling
    return ev
