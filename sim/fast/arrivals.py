"""The arrival stream of the fused fast path, drawn a buffer at a time inside compiled code.

For Poisson arrivals at a constant rate, :func:`sim.workload.iter_requests` draws standard
exponential gaps from the instance's ``S_ARRIVALS`` PCG64 stream, ``m`` at a time per chunk of
time, keeps the points before the chunk's end and discards the rest of that draw (the process is
memoryless). :func:`fill` replays exactly those steps from the same ``numpy.random.Generator``
(:mod:`sim.fast.pcg64`: numpy's PCG64 and ziggurat inline, on the generator's own state, bit for
bit), a buffer of ``BUFFER`` arrivals at a time; ``tests/test_fused.py`` checks the stream against
``iter_requests``. :func:`source` says which scenarios the fused path serves.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numba as nb
import numpy as np
import numpy.typing as npt

from audit_tune.sim import rng
from audit_tune.sim.fast import pcg64
from audit_tune.sim.scenario import Scenario
from audit_tune.sim.workload import LEVELS, META_SIZE, chunk_seconds

F64 = npt.NDArray[np.float64]

# generator state G (float64): the chunk loop of iter_requests, and the buffer of drawn arrivals
# and, set before each call of run_fused, its limits; the buffer follows at G[N_GEN:]
(G_Y, G_BASE, G_SUM, G_LEFT, G_YEND, G_START, G_END, G_STEP, G_DUR, G_RATE, G_TOTAL, G_INCHUNK, G_M,
 G_DONE, G_BI, G_BN, G_COUNT, G_LAST, G_ENDED, G_TSTOP, G_HORIZON, G_NQ, G_K) = range(23)
N_GEN = 23
BUFFER = 512  # arrivals drawn ahead, a few at a time, into a buffer that stays in the L1 cache


@dataclass
class Source:
    """One apiserver's arrival stream for the fused path: the generator, its state, and what
    every arrival is (one event of ``size`` bytes after truncation, of request level ``level``)."""

    gen: np.random.Generator
    G: np.ndarray  # state, then the buffer of drawn arrivals
    size: int
    level: str
    state: pcg64.U64 = field(init=False)  # gen's PCG64 state, drawn from in compiled code

    def __post_init__(self) -> None:
        self.state = pcg64.state_of(self.gen)

    @property
    def drawn(self) -> int:
        """Arrivals handed to the collector so far."""
        return int(self.G[G_COUNT])

    @property
    def ended(self) -> bool:
        return bool(self.G[G_ENDED])


def source(sc: Scenario, inst: int) -> Source | None:
    """The fused stream of apiserver ``inst``, or None when the scenario needs the array path:
    only one backend, asynchronous, with a batch window (max-size 1, or a max-wait); Poisson
    arrivals at a constant rate; one request class emitting one event at its arrival (and not
    dropped by truncation); no restarts."""
    w, a = sc.workload, sc.workload.arrivals
    if len(sc.enabled) != 1 or sc.shutdown.restart_at:
        return None
    opts = sc.flags.backend(sc.enabled[0])
    b = opts.batch
    if not b.async_delegate or (b.max_batch_size > 1 and b.max_batch_wait <= 0):
        return None
    p = a.profile
    if a.process != "poisson" or a.onoff is not None or p.times != (0.0,) or len(p.rates) != 1:
        return None
    if len(w.classes) != 1:
        return None
    c = w.classes[0]
    plan = c.stages(w.policy_omit_stages)
    if len(plan) != 1 or plan[0][1] != 0.0:
        return None
    rate = p.scaled(w.shares()[inst]).rates[0]
    if not rate > 0:
        return None
    size = c.stage_sizes()[plan[0][0]]
    tr = opts.truncate
    if tr.enabled and size > tr.max_event_size:
        if LEVELS.index(c.level) >= LEVELS.index("Request"):
            size = min(size, META_SIZE)
        if size > tr.max_event_size:
            return None
    return Source(rng.generator(sc.seed, rng.S_ARRIVALS, inst), new_source(rate, w.duration, chunk_seconds(w)),
                  size, c.level)


def new_source(rate: float, duration: float, step: float) -> np.ndarray:
    """Generator state at t=0 for ``rate`` arrivals/s (the instance's share) over ``duration``,
    in chunks of ``step`` seconds (``workload.chunk_seconds``)."""
    g = np.zeros(N_GEN + BUFFER)
    g[G_STEP], g[G_DUR], g[G_RATE] = step, duration, rate
    g[G_TOTAL] = rate * duration  # RateProfile.cumulative of a constant profile: 0.0 + rate * x
    g[G_LAST] = math.nan
    g[G_BI] = -1.0  # nothing drawn yet
    return g


@nb.njit(cache=True)
def fill(st: pcg64.U64, G: F64, buf: F64) -> int:
    """Draw the next arrivals into ``buf``; returns how many (fewer than its length only at the
    stream's end, which sets ``G[G_DONE]``). The steps of ``iter_requests`` for a constant rate:
    per chunk ``[start, end)``, draws of ``m`` gaps from ``y``, the points before ``y_end`` kept."""
    y, base, s, left, yend = G[G_Y], G[G_BASE], G[G_SUM], int(G[G_LEFT]), G[G_YEND]
    start, end, step, dur, rate, total = G[G_START], G[G_END], G[G_STEP], G[G_DUR], G[G_RATE], G[G_TOTAL]
    inchunk, m = G[G_INCHUNK] > 0, int(G[G_M])
    done = G[G_DONE] > 0
    k = 0
    nbuf = len(buf)
    while k < nbuf and not done:
        if left == 0:
            if not inchunk:
                if not start < dur:
                    done = True
                    break
                end = min(start + step, dur)
                yend = rate * end if end < dur else total
                inchunk = True
                expected = yend - y
                m = int(expected + 10 * math.sqrt(expected + 1) + 16)
            left = m
            base = y
            s = 0.0
        s += pcg64.standard_exponential(st)
        left -= 1
        v = base + s
        if v < yend:
            if left == 0:
                y = v  # the whole draw was inside: the next one continues from its last point
            t = v / rate
            if not t < dur:
                done = True
                break
            buf[k] = t
            k += 1
        else:
            # beyond the chunk: the rest of this draw is discarded, the next chunk starts at y_end
            for _ in range(left):
                pcg64.standard_exponential(st)
            left = 0
            y = yend
            start = end
            inchunk = False
    G[G_Y], G[G_BASE], G[G_SUM], G[G_LEFT], G[G_YEND] = y, base, s, left, yend
    G[G_START], G[G_END], G[G_INCHUNK], G[G_M] = start, end, 1.0 if inchunk else 0.0, m
    G[G_DONE] = 1.0 if done else 0.0
    return k


@nb.njit(cache=True)
def begin(st: pcg64.U64, G: F64, buf: F64) -> tuple[int, int, bool]:
    """The stream's read position (index, buffered count, ended), filling the buffer first."""
    bi, bn = int(G[G_BI]), int(G[G_BN])
    if bi < 0:
        bn = fill(st, G, buf)
        bi = 0
        G[G_ENDED] = 1.0 if bn == 0 else 0.0
    return bi, bn, G[G_ENDED] > 0


@nb.njit(cache=True)
def refill(st: pcg64.U64, G: F64, buf: F64) -> tuple[int, int, bool]:
    """The buffer is used up: draw the next arrivals (read position, count, ended)."""
    if G[G_DONE] > 0:
        return 0, 0, True
    bn = fill(st, G, buf)
    return 0, bn, bn == 0


def stream(g: np.random.Generator, G: F64, n: int) -> F64:
    """The next ``n`` arrivals (fewer when the stream ends) of the stream ``g``/``G``, for tests."""
    return _stream(pcg64.state_of(g), G, n)


@nb.njit(cache=True)
def _stream(st: pcg64.U64, G: F64, n: int) -> F64:
    buf = G[N_GEN:]
    bi, bn, ended = begin(st, G, buf)
    out = np.empty(n)
    k = 0
    while k < n and not ended:
        out[k] = buf[bi]
        k += 1
        bi += 1
        if bi == bn:
            bi, bn, ended = refill(st, G, buf)
    G[G_BI], G[G_BN], G[G_ENDED] = bi, bn, 1.0 if ended else 0.0
    G[G_COUNT] += k
    return out[:k]
