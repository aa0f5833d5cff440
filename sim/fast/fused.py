"""The fused fast path: arrivals are drawn inside the compiled collector loop, never stored.

For the common workloads (Poisson arrivals over a step rate profile, request classes whose audit
events are all emitted at the request's arrival and have one size) the event stream is the
arrival stream with each request repeated once per event, which :mod:`sim.fast.arrivals` draws
bit for bit as :func:`sim.workload.iter_events` yields it, a small buffer at a time, inside this
loop.

:func:`run_fused` is ``collector.run_collector`` (read its docstring for the model and the tie
rules) with ``at[i]`` replaced by that stream: an arrival is drawn when the collector needs it,
dropped arrivals only count, and accepted ones are written once, as times (``acc_t``), for the
engine's batch, latency and memory bookkeeping. A call stops after about ``K`` arrivals (never
inside a group of equal times) with the collector's state saved, like a chunk boundary.

Only the asynchronous (webhook) delegate runs here; the engine uses the array path for everything
else (replayed traces, deterministic or ramped arrivals, stage offsets, events of several sizes,
log backends, restarts).
"""
from __future__ import annotations

import numba as nb
import numpy as np
import numpy.typing as npt

from audit_tune.sim.fast import arrivals, pcg64
from audit_tune.sim.fast.collector import (
    AFTER,
    BLOCKED_DISPATCH,
    BLOCKED_WRITE,
    C_ACC_N,
    C_DROPS,
    C_FIRST_DROP,
    C_MAXOCC,
    C_NB,
    C_NO,
    C_QH,
    C_TW,
    DISPATCH,
    DONE,
    DRAIN,
    P_BURST,
    P_CAP,
    P_MAX,
    P_OBS,
    P_QPS,
    P_THR,
    P_WAIT,
    S_BATCH_N,
    S_BLOCK_END,
    S_DEADLINE,
    S_END,
    S_LAST,
    S_MODE,
    S_PEND_N,
    S_SEQ,
    S_STOPPING,
    S_TOKENS,
    WAIT,
    gallop,
)

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

@nb.njit(cache=True, nogil=True, inline="always")
def _reserve(tokens: float, last: float, now: float, qps: float, burst: float) -> tuple[float, float]:
    """``TokenBucket.reserve`` (sim/throttle.py), same arithmetic: new tokens and the wait."""
    tokens = tokens + (now - last) * qps
    if tokens > burst:
        tokens = burst
    tokens -= 1.0
    return tokens, (-tokens / qps if tokens < 0.0 else 0.0)


@nb.njit(cache=True, nogil=True)
def run_fused(st: pcg64.U64, G: F64, P: F64, S: F64, C: F64, acc_t: F64, obs: F64,
              out_d: F64, out_an: I64) -> None:
    """Run the collector over the next events of the stream ``st``/``G`` (``Source.state``,
    ``Source.G``). ``acc_t[:nq]`` holds the carried queue (the partial or pending batch first);
    ``G`` also carries the stop time, the horizon, ``nq`` and about how many arrivals this call
    may draw. Outputs as ``run_collector``:
    counters in ``C``, batches (dispatch time; first accepted position and size in ``out_an``),
    occupancy observations (times, values) in ``obs``; the state in ``S`` and ``G``."""
    t_stop, horizon, nq, K = G[arrivals.G_TSTOP], G[arrivals.G_HORIZON], int(G[arrivals.G_NQ]), int(G[arrivals.G_K])
    buf = G[arrivals.N_GEN:arrivals.N_GEN + arrivals.BUFFER]
    out_a, out_n = out_an[0], out_an[1]
    obs_t, obs_v = obs[0], obs[1]
    n_acc = len(acc_t)
    INF = np.inf
    cap = int(P[P_CAP])
    max_size = int(P[P_MAX])
    max_wait = P[P_WAIT]
    thr = P[P_THR] > 0
    qps = P[P_QPS]
    burst = P[P_BURST]
    ostep = 1 if P[P_OBS] > 0 else 0
    use_timer = max_size > 1 and max_wait > 0  # max-size > 1 with no max-wait runs on the array path
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
    bi, bn, ended = arrivals.begin(st, G, buf)
    count = 0
    last_t = G[arrivals.G_LAST]

    acc_n = nq
    if mode == WAIT:
        qh = batch_n
    elif mode == BLOCKED_DISPATCH:
        qh = pend_n
    else:
        qh = 0
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
            adv = False
            while True:
                if mode == WAIT:
                    close = False
                    while True:
                        if batch_n >= limit or stopping:
                            close = True
                            break
                        if use_timer and T >= deadline:
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
                        mode = AFTER
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
                    out_d[nbt] = T
                    out_a[nbt] = qh - n
                    out_n[nbt] = n
                    nbt += 1
                    seq += 1
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
                        out_d[nbt] = T
                        out_a[nbt] = qh - k
                        out_n[nbt] = k
                        nbt += 1
                        seq += 1
                    mode = DONE
                    end_time = T
                    break
                else:
                    break
        if mode == DONE:
            break
        # arrivals available in this call: the stream goes on, and the call's budget is not spent
        # (or the next arrival continues the group of equal times just taken)
        if mode == WAIT and use_timer and not stopping and qh == acc_n:
            # (a) an open window with an empty buffer: a group of g equal arrival times (often one
            # request's events) strictly before the deadline, the stop and the horizon is accepted
            # and taken into the batch at once, as long as it does not fill the batch and fits the
            # buffer: what the general step does (occupancy 1..g at its time, then 0)
            lim = min(deadline, min(t_stop, horizon))
            # over the buffered arrivals within the call's budget, each group followed by another
            # time in the buffer (so it is whole), with no refill: a tight loop
            stop = min(bn - 1, bi + (K - count)) if not ended else bi
            j = bi
            gmax = 0
            while j < stop:
                ta = buf[j]
                if not ta < lim:
                    break
                g = 1
                while j + g < bn and buf[j + g] == ta:
                    g += 1
                if j + g > stop or batch_n + g >= limit or g > cap:
                    break
                for i in range(g):
                    acc_t[acc_n] = ta  # room: this call accepts fewer than K arrivals in tight loops
                    acc_n += 1
                    obs_t[no] = ta
                    obs_v[no] = i + 1
                    no += ostep
                obs_t[no] = ta
                obs_v[no] = 0
                no += ostep
                if g > gmax:
                    gmax = g
                qh += g
                batch_n += g
                T = ta
                j += g
            if j > bi:
                if max_occ < gmax:
                    max_occ = gmax
                count += j - bi
                last_t = buf[j - 1]
                bi = j
            while not ended and (count < K or buf[bi] == last_t):
                ta = buf[bi]
                if not ta < lim or batch_n + 1 >= limit:
                    break
                bi += 1
                if bi == bn:
                    bi, bn, ended = arrivals.refill(st, G, buf)
                count += 1
                last_t = ta
                if acc_n >= n_acc:
                    raise IndexError("fused collector: accepted-times buffer full")
                acc_t[acc_n] = ta
                acc_n += 1
                obs_t[no] = ta
                obs_v[no] = 1
                no += ostep
                if max_occ < 1:
                    max_occ = 1
                if not ended and buf[bi] == ta:
                    break  # the rest of the group arrives in the general step, then the collector
                qh += 1
                batch_n += 1
                obs_t[no] = ta
                obs_v[no] = 0
                no += ostep
                T = ta
        elif mode == BLOCKED_DISPATCH or mode == BLOCKED_WRITE:
            # (b) the collector is blocked: arrivals strictly before it resumes, the stop and the
            # horizon only enter the buffer or are dropped
            lim = min(block_end, min(t_stop if not stopping else INF, horizon))
            # the same over the buffered arrivals within the call's budget, with no refill
            while not ended:
                stop = min(bn, bi + (K - count))
                j = bi
                if acc_n - qh >= cap:
                    # a full buffer and a blocked collector: every arrival before lim is dropped
                    while j < stop and buf[j] < lim:
                        j += 1
                    if j > bi:
                        drops += j - bi
                        if np.isnan(first_drop):
                            first_drop = buf[bi]
                else:
                    while j < stop:
                        ta = buf[j]
                        if not ta < lim:
                            break
                        occ = acc_n - qh
                        if occ >= cap:
                            drops += 1
                            if np.isnan(first_drop):
                                first_drop = ta
                        else:
                            acc_t[acc_n] = ta
                            acc_n += 1
                            obs_t[no] = ta
                            obs_v[no] = occ + 1
                            no += ostep
                            if occ + 1 > max_occ:
                                max_occ = occ + 1
                        j += 1
                if j == bi:
                    break
                count += j - bi
                last_t = buf[j - 1]
                bi = j
                if bi < bn:
                    break
                bi, bn, ended = arrivals.refill(st, G, buf)
            while not ended and (count < K or buf[bi] == last_t):
                ta = buf[bi]
                if not ta < lim:
                    break
                bi += 1
                if bi == bn:
                    bi, bn, ended = arrivals.refill(st, G, buf)
                count += 1
                last_t = ta
                occ = acc_n - qh
                if occ >= cap:
                    drops += 1
                    if np.isnan(first_drop):
                        first_drop = ta
                else:
                    if acc_n >= n_acc:
                        raise IndexError("fused collector: accepted-times buffer full")
                    acc_t[acc_n] = ta
                    acc_n += 1
                    obs_t[no] = ta
                    obs_v[no] = occ + 1
                    no += ostep
                    if occ + 1 > max_occ:
                        max_occ = occ + 1
        avail = not ended and (count < K or buf[bi] == last_t)
        ta = buf[bi] if avail else INF
        if mode == WAIT:
            tc = deadline if use_timer else INF
        elif mode == BLOCKED_DISPATCH or mode == BLOCKED_WRITE:
            tc = block_end
        else:
            tc = INF
        ts = t_stop if not stopping else INF
        if not avail and not ended:
            break
        tmin = min(ta, min(tc, ts))
        if tmin == INF or tmin >= horizon:
            break
        if ta == tmin:
            while not ended and buf[bi] == ta:
                bi += 1
                if bi == bn:
                    bi, bn, ended = arrivals.refill(st, G, buf)
                count += 1
                last_t = ta
                occ = acc_n - qh
                if occ >= cap:
                    drops += 1
                    if np.isnan(first_drop):
                        first_drop = ta
                else:
                    if acc_n >= n_acc:
                        raise IndexError("fused collector: accepted-times buffer full")
                    acc_t[acc_n] = ta
                    acc_n += 1
                    obs_t[no] = ta
                    obs_v[no] = occ + 1
                    no += ostep
                    if occ + 1 > max_occ:
                        max_occ = occ + 1
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
                mode = DISPATCH
                adv = True
            else:
                mode = AFTER
                adv = True

    G[arrivals.G_BI], G[arrivals.G_BN], G[arrivals.G_ENDED] = bi, bn, 1.0 if ended else 0.0
    G[arrivals.G_COUNT] += count
    G[arrivals.G_LAST] = last_t
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


@nb.njit(cache=True, nogil=True)
def memory_peak(acc_t: F64, lo: int, hi: int, size: int, rel_t: F64, rel_b: I64, acc_bytes: int,
                retired: int) -> tuple[int, int, int, int]:
    """``collector.memory_peak`` for events of one size: accepts ``acc_t[lo:hi]`` (in time order)
    against the releases ``rel_t``/``rel_b`` (sorted times, bytes), after ``acc_bytes`` accepted
    and ``retired`` released before.

    The accepts that see the same releases (those strictly before their time) form runs, and within
    a run the bytes held grow by ``size`` at each accept, so the run's last accept holds its most:
    only those are evaluated, each run's end found by a galloping search. The work is about one
    step per release (``log`` of the run's length), not one per accept."""
    nrel = len(rel_t)
    j = 0
    rel_sum = 0
    peak = np.iinfo(np.int64).min
    e = lo
    while e < hi:
        x = acc_t[e]
        while j < nrel and rel_t[j] < x:
            rel_sum += rel_b[j]
            j += 1
        # the run: accepts from e on that see exactly releases [0, j), i.e. at or before rel_t[j]
        last = hi - 1 if j == nrel else gallop(acc_t, e, hi, rel_t[j], True) - 1
        held = acc_bytes + size * (last - lo + 1) - (retired + rel_sum)
        if held > peak:
            peak = held
        e = last + 1
    return peak, acc_bytes + size * (hi - lo), j, rel_sum
