"""One backend of one apiserver in the fast engine (``engine``'s steps 1-4): truncation, the
collector (``collector.run_collector`` over arrays, or ``fused.run_fused`` drawing its own arrivals),
the retry loop of async batches (``tasks.run_tasks``) and the statistics, fed chunk by chunk (or
block by block, or call by call) with its state carried between feeds.
"""
from __future__ import annotations

import math

import numpy as np

from audit_tune.sim import rng
from audit_tune.sim.config import BackendOptions
from audit_tune.sim.fast import arrivals, fused, workspace
from audit_tune.sim.fast import collector as col
from audit_tune.sim.fast.tasks import run_tasks
from audit_tune.sim.result import BackendStats
from audit_tune.sim.scenario import Scenario
from audit_tune.sim.shutdown import Lifetime, split_after_close
from audit_tune.sim.throttle import initial_tokens
from audit_tune.sim.workload import LEVELS, EventChunk

# arrivals per call of the fused collector: each call's batches then go through the vectorised
# retry loop, latency and memory passes, ~0.25 ms of numpy calls whatever their size. Measured (CPU,
# medians of 5, three rounds), the bench's 5k ev/s x 60 s run: 4.4-4.6 ms at 2^17, 3.9-4.0 ms at
# 2^19; 2 h at 10k ev/s: 0.70 and 0.62 s; 2^20 gains ~1% more for twice the work arrays (2^19:
# ~34 MiB per thread, sim/fast/workspace.py, touched only as far as a run's arrivals reach). The
# per-call sums (throttle wait, latency total) round differently with the call size, in the last ulps.
FUSED_CALL = 1 << 19
FUSED_SLACK = 1024  # room for a group of equal arrival times that straddles a call's budget
REQUEST_LEVEL = LEVELS.index("Request")


class Backend:
    """One backend of one apiserver, fed chunk by chunk."""

    def __init__(self, sc: Scenario, inst: int, name: str, opts: BackendOptions, stats: BackendStats,
                 life: Lifetime | None) -> None:
        self.sc, self.inst, self.name, self.opts = sc, inst, name, opts
        self.stats = stats
        self.life = life
        c = opts.batch
        self.P = np.array([c.buffer_size, c.max_batch_size, c.max_batch_wait, 1.0 if c.throttle_enable else 0.0,
                           c.effective_qps, float(c.throttle_burst), 0.0 if c.async_delegate else 1.0,
                           sc.log_writer.per_batch, 1.0 if stats.occupancy.keep else 0.0])
        first = life is None or life.up == 0.0
        self.S = col.new_state(initial_tokens(c.throttle_burst, sc.throttle_initial_tokens if first else None))
        up = life.up if life is not None else 0.0
        self.S[col.S_DEADLINE] = up + c.max_batch_wait if (c.max_batch_size > 1 and c.max_batch_wait > 0) else math.inf
        self.C = np.zeros(8)
        self.C[col.C_FIRST_DROP] = np.nan
        self.sync = not c.async_delegate
        self.size = arrivals.uniform_size(sc, name)  # every event's bytes, when they are all the same
        self.one_only = c.max_batch_size > 1 and c.max_batch_wait <= 0
        self.horizon = life.kill if life is not None else sc.workload.duration
        self.t_stop = life.drained if life is not None else math.inf
        self.after_close: list[np.ndarray] = []  # arrivals the closed (or killed) backend did not take
        self.dispatched_events = 0
        self.lost_inflight = 0
        self.lost_retry = 0
        # carried queue: accepted events not yet dispatched (partial batch first)
        self.q_t = np.empty(0)
        self.q_sz = np.empty(0, dtype=np.int64)
        self.q_id = np.empty(0, dtype=np.int64)
        self.q_cost = np.empty(0)
        self.q_fail = np.empty(0, dtype=bool)
        # memory: accepted bytes so far, and releases not yet retired
        self.acc_bytes = 0
        self.acc_events = 0
        self.rel_t = np.empty(0)
        self.rel_b = np.empty(0, dtype=np.int64)
        self.rel_n = np.empty(0, dtype=np.int64)
        self.retired_bytes = 0
        self.released_events = 0  # events in batches whose goroutine/write ended before the horizon
        # in-flight sweep
        self.active_ends = np.empty(0)
        self.dispatched = 0
        self.retired_tasks = 0
        self.max_end = 0.0

    def finish_time(self) -> float:
        """When the backend's Shutdown returned: drained and every goroutine ended (inf: killed first)."""
        if int(self.S[col.S_MODE]) != col.DONE:
            return math.inf
        end = self.S[col.S_END]
        return max(end if not np.isnan(end) else 0.0, self.max_end)

    # ---- one chunk ----
    def settle(self, life: Lifetime, primary: bool) -> int:
        """After the lifetime's exit: arrivals after the buffer closed are buffered errors before
        the exit and never emitted after it; what a kill left is lost. Returns the never emitted."""
        st = self.stats
        late = np.concatenate(self.after_close) if self.after_close else _EMPTY_F
        n_err, n_gone = split_after_close(late, life.exit)
        if n_err:
            st.drop("buffered", n_err, float(late[0]))
        killed = self.acc_events - self.released_events
        if killed:
            lost = {"buffer-at-kill": self.acc_events - self.dispatched_events,
                    "in-flight-at-kill": self.lost_inflight, "retry-chain-at-kill": self.lost_retry}
            st.in_flight_at_end = 0
            if primary:
                for k, v in lost.items():
                    life.lost[k] += v
        if primary:
            life.lost["not-emitted"] += n_gone
        return n_gone

    def feed(self, chunk: EventChunk | np.ndarray | None, base: int, final: bool) -> None:
        """The next events: a chunk, or (events all of one size: ``self.size``) their times only."""
        sc, st = self.sc, self.stats
        cost: np.ndarray | None
        fail: np.ndarray | None
        if isinstance(chunk, np.ndarray):
            assert self.size is not None and not self.sync  # a shared fused stream (_instance)
            t, sz, ids, cost, fail = chunk, _EMPTY_I, _EMPTY_I, None, None
        elif chunk is not None:
            # event ids key the log writer's per-event draws: only the sync delegate needs them
            ids = np.arange(base, base + len(chunk), dtype=np.int64) if self.sync else _EMPTY_I
            t = chunk.t
            # one size after truncation: the sizes are never read (batch bytes and memory come from
            # self.size) and truncation drops nothing (arrivals.uniform_size)
            sz = _EMPTY_I if self.size is not None else np.asarray(chunk.size, dtype=np.int64)
            tr = self.opts.truncate
            if tr.enabled and self.size is None:
                sz = sz.copy()
                big = sz > tr.max_event_size
                shrink = big & (chunk.level >= REQUEST_LEVEL)
                sz[shrink] = chunk.meta[shrink]
                gone = big & (sz > tr.max_event_size)
                if gone.any():
                    st.drop("truncate", int(gone.sum()), float(t[gone][0]))
                    keep: np.ndarray = ~gone
                    t, sz = t[keep], sz[keep]
                    if self.sync:
                        ids = ids[keep]
            if self.sync:
                cost, fail = sc.log_writer.costs(sc.seed, self.inst, ids)
            else:
                cost = fail = None
        else:
            t, sz, ids = np.empty(0), np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
            cost, fail = np.empty(0), np.empty(0, dtype=bool)
        nq = len(self.q_t)
        cat = (lambda a, b: np.concatenate([a, b])) if nq else (lambda a, b: b)
        at, asz = cat(self.q_t, t), cat(self.q_sz, sz)
        if self.sync:
            aid, acost, afail = cat(self.q_id, ids), cat(self.q_cost, cost), cat(self.q_fail, fail)
        else:
            aid, acost, afail = ids, _EMPTY_F, None
        N = len(at)
        nb_cap = N + 2
        ints, floats, obs = np.empty((3, nb_cap), dtype=np.int64), np.empty((2, nb_cap)), np.empty((2, 2 * N + 4))
        acc, out_a, out_n = ints[0], ints[1], ints[2]
        out_d, out_e = floats[0], floats[1]
        obs_t, obs_v = obs[0], obs[1]
        C = self.C
        seq0 = int(self.S[col.S_SEQ])
        if self.one_only:
            gx = rng.extra_takes(sc.seed, self.inst, np.arange(seq0, seq0 + nb_cap + 1))
        else:
            gx = _EMPTY_I
        i_end = col.run_collector(at, acost, gx, self.P, self.S, C, ints, floats, obs,
                                  (nq, final, self.t_stop, self.horizon, seq0))
        if i_end < N:
            self.after_close.append(at[i_end:N].copy())
        acc_n, qh, nbt = int(C[col.C_ACC_N]), int(C[col.C_QH]), int(C[col.C_NB])
        self._collected(obs_t, obs_v)
        # newly accepted events, for memory
        new_acc = acc[nq:acc_n]
        self.acc_events += len(new_acc)
        # batches
        d, e, a, n = out_d[:nbt], out_e[:nbt], out_a[:nbt], out_n[:nbt]
        # the accepted events' times, gathered once for the batches' latencies and the memory peak;
        # with no drop every arrival taken was accepted, in order (acc[k] == k): a view, no gather
        if not (nbt or (len(new_acc) and self.size is not None)):
            acc_times = _EMPTY_F
        else:
            acc_times = at[:acc_n] if C[col.C_DROPS] == 0 else at[acc[:acc_n]]
        if nbt:
            nbytes = n * self.size if self.size is not None else col.batch_bytes(asz, acc, a, n)
            seq = np.arange(self.dispatched, self.dispatched + nbt, dtype=np.int64)
            self._batch_sizes(n)
            sent = slice(a[0], a[-1] + n[-1])  # batches are consecutive runs of the accepted sequence
            ev_t = acc_times[sent]
            if self.sync:
                end = e
                assert afail is not None  # the sync delegate carries failure flags
                ev_fail = afail[acc[sent]]
                done = end < self.horizon
                done_ev = np.repeat(done, n)
                okm = done_ev & ~ev_fail
                st.delivered += int(okm.sum())
                bad = done_ev & ev_fail
                if bad.any():
                    st.drop("log", int(bad.sum()), float(np.repeat(end, n)[bad].min()))
                st.delivery.add(np.repeat(end, n)[okm] - ev_t[okm])
                st.max_inflight = max(st.max_inflight, 1)
                self.lost_inflight += int(n[~done].sum())
            else:
                end, done = self._webhook(seq, d, n, nbytes, ev_t)
            self._dispatched(n, end, done, nbytes)
        # memory peak over this chunk's accepts: held = accepted bytes - bytes released strictly before
        if len(new_acc):
            order = np.argsort(self.rel_t, kind="stable")
            self.rel_t, self.rel_b = self.rel_t[order], self.rel_b[order]
            if self.size is not None:
                t_acc = acc_times[nq:acc_n]
                peak, acc_bytes, kk, rel_bytes = fused.memory_peak(t_acc, 0, len(t_acc), self.size, self.rel_t,
                                                                   self.rel_b, self.acc_bytes, self.retired_bytes)
            else:
                peak, acc_bytes, kk, rel_bytes = col.memory_peak(at, asz, new_acc, self.rel_t, self.rel_b,
                                                                 self.acc_bytes, self.retired_bytes)
            st.peak_memory = max(st.peak_memory, int(peak))
            # retire releases before the last accept (no later accept can be earlier)
            self.retired_bytes += int(rel_bytes)
            self.rel_t, self.rel_b = self.rel_t[kk:], self.rel_b[kk:]
            self.acc_bytes = int(acc_bytes)
        # carry: the partly collected or pending batch, then the queue
        mode = int(self.S[col.S_MODE])
        front = int(self.S[col.S_BATCH_N]) if mode == col.WAIT else (int(self.S[col.S_PEND_N]) if mode == col.BLOCKED_DISPATCH else 0)
        keep = acc[qh - front:acc_n]
        self.q_t, self.q_sz = at[keep], (asz[keep] if self.size is None else _EMPTY_I)
        if self.sync:
            assert afail is not None  # the sync delegate carries failure flags
            self.q_id, self.q_cost, self.q_fail = aid[keep], acost[keep], afail[keep]
        if final:
            st.in_flight_at_end = self.acc_events - self.released_events

    def feed_generated(self, src: arrivals.Source) -> None:
        """The next arrivals of ``src``, drawn inside the compiled collector (``fused.run_fused``);
        the last call (``src.ended``) runs the collector to its end, like ``feed(final=True)``."""
        st = self.stats
        nq = len(self.q_t)
        wk = workspace.work(nq + FUSED_CALL + FUSED_SLACK)
        acc_t, (obs_t, obs_v) = wk.acc_t, wk.obs
        acc_t[:nq] = self.q_t
        G = src.G
        G[arrivals.G_TSTOP], G[arrivals.G_HORIZON], G[arrivals.G_NQ], G[arrivals.G_K] = self.t_stop, self.horizon, nq, FUSED_CALL
        fused.run_fused(src.state, G, self.P, self.S, self.C, acc_t, wk.obs, wk.d, wk.an)
        C = self.C
        acc_n, qh, nbt = int(C[col.C_ACC_N]), int(C[col.C_QH]), int(C[col.C_NB])
        mode = int(self.S[col.S_MODE])
        assert mode != col.DONE or src.ended  # the stop is never before the last arrival here
        self._collected(obs_t, obs_v)
        self.acc_events += acc_n - nq
        if nbt:
            d, a, n = wk.d[:nbt].copy(), wk.an[0, :nbt].copy(), wk.an[1, :nbt].copy()
            nbytes = n * src.size
            seq = np.arange(self.dispatched, self.dispatched + nbt, dtype=np.int64)
            self._batch_sizes(n)
            end, done = self._webhook(seq, d, n, nbytes, acc_t[a[0]:a[-1] + n[-1]])
            self._dispatched(n, end, done, nbytes)
        if acc_n > nq:
            order = np.argsort(self.rel_t, kind="stable")
            self.rel_t, self.rel_b = self.rel_t[order], self.rel_b[order]
            peak, acc_bytes, kk, rel_bytes = fused.memory_peak(acc_t, nq, acc_n, src.size, self.rel_t, self.rel_b,
                                                               self.acc_bytes, self.retired_bytes)
            st.peak_memory = max(st.peak_memory, int(peak))
            self.retired_bytes += int(rel_bytes)
            self.rel_t, self.rel_b = self.rel_t[kk:], self.rel_b[kk:]
            self.acc_bytes = int(acc_bytes)
        front = int(self.S[col.S_BATCH_N]) if mode == col.WAIT else (int(self.S[col.S_PEND_N]) if mode == col.BLOCKED_DISPATCH else 0)
        self.q_t = acc_t[qh - front:acc_n].copy()
        if src.ended:
            st.in_flight_at_end = self.acc_events - self.released_events

    def _collected(self, obs_t: np.ndarray, obs_v: np.ndarray) -> None:
        """The collector's counters of one call: drops, throttle wait, occupancy."""
        C, st = self.C, self.stats
        drops, no = int(C[col.C_DROPS]), int(C[col.C_NO])
        if drops:
            st.drop("buffered", drops, float(C[col.C_FIRST_DROP]))
        st.throttle_wait += float(C[col.C_TW])
        st.max_occupancy = max(st.max_occupancy, int(C[col.C_MAXOCC]))
        if no and st.occupancy.keep:
            st.occupancy.add_runs(*col.interval_runs(obs_t[:no], obs_v[:no], st.occupancy.interval))

    def _batch_sizes(self, n: np.ndarray) -> None:
        st = self.stats
        st.batches += len(n)
        for k, v in zip(*np.unique(n, return_counts=True)):
            st.batch_size_counts[int(k)] += int(v)
        room = max(0, 100_000 - len(st.batch_sizes))
        st.batch_sizes.extend(n[:room].tolist())

    def _webhook(self, seq: np.ndarray, d: np.ndarray, n: np.ndarray, nbytes: np.ndarray,
                 ev_t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Async batches (dispatch times ``d``, sizes ``n``, events' times ``ev_t`` back to back)
        through the retry loop; returns each goroutine's end and whether it ended before the horizon."""
        sc, st = self.sc, self.stats
        out = run_tasks(sc.receiver, sc.flags.webhook_initial_backoff, sc.seed, self.inst, seq, d, nbytes)
        end = out.end
        started = out.attempt_starts < self.horizon
        st.attempts += int(started.sum())
        codes, cnt = np.unique(out.attempt_codes[started], return_counts=True)
        for c, v in zip(codes.tolist(), cnt.tolist()):
            st.attempts_by_code["<error>" if c < 0 else str(c)] += v
        done: np.ndarray = end < self.horizon
        okb = out.ok & done
        st.delivered += st.delivery.add_spans(end, okb, n, ev_t)
        failb = ~out.ok & done
        if failb.any():
            st.drop("webhook", int(n[failb].sum()), float(end[failb].min()))
        self._inflight(d, end)
        cut = ~done
        if cut.any():
            retry = cut & (out.first_end < self.horizon)
            self.lost_retry += int(n[retry].sum())
            self.lost_inflight += int(n[cut & ~retry].sum())
        return end, done

    def _dispatched(self, n: np.ndarray, end: np.ndarray, done: np.ndarray, nbytes: np.ndarray) -> None:
        self.dispatched += len(n)
        self.dispatched_events += int(n.sum())
        self.released_events += int(n[done].sum())
        self.max_end = max(self.max_end, float(end.max()))
        self.rel_t = np.concatenate([self.rel_t, end])
        self.rel_b = np.concatenate([self.rel_b, nbytes])

    def _inflight(self, d: np.ndarray, end: np.ndarray) -> None:
        """Most goroutines alive at once: at dispatch k, the dispatched so far minus those ended strictly before."""
        allend = np.sort(np.concatenate([self.active_ends, end]))
        finished = np.searchsorted(allend, d, side="left") + self.retired_tasks
        alive = self.dispatched + np.arange(1, len(d) + 1) - finished
        self.stats.max_inflight = max(self.stats.max_inflight, int(alive.max()))
        cut = int(np.searchsorted(allend, d[-1], side="left"))
        self.retired_tasks += cut
        self.active_ends = allend[cut:]


_EMPTY_F = np.empty(0)
_EMPTY_I = np.empty(0, dtype=np.int64)
