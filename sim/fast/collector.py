"""Phase 1 of the fast engine: the buffered backend's collector as a compiled state machine.

The same model as ``sim.reference.buffered`` (read its docstring for the upstream behaviour),
stepped event by event in a numba loop instead of SimPy processes. Ties at one instant follow the
reference's priorities: arrivals (and the stop signal) first, then the collector; the window timer
wins over an event arriving exactly at the deadline.

Batches are contiguous runs of the accepted-events sequence (the buffer is FIFO and the collector
takes from its head), so a batch is just ``(dispatch time, first accepted index, size)``; the
engine maps that back to event times and sizes. Work is streamed in chunks: the loop stops when it
would need an arrival beyond the chunk, and its state (mode, window deadline, token bucket, the
partly collected batch and the queue) is carried to the next call.
"""
from __future__ import annotations

import numba as nb
import numpy as np
import numpy.typing as npt

from audit_tune.sim.stats import span_samples

WAIT, BLOCKED_DISPATCH, BLOCKED_WRITE, DRAIN, DONE, DISPATCH, AFTER = 0, 1, 2, 3, 4, 5, 6
# DISPATCH (hand the pending batch to the delegate) and AFTER (stop check, next window) are
# transient: the advance loop always leaves in WAIT, BLOCKED_*, or DONE.

# state vector S
S_MODE, S_DEADLINE, S_BLOCK_END, S_TOKENS, S_LAST, S_BATCH_N, S_STOPPING, S_SEQ, S_END, S_PEND_N = range(10)
N_STATE = 10
# params P
# P_OBS: 1 to write the occupancy observations, 0 to overwrite the first two (nothing reads them)
P_CAP, P_MAX, P_WAIT, P_THR, P_QPS, P_BURST, P_SYNC, P_PER_BATCH, P_OBS = range(9)
# counters C (float64): outputs of one call
C_ACC_N, C_QH, C_NB, C_NO, C_DROPS, C_FIRST_DROP, C_TW, C_MAXOCC = range(8)


def new_state(tokens: float) -> np.ndarray:
    """State at t=0: a window opening, ``tokens`` in the bucket (``burst`` unless a scenario says)."""
    s = np.zeros(N_STATE)
    s[S_MODE] = WAIT
    s[S_DEADLINE] = np.nan  # set on first call (window opens at t=0)
    s[S_TOKENS] = tokens
    s[S_LAST] = 0.0
    s[S_END] = np.nan
    return s


@nb.njit(cache=True, nogil=True, inline="always")
def _reserve(tokens: float, last: float, now: float, qps: float, burst: float) -> tuple[float, float]:
    """``TokenBucket.reserve`` (sim/throttle.py), same arithmetic: new tokens and the wait."""
    tokens = tokens + (now - last) * qps
    if tokens > burst:
        tokens = burst
    tokens -= 1.0
    return tokens, (-tokens / qps if tokens < 0.0 else 0.0)


@nb.njit(cache=True, nogil=True, inline="always")
def _dispatch(out_d: npt.NDArray[np.float64], out_e: npt.NDArray[np.float64], out_a: npt.NDArray[np.int64],
              out_n: npt.NDArray[np.int64], batch: tuple[int, float, int, int], acost: npt.NDArray[np.float64],
              acc: npt.NDArray[np.int64], write: tuple[bool, float]) -> float:
    """Record batch ``nbt`` (accepted positions a..a+n) dispatched at T (``batch`` is (nbt, T, a,
    n)); for the sync delegate (``write`` is (sync, per_batch)) its write ends after ``per_batch``
    plus each event's cost, added in order. Returns the write end."""
    nbt, T, a, n = batch
    sync, per_batch = write
    out_d[nbt] = T
    out_a[nbt] = a
    out_n[nbt] = n
    out_e[nbt] = np.nan
    if not sync:
        return T
    cost = per_batch
    for q in range(a, a + n):
        cost += acost[acc[q]]
    out_e[nbt] = T + cost
    return T + cost


@nb.njit(cache=True, nogil=True, inline="always")
def _arrive(i: int, ta: float, cap: int, qh: int, acc: npt.NDArray[np.int64], obs_t: npt.NDArray[np.float64],
            obs_v: npt.NDArray[np.float64], ostep: int,
            cnt: tuple[int, int, int, float, int]) -> tuple[int, int, int, float, int]:
    """Event ``i`` arrives at ``ta``: dropped when the buffer holds ``cap`` events, else accepted
    (its occupancy observed). ``cnt`` and the result: (accepted count, observations, drops, first
    drop time, max occupancy)."""
    acc_n, no, drops, first_drop, max_occ = cnt
    occ = acc_n - qh
    if occ >= cap:
        drops += 1
        if np.isnan(first_drop):
            first_drop = ta
    else:
        acc[acc_n] = i
        acc_n += 1
        obs_t[no] = ta
        obs_v[no] = occ + 1
        no += ostep
        if occ + 1 > max_occ:
            max_occ = occ + 1
    return acc_n, no, drops, first_drop, max_occ


@nb.njit(cache=True, nogil=True, inline="always")
def _below(x: float, lim: float, inclusive: bool) -> bool:
    return x <= lim if inclusive else x < lim


@nb.njit(cache=True, nogil=True, inline="always")
def gallop(at: npt.NDArray[np.float64], i: int, n: int, lim: float, inclusive: bool) -> int:
    """The first index ``j >= i`` of the sorted ``at[:n]`` with ``at[j] >= lim`` (``> lim`` when
    ``inclusive``), by a galloping search from ``i``: about ``2 log2(j - i)`` steps."""
    if i >= n or not _below(at[i], lim, inclusive):
        return i
    a, b, step = i, i + 1, 1  # at[a] below lim; b == n or at[b] not, once the gallop ends
    while b < n and _below(at[b], lim, inclusive):
        a = b
        step <<= 1
        b = a + step
    if b > n:
        b = n
    while b - a > 1:
        m = (a + b) >> 1
        if _below(at[m], lim, inclusive):
            a = m
        else:
            b = m
    return b


@nb.njit(cache=True, nogil=True, inline="always")
def _arrive_all(i: int, j: int, at: npt.NDArray[np.float64], cap: int, qh: int, acc: npt.NDArray[np.int64],
                cnt: tuple[int, int, float, int]) -> tuple[int, int, float, int]:
    """Events ``i..j-1`` arrive while nothing leaves the buffer: :func:`_arrive` for each, at once,
    when no occupancy series is kept. The occupancy grows by one per accept, so the first
    ``cap - occupancy`` are accepted and the rest dropped. ``cnt`` and the result: (accepted
    count, drops, first drop time, max occupancy)."""
    acc_n, drops, first_drop, max_occ = cnt
    occ = acc_n - qh
    take = min(j - i, max(cap - occ, 0))
    for q in range(take):
        acc[acc_n + q] = i + q
    acc_n += take
    if take and occ + take > max_occ:
        max_occ = occ + take
    if take < j - i:
        drops += j - i - take
        if np.isnan(first_drop):
            first_drop = at[i + take]
    return acc_n, drops, first_drop, max_occ


@nb.njit(cache=True, nogil=True)
def run_collector(at: npt.NDArray[np.float64], acost: npt.NDArray[np.float64], gx: npt.NDArray[np.int64],
                  P: npt.NDArray[np.float64], S: npt.NDArray[np.float64], C: npt.NDArray[np.float64],
                  ints: npt.NDArray[np.int64], floats: npt.NDArray[np.float64], obs: npt.NDArray[np.float64],
                  lims: tuple[int, bool, float, float, int]) -> int:
    """The collector over the arrivals ``at`` (the first ``nq`` the carried queue); ``lims`` is
    (nq, final, stop time, horizon, the sequence number of ``gx[0]``). Outputs: ``ints`` rows are
    the accepted events (indices into ``at``) and each batch's first accepted position and size;
    ``floats`` rows each batch's dispatch time and (sync) write end; ``obs`` rows the occupancy
    observations (times, values); counters in ``C``, the state in ``S``. Returns how many
    arrivals were consumed."""
    nq, final, t_stop, horizon, seq0 = lims
    acc, out_a, out_n = ints[0], ints[1], ints[2]
    out_d, out_e = floats[0], floats[1]
    obs_t, obs_v = obs[0], obs[1]
    INF = np.inf
    N = at.shape[0]
    cap = int(P[P_CAP])
    max_size = int(P[P_MAX])
    max_wait = P[P_WAIT]
    thr = P[P_THR] > 0
    qps = P[P_QPS]
    burst = P[P_BURST]
    sync = P[P_SYNC] > 0
    per_batch = P[P_PER_BATCH]
    ostep = 1 if P[P_OBS] > 0 else 0
    use_timer = max_size > 1 and max_wait > 0
    one_only = max_size > 1 and max_wait <= 0
    limit = max_size if use_timer else 1
    mode = int(S[S_MODE])
    deadline = S[S_DEADLINE]
    block_end = S[S_BLOCK_END]
    tokens = S[S_TOKENS]
    last = S[S_LAST]
    batch_n = int(S[S_BATCH_N])
    stopping = S[S_STOPPING] > 0
    seq = int(S[S_SEQ])
    pend_n = int(S[S_PEND_N])
    end_time = S[S_END]
    if np.isnan(deadline):
        deadline = max_wait if use_timer else INF

    for j in range(nq):
        acc[j] = j
    acc_n = nq
    if mode == WAIT:
        qh = batch_n
    elif mode == BLOCKED_DISPATCH:
        qh = pend_n
    else:
        qh = 0
    i = nq
    nbt = 0
    no = 0
    drops = 0
    first_drop = C[C_FIRST_DROP]
    tw = 0.0
    max_occ = int(C[C_MAXOCC])

    adv = False
    T = 0.0
    while True:
        if adv:
            # the collector acts at time T until it has to wait
            adv = False
            while True:
                if mode == WAIT:
                    close = False
                    if one_only:
                        limit = min(max_size, 1 + gx[seq - seq0])
                    while True:
                        if batch_n >= limit or stopping:
                            close = True
                            break
                        if use_timer and T >= deadline:
                            close = True
                            break
                        if one_only and batch_n > 0 and qh == acc_n:
                            close = True
                            break
                        if qh < acc_n:
                            k = min(limit - batch_n, acc_n - qh)
                            qh += k
                            batch_n += k
                            obs_t[no] = T
                            obs_v[no] = acc_n - qh
                            no += ostep
                            continue
                        break
                    if not close:
                        break
                    if batch_n == 0:
                        mode = AFTER  # an empty window: nothing sent, no token used
                        continue
                    n = batch_n
                    batch_n = 0
                    w = 0.0
                    if thr:
                        tokens, w = _reserve(tokens, last, T, qps, burst)
                        last = T
                    pend_n = n
                    if w > 0.0:
                        tw += w
                        mode = BLOCKED_DISPATCH
                        block_end = T + w
                        break
                    mode = DISPATCH
                    continue
                elif mode == DISPATCH:
                    n = pend_n
                    pend_n = 0
                    end = _dispatch(out_d, out_e, out_a, out_n, (nbt, T, qh - n, n), acost, acc, (sync, per_batch))
                    nbt += 1
                    seq += 1
                    if sync:
                        mode = BLOCKED_WRITE
                        block_end = end
                        break
                    mode = AFTER
                    continue
                elif mode == AFTER:
                    if stopping:
                        mode = DRAIN
                    else:
                        mode = WAIT
                        deadline = T + max_wait if use_timer else INF
                    continue
                elif mode == DRAIN:
                    # the channel is closed: later arrivals are not taken (the caller counts them);
                    # a kill (horizon) ends the drain with the rest still held
                    while T < horizon:
                        k = min(max_size, acc_n - qh)
                        if k == 0:
                            break
                        qh += k
                        obs_t[no] = T
                        obs_v[no] = acc_n - qh
                        no += ostep
                        if thr:
                            tokens, w = _reserve(tokens, last, T, qps, burst)
                            last = T
                            if w > 0.0:
                                tw += w
                                T = T + w
                        if T >= horizon:
                            break
                        T = _dispatch(out_d, out_e, out_a, out_n, (nbt, T, qh - k, k), acost, acc, (sync, per_batch))
                        nbt += 1
                        seq += 1
                    mode = DONE
                    end_time = T
                    break
                else:
                    break
        if mode == DONE:
            break
        # Two fast paths, each doing exactly what the general step below does for the arrivals it
        # takes (tests/test_fast.py compares the engines), in a tighter loop:
        if mode == WAIT and use_timer and not stopping and qh == acc_n:
            # (a) an open window with room: a group of arrivals at one instant strictly before the
            # deadline, the stop and the horizon is accepted, then taken into the batch at once,
            # as long as it neither overflows the buffer nor fills the batch
            lim = min(deadline, min(t_stop, horizon))
            if ostep == 0:
                # no occupancy series: the groups that fit are found by their sizes alone (a
                # branch-free scan), then accepted and taken at once
                j = gallop(at, i, N, lim, False)
                stop = min(j, i + max(limit - 1 - batch_n, 0))
                if stop < j:
                    while stop > i and at[stop - 1] == at[stop]:  # a group the batch cannot take whole
                        stop -= 1
                if stop > i:
                    run = 1
                    gmax = 1
                    for e in range(i + 1, stop):
                        run = run + 1 if at[e] == at[e - 1] else 1
                        gmax = max(gmax, run)
                    if gmax <= cap:
                        for q in range(stop - i):
                            acc[acc_n + q] = i + q
                        acc_n += stop - i
                        qh += stop - i
                        batch_n += stop - i
                        max_occ = max(max_occ, gmax)
                        T = at[stop - 1]
                        i = stop
            while i < N:
                ta = at[i]
                if not ta < lim:
                    break
                j = i + 1
                while j < N and at[j] == ta:
                    j += 1
                g = j - i
                if g > cap or batch_n + g >= limit:
                    break
                for e in range(i, j):  # all accepted: g <= cap and the buffer held none
                    acc_n, no, drops, first_drop, max_occ = _arrive(e, ta, cap, qh, acc, obs_t, obs_v, ostep, (acc_n, no, drops, first_drop, max_occ))
                qh += g
                batch_n += g
                obs_t[no] = ta
                obs_v[no] = acc_n - qh
                no += ostep
                T = ta
                i = j
        elif mode == BLOCKED_DISPATCH or mode == BLOCKED_WRITE:
            # (b) the collector is blocked (throttle or sync write): arrivals strictly before it
            # resumes, the stop and the horizon only enter the buffer or are dropped
            lim = min(block_end, min(t_stop if not stopping else INF, horizon))
            if ostep == 0:  # no occupancy series: every arrival before lim at once
                j = gallop(at, i, N, lim, False)
                acc_n, drops, first_drop, max_occ = _arrive_all(i, j, at, cap, qh, acc, (acc_n, drops, first_drop, max_occ))
                i = j
            while i < N:
                ta = at[i]
                if not ta < lim:
                    break
                acc_n, no, drops, first_drop, max_occ = _arrive(i, ta, cap, qh, acc, obs_t, obs_v, ostep, (acc_n, no, drops, first_drop, max_occ))
                i += 1
        # pick the next event
        ta = at[i] if i < N else INF
        if mode == WAIT:
            tc = deadline if use_timer else INF
        elif mode == BLOCKED_DISPATCH or mode == BLOCKED_WRITE:
            tc = block_end
        else:
            tc = INF
        ts = t_stop if not stopping else INF
        if i >= N and not final:
            break
        tmin = min(ta, min(tc, ts))
        if tmin == INF or tmin >= horizon:
            break
        if ta == tmin:
            while i < N and at[i] == ta:
                acc_n, no, drops, first_drop, max_occ = _arrive(i, ta, cap, qh, acc, obs_t, obs_v, ostep, (acc_n, no, drops, first_drop, max_occ))
                i += 1
            if ts == ta:
                stopping = True
            if mode == WAIT:
                adv = True
                T = ta
        elif ts == tmin:
            stopping = True
            if mode == WAIT:
                adv = True
                T = ts
        else:
            T = tc
            if mode == WAIT:
                adv = True
            elif mode == BLOCKED_DISPATCH:
                mode = DISPATCH  # the throttle wait is over
                adv = True
            else:  # BLOCKED_WRITE: the sync write is over
                mode = AFTER
                adv = True

    S[S_MODE] = mode
    S[S_DEADLINE] = deadline
    S[S_BLOCK_END] = block_end
    S[S_TOKENS] = tokens
    S[S_LAST] = last
    S[S_BATCH_N] = batch_n
    S[S_STOPPING] = 1.0 if stopping else 0.0
    S[S_SEQ] = seq
    S[S_END] = end_time
    S[S_PEND_N] = pend_n
    C[C_ACC_N] = acc_n
    C[C_QH] = qh
    C[C_NB] = nbt
    C[C_NO] = no
    C[C_DROPS] = drops
    C[C_FIRST_DROP] = first_drop
    C[C_TW] = tw
    C[C_MAXOCC] = max_occ
    return i


@nb.njit(cache=True, nogil=True)
def interval_runs(t: np.ndarray, v: np.ndarray, interval: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Runs of equal interval index ``t // interval`` (``t`` non-decreasing) in one pass: each run's
    index, the maximum of ``v`` over it and its last ``v`` (the reduction
    :meth:`sim.stats.SeriesMax.observe_many` makes with numpy, without its temporaries). ``//`` on
    floats is Python's (and numpy's) floor division, so the indices are the same."""
    n = len(t)
    keys = np.empty(n, dtype=np.int64)
    maxes = np.empty(n)
    lasts = np.empty(n)
    r = -1
    safe = -np.inf  # below this, t // interval is surely the current run's index (floor is monotone)
    for i in range(n):
        if t[i] < safe:
            k = keys[r]
        else:
            k = np.int64(t[i] // interval)
            safe = (k + 1) * interval * (1.0 - 1e-12) if interval > 0 else -np.inf
        if r < 0 or k != keys[r]:
            r += 1
            keys[r] = k
            maxes[r] = v[i]
        elif v[i] > maxes[r]:
            maxes[r] = v[i]
        lasts[r] = v[i]
    return keys[:r + 1], maxes[:r + 1], lasts[:r + 1]


@nb.njit(cache=True, nogil=True)
def memory_peak(at: np.ndarray, asz: np.ndarray, new_acc: np.ndarray, rel_t: np.ndarray, rel_b: np.ndarray,
                acc_bytes: int, retired: int) -> tuple[int, int, int, int]:
    """Peak bytes held over a chunk's accepts (events ``new_acc`` of ``at``/``asz``, in time order),
    merging two sorted sequences in one pass.

    At accept ``i`` the apiserver holds every byte accepted so far (``acc_bytes`` plus this chunk's
    sizes up to ``i``) minus every byte released strictly before its time (``retired`` plus the
    releases ``rel_t < t``; ``rel_t`` sorted). Returns (peak, accepted bytes after the chunk,
    releases consumed, their bytes)."""
    j = 0
    nrel = len(rel_t)
    rel_sum = 0
    cum = acc_bytes
    peak = np.iinfo(np.int64).min
    for e in new_acc:
        cum += asz[e]
        x = at[e]
        while j < nrel and rel_t[j] < x:
            rel_sum += rel_b[j]
            j += 1
        held = cum - (retired + rel_sum)
        if held > peak:
            peak = held
    return peak, cum, j, rel_sum


@nb.njit(cache=True, nogil=True)
def batch_bytes(asz: np.ndarray, acc: np.ndarray, a: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Bytes of each batch: batch ``j`` holds the accepted events ``acc[a[j]:a[j] + n[j]]``."""
    out = np.zeros(len(a), dtype=np.int64)
    for j in range(len(a)):
        s = 0
        for i in range(a[j], a[j] + n[j]):
            s += asz[acc[i]]
        out[j] = s
    return out


# delivery latency (batch end - event time) of every event of a delivered batch, in event order
ok_latencies = span_samples
