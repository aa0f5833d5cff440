"""The event stream of the fused fast path, drawn a buffer at a time inside compiled code.

For Poisson arrivals over a step rate profile (a constant rate, steps, or on/off bursts),
:func:`sim.workload.iter_requests` draws standard exponential gaps from the instance's
``S_ARRIVALS`` PCG64 stream, ``m`` at a time per chunk of time, keeps the points before the
chunk's end in cumulative-intensity space and discards the rest of that draw (the process is
memoryless), then maps the points back to time (``y / rate`` for a constant rate, the inverse of
the step cumulative intensity otherwise). :func:`fill` replays exactly those steps from the same
``numpy.random.Generator`` (:mod:`sim.fast.pcg64`: numpy's PCG64 and ziggurat inline, on the
generator's own state, bit for bit), a buffer of ``BUFFER`` events at a time: each request's class
from the same counter hash as ``iter_requests`` (``kernels.class_one``), then its class's events,
all at its arrival time (``iter_events`` with zero stage offsets). ``tests/test_fused.py`` checks
the stream against ``iter_events``. :func:`source` says which scenarios the fused path serves.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numba as nb
import numpy as np
import numpy.typing as npt

from audit_tune.sim import kernels, rng
from audit_tune.sim.fast import pcg64
from audit_tune.sim.scenario import Scenario
from audit_tune.sim.workload import LEVELS, META_SIZE, RateProfile, Workload, chunk_seconds

F64 = npt.NDArray[np.float64]

# generator state G (float64): the chunk loop of iter_requests, the buffer of drawn events and,
# set before each call of run_fused, its limits; the buffer follows at G[N_GEN:N_GEN + BUFFER],
# then room for the points of one fill
(G_Y, G_BASE, G_SUM, G_LEFT, G_YEND, G_START, G_END, G_STEP, G_DUR, G_RATE, G_TOTAL, G_INCHUNK, G_M,
 G_DONE, G_BI, G_BN, G_COUNT, G_LAST, G_ENDED, G_TSTOP, G_HORIZON, G_NQ, G_K,
 G_SEG, G_CHUNK, G_REQ, G_NK, G_OY, G_OC, G_NCLS, G_WIDTH, G_HA_HI, G_HA_LO, G_TAB) = range(34)
N_GEN = 34
BUFFER = 512  # events drawn ahead, a few at a time, into a buffer that stays in the L1 cache
MAX_CHUNKS = 1 << 20  # chunk ends of a step profile kept in its table; more: the array path

# The tables T (float64) of a stream, at the end of G (from G[G_TAB]). A step profile
# (G[G_RATE] == 0): its knots' cumulative intensity, time and rate (G[G_NK] each, from 0), then
# each chunk's end in cumulative-intensity space (from G[G_OY]). Per request class (G[G_NCLS] each, from G[G_OC]): the normalised
# cumulative weight, the events per request, the requests drawn so far.
C_W, C_NST, C_REQS = range(3)


@dataclass
class Source:
    """One apiserver's event stream for the fused path: the generator, its state and tables, and
    what every event is (``size`` bytes after truncation; its request class's level)."""

    gen: np.random.Generator
    G: np.ndarray  # state, the buffer of drawn events, room for one fill's points, the tables
    size: int
    levels: tuple[str, ...]  # per request class
    state: pcg64.U64 = field(init=False)  # gen's PCG64 state, drawn from in compiled code

    def __post_init__(self) -> None:
        self.state = pcg64.state_of(self.gen)

    @property
    def drawn(self) -> int:
        """Events handed to the collector so far."""
        return int(self.G[G_COUNT])

    @property
    def ended(self) -> bool:
        return bool(self.G[G_ENDED])

    def requests(self) -> list[int]:
        """Requests drawn so far (arrived before the duration), per class."""
        n, o = int(self.G[G_NCLS]), int(self.G[G_TAB] + self.G[G_OC])
        return [int(v) for v in self.G[o + C_REQS * n:o + (C_REQS + 1) * n]]


def _event_size(sc: Scenario) -> int | None:
    """The one size every event has after truncation, or None (several sizes, an event that
    truncation drops, or one emitted after its request's arrival)."""
    w = sc.workload
    if any(off != 0.0 for c in w.classes for _, off in c.stages(w.policy_omit_stages)):
        return None
    return uniform_size(sc, sc.enabled[0])


def uniform_size(sc: Scenario, backend: str) -> int | None:
    """The one size every event reaching ``backend``'s buffer has after its truncation, or None
    (several sizes, or an event that truncation drops)."""
    w = sc.workload
    tr = sc.flags.backend(backend).truncate
    sizes = set()
    for c in w.classes:
        for stage, _ in c.stages(w.policy_omit_stages):
            size = c.stage_sizes()[stage]
            if tr.enabled and size > tr.max_event_size:
                if LEVELS.index(c.level) >= LEVELS.index("Request"):
                    size = min(size, META_SIZE)
                if size > tr.max_event_size:
                    return None
            sizes.add(size)
    return sizes.pop() if len(sizes) == 1 else None


def _profile(sc: Scenario, inst: int) -> RateProfile:
    """The instance's rate profile as ``iter_requests`` builds it (Poisson over steps: :func:`_shape`
    has checked)."""
    w, a = sc.workload, sc.workload.arrivals
    share = w.shares()[inst]
    if a.onoff is not None:
        return a.onoff.profile(sc.seed, inst, w.duration, share)
    return a.profile.scaled(share)


def _shape(sc: Scenario) -> tuple[int, float] | None:
    """The one event size and the chunk length (``chunk_seconds``) of a scenario the fused path
    serves, or None when it needs the array path: one backend, asynchronous, with a batch window
    (max-size 1, or a max-wait); Poisson arrivals over steps; every audit event emitted at its
    request's arrival and of one size after truncation (:func:`_event_size`); no restarts."""
    a = sc.workload.arrivals
    if len(sc.enabled) != 1 or sc.shutdown.restart_at or a.process != "poisson":
        return None
    b = sc.flags.backend(sc.enabled[0]).batch
    if not b.async_delegate or (b.max_batch_size > 1 and b.max_batch_wait <= 0):
        return None
    if a.onoff is None and a.profile.interp != "step" and len(a.profile.rates) > 1:
        return None
    step = chunk_seconds(sc.workload)
    if sc.workload.duration / step > MAX_CHUNKS:
        return None  # a step profile's table of chunk ends would be too long
    size = _event_size(sc)
    return None if size is None else (size, step)


def fusable(sc: Scenario) -> bool:
    """Whether the fused path serves ``sc`` (before its arrivals are looked at; :func:`_shape`)."""
    return _shape(sc) is not None


def source(sc: Scenario, inst: int) -> Source | None:
    """The fused stream of apiserver ``inst``, or None when the scenario needs the array path
    (:func:`fusable`)."""
    shape = _shape(sc)
    if shape is None:
        return None
    size, step = shape
    profile = _profile(sc, inst)
    w = sc.workload
    G = new_source(w.duration, step)
    if len(profile.rates) == 1 and profile.times[0] == 0.0 and profile.rates[0] > 0:
        G[G_RATE] = profile.rates[0]  # a constant rate: y / rate, chunk ends rate * end
        G[G_TOTAL] = profile.rates[0] * w.duration  # RateProfile.cumulative of a constant: 0.0 + rate * x
        tables = np.empty(0)
    else:
        ends = _chunk_ends(w.duration, step)
        cum, kt, kr = profile.step_tables(w.duration)
        yend = profile.cumulative(ends, w.duration)
        G[G_TOTAL] = yend[-1] = float(profile.cumulative(np.array([w.duration]), w.duration)[0])
        G[G_NK], G[G_OY] = len(cum), 3 * len(cum)
        tables = np.concatenate([cum, kt, kr, yend])
    G = np.concatenate([G, _with_classes(G, tables, w, inst, sc.seed)])
    return Source(rng.generator(sc.seed, rng.S_ARRIVALS, inst), G, size, tuple(c.level for c in w.classes))


def _chunk_ends(duration: float, step: float) -> np.ndarray:
    """The ends of ``iter_requests``'s chunks (the last is the duration)."""
    ends = []
    start = 0.0
    while start < duration:
        end = min(start + step, duration)
        ends.append(end)
        start = end
    return np.array(ends)


def _with_classes(G: F64, tables: F64, w: Workload, inst: int, seed: int) -> F64:
    """``tables`` followed by the class tables (see C_W); the class draw's key into ``G``."""
    ncls = len(w.classes)
    cum_w = np.cumsum([c.weight for c in w.classes], dtype=float)
    cum_w /= cum_w[-1]
    nst = [len(c.stages(w.policy_omit_stages)) for c in w.classes]
    ha = int(kernels.class_key(np.uint64(rng.hash_start(seed, rng.S_REQ_CLASS)), np.uint64(inst)))
    G[G_OC], G[G_NCLS], G[G_WIDTH] = len(tables), ncls, max(max(nst), 1)
    G[G_HA_HI], G[G_HA_LO] = ha >> 32, ha & 0xFFFFFFFF
    return np.concatenate([tables, cum_w, np.array(nst, dtype=float), np.zeros(ncls)])


def new_source(duration: float, step: float) -> np.ndarray:
    """Generator state at t=0 over ``duration``, in chunks of ``step`` seconds
    (``workload.chunk_seconds``); :func:`source` sets the rate (a constant one) or adds the
    tables (a step profile), and the class tables."""
    g = np.zeros(N_GEN + 2 * BUFFER)  # the state, the buffer, the points of one fill (then the tables)
    g[G_STEP], g[G_DUR] = step, duration
    g[G_LAST] = math.nan
    g[G_BI] = -1.0  # nothing drawn yet
    g[G_TAB] = N_GEN + 2 * BUFFER
    g[G_NCLS], g[G_WIDTH] = 1, 1
    return g


@nb.njit(cache=True, nogil=True)
def fill(st: pcg64.U64, G: F64, buf: F64) -> int:
    """Draw the next events into ``buf``; returns how many (fewer than its length only at the
    stream's end, which sets ``G[G_DONE]``, or when the next request's events would not fit):
    the points of :func:`_draw`, mapped to time and expanded to events when the rate is not
    constant or a request is not one event."""
    T = G[int(G[G_TAB]):]
    const = G[G_RATE] > 0
    ncls, oc, width = int(G[G_NCLS]), int(G[G_OC]), int(G[G_WIDTH])
    if const and ncls == 1 and T[oc + C_NST] == 1:
        n = _draw_times(st, G, T, buf)  # one event per request at a constant rate: the arrivals themselves
        G[G_REQ] += n
        T[oc + C_REQS] += n
        return n
    pts = G[N_GEN + BUFFER:N_GEN + BUFFER + len(buf) // width]
    k = 0
    while k == 0 and G[G_DONE] == 0:  # requests without events (level None) add none
        if const:
            n = _draw_times(st, G, T, pts)
        else:
            n = _to_time(G, T, pts, _draw_points(st, G, T, pts))
        k = _expand(G, T, pts, n, buf)
    return k


@nb.njit(cache=True, nogil=True)
def _draw_times(st: pcg64.U64, G: F64, T: F64, out: F64) -> int:
    """:func:`_draw` at a constant rate: the points as times."""
    return _draw(st, G, T, out, True)


@nb.njit(cache=True, nogil=True)
def _draw_points(st: pcg64.U64, G: F64, T: F64, out: F64) -> int:
    """:func:`_draw` over a step profile's table of chunk ends: the points in intensity space."""
    return _draw(st, G, T, out, False)


@nb.njit(cache=True, nogil=True, inline="always")
def _draw(st: pcg64.U64, G: F64, T: F64, out: F64, const: bool) -> int:
    """The next points of ``iter_requests`` into ``out``: per chunk ``[start, end)``, draws of
    ``m`` gaps from ``y``, the points before ``y_end`` kept; as times (``y / rate``) for a
    constant rate, else as points in cumulative-intensity space (the stream's end is then found
    by :func:`_to_time`)."""
    y, base, s, left, yend = G[G_Y], G[G_BASE], G[G_SUM], int(G[G_LEFT]), G[G_YEND]
    start, end, step, dur, rate, total = G[G_START], G[G_END], G[G_STEP], G[G_DUR], G[G_RATE], G[G_TOTAL]
    inchunk, m = G[G_INCHUNK] > 0, int(G[G_M])
    done = G[G_DONE] > 0
    chunk, oy = int(G[G_CHUNK]), int(G[G_OY])
    k = 0
    nbuf = len(out)
    while k < nbuf and not done:
        if left == 0:
            if not inchunk:
                if not start < dur:
                    done = True
                    break
                end = min(start + step, dur)
                if const:
                    yend = rate * end if end < dur else total
                else:
                    yend = T[oy + chunk]
                chunk += 1
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
            if const:
                v = v / rate
                if not v < dur:
                    done = True
                    break
            out[k] = v
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
    G[G_CHUNK] = chunk
    return k


@nb.njit(cache=True, nogil=True)
def _to_time(G: F64, T: F64, pts: F64, n: int) -> int:
    """Points of a step profile to times, in place (``RateProfile.inverse_cumulative``, the
    arithmetic of ``kernels.inverse_step``); the points only grow, so the segment
    ``searchsorted(cum, y, "right") - 1`` (clipped) only moves forward. Returns how many are
    before the duration; the first one past it ends the stream."""
    nk, seg, dur = int(G[G_NK]), int(G[G_SEG]), G[G_DUR]
    last_seg = nk - 2
    for k in range(n):
        v = pts[k]
        while seg < last_seg and T[seg + 1] <= v:
            seg += 1
        ri = T[2 * nk + seg]
        t = T[nk + seg] + ((v - T[seg]) / ri if ri > 0 else np.inf)
        if not t < dur:
            G[G_DONE] = 1.0
            n = k
            break
        pts[k] = t
    G[G_SEG] = seg
    return n


@nb.njit(cache=True, nogil=True)
def _expand(G: F64, T: F64, pts: F64, n: int, buf: F64) -> int:
    """Requests at times ``pts[:n]`` to their events in ``buf`` (``iter_events`` with every
    offset zero): each request's class from the counter hash of ``iter_requests``
    (``kernels.class_one``), then as many copies of its time as its class has events."""
    ncls, oc, req = int(G[G_NCLS]), int(G[G_OC]), int(G[G_REQ])
    ha = (np.uint64(G[G_HA_HI]) << np.uint64(32)) | np.uint64(G[G_HA_LO])
    cum_w = T[oc + C_W * ncls:oc + (C_W + 1) * ncls]
    k = 0
    for i in range(n):
        c = 0 if ncls == 1 else kernels.class_one(ha, req + i, np.uint64(0), cum_w)
        T[oc + C_REQS * ncls + c] += 1.0
        for _ in range(int(T[oc + C_NST * ncls + c])):
            buf[k] = pts[i]
            k += 1
    G[G_REQ] = req + n
    return k


@nb.njit(cache=True, nogil=True)
def begin(st: pcg64.U64, G: F64, buf: F64) -> tuple[int, int, bool]:
    """The stream's read position (index, buffered count, ended), filling the buffer first."""
    bi, bn = int(G[G_BI]), int(G[G_BN])
    if bi < 0:
        bn = fill(st, G, buf)
        bi = 0
        G[G_ENDED] = 1.0 if bn == 0 else 0.0
    return bi, bn, G[G_ENDED] > 0


@nb.njit(cache=True, nogil=True)
def refill(st: pcg64.U64, G: F64, buf: F64) -> tuple[int, int, bool]:
    """The buffer is used up: draw the next events (read position, count, ended)."""
    if G[G_DONE] > 0:
        return 0, 0, True
    bn = fill(st, G, buf)
    return 0, bn, bn == 0


def stream(src: Source, n: int) -> F64:
    """The next ``n`` events (fewer when the stream ends) of ``src``, for tests."""
    return _stream(src.state, src.G, n)


@nb.njit(cache=True, nogil=True)
def _stream(st: pcg64.U64, G: F64, n: int) -> F64:
    buf = G[N_GEN:N_GEN + BUFFER]
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

