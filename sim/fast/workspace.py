"""The fused path's work arrays, one set per thread, reused by every run of the process.

A call of ``fused.run_fused`` writes up to ``backend.FUSED_CALL`` accepted times, occupancy
observations and batches (~34 MiB at 2^19 arrivals). Allocated per backend, those arrays were
fresh memory for every run and apiserver whenever the heap could not hand back a freed block of
that size (after the reference engine's or a report's allocations): one page fault per 4 KiB on
first touch, measured at +37-41 ms on a 12 ms three-apiserver run, in 2 rounds of 6. Kept here,
each thread faults its pages in once. Nothing outside one ``feed_generated`` call holds a view of
them (the queue it carries and the batches it hands on are copies), and one thread runs one fused
stream at a time, so the arrays are never shared between calls that are alive together.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt


@dataclass
class Work:
    """Accepted times, occupancy observations (times, values), batch dispatch times, batch
    (first accepted position, size): room for ``n`` arrivals per call."""

    n: int
    acc_t: npt.NDArray[np.float64]
    obs: npt.NDArray[np.float64]
    d: npt.NDArray[np.float64]
    an: npt.NDArray[np.int64]


_LOCAL = threading.local()


def work(n: int) -> Work:
    """This thread's work arrays, grown to room for ``n`` arrivals if they are smaller."""
    w: Work | None = getattr(_LOCAL, "work", None)
    if w is None or w.n < n:
        w = Work(n, np.empty(n), np.empty((2, 2 * n + 4)), np.empty(n + 2), np.empty((2, n + 2), dtype=np.int64))
        _LOCAL.work = w
    return w
