"""The fast engine: same ``Scenario`` in, same ``Result`` out as the reference, 100x+ faster.

Per apiserver and per enabled backend, events stream through in chunks (so memory does not grow
with the run's duration):

1. truncation per event (vectorised);
2. the collector (``collector.run_collector``, compiled) decides drops, batches and dispatch times;
3. async batches go through the retry loop (``tasks.run_tasks``, vectorised); sync (log) batches
   already carry their write end from step 2;
4. statistics as the reference defines them: delivery latencies, in-flight batches (a batch counts
   from its dispatch to its goroutine's end, starts before ends at one instant), memory held
   (bytes accepted minus bytes released strictly before each accept), occupancy per interval.

For the common shapes (one asynchronous backend; Poisson arrivals over a step rate profile, a
constant rate or on/off bursts; every audit event emitted at its request's arrival and of one
size; ``arrivals.source`` decides) steps 1 and 2 are fused: the events are drawn inside the
compiled collector (``fused.run_fused``) from the same random streams, so they never exist as
arrays; only accepted events' times are kept, for steps 3 and 4. Several flag sets over the same
events of that kind (``shared.run_many``) share one such stream, drawn once, its blocks of times
fed to each flag set's step 2 (``_run_stream``). Everything else (replayed
traces, deterministic or ramped arrivals, stage offsets, events of several sizes, log backends,
restarts) takes the array path above.

Scenarios with a backend in ``blocking``/``blocking-strict`` mode, or with latency that grows with
concurrency, are run by the reference model (their timing depends on every request's path); the
result's ``engine`` then says ``fast (reference model: <why>)``.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

import numpy as np

from audit_tune.basics.heap import keep_large_blocks
from audit_tune.sim import rng
from audit_tune.sim.config import BackendOptions
from audit_tune.sim.fast import arrivals, fused, workspace
from audit_tune.sim.fast import collector as col
from audit_tune.sim.fast.tasks import run_tasks
from audit_tune.sim.reference import run as ref
from audit_tune.sim.result import BackendStats, InstanceStats, Result
from audit_tune.sim.scenario import Scenario, result_config
from audit_tune.sim.shutdown import EventRouter, Lifetime, Plan, shutdown_report, split_after_close
from audit_tune.sim.throttle import initial_tokens
from audit_tune.sim.workload import LEVELS, EventChunk, add_level_counts, iter_events

ENGINE = "fast"
# arrivals per call of the fused collector: each call's batches then go through the vectorised
# retry loop, latency and memory passes, ~0.25 ms of numpy calls whatever their size. Measured (CPU,
# medians of 5, three rounds), the bench's 5k ev/s x 60 s run: 4.4-4.6 ms at 2^17, 3.9-4.0 ms at
# 2^19; 2 h at 10k ev/s: 0.70 and 0.62 s; 2^20 gains ~1% more for twice the work arrays (2^19:
# ~34 MiB per thread, sim/fast/workspace.py, touched only as far as a run's arrivals reach). The
# per-call sums (throttle wait, latency total) round differently with the call size, in the last ulps.
FUSED_CALL = 1 << 19
# events per block of a fused stream shared by several flag sets (_run_stream): each block is one
# array-path call per lane, so its fixed numpy cost is paid per block, and its work arrays take
# ~72 bytes per event. Measured (CPU s of bench/bench_recommend.py's recommendation, jobs 1, best
# of 3, two rounds): 2^16 4.49/4.54, 2^18 4.30/4.23, 2^19 4.29/4.06, 2^20 4.23/4.05 (72 MiB a call).
STREAM_BLOCK = 1 << 19
FUSED_SLACK = 1024  # room for a group of equal arrival times that straddles a call's budget
REQUEST_LEVEL = LEVELS.index("Request")


def fallback_reason(sc: Scenario) -> str | None:
    if not sc.all_batch:
        return "a backend in blocking mode"
    if sc.receiver.per_inflight:
        return "latency grows with concurrency"
    return None


def run(sc: Scenario, progress: Callable[[float], None] | None = None) -> Result:
    sc.validate()
    why = fallback_reason(sc)
    if why:
        res = ref(sc, progress)
        res.engine = f"fast (reference model: {why})"
        return res
    return run_lanes([sc], progress)[0]


def run_lanes(scs: Sequence[Scenario], progress: Callable[[float], None] | None = None) -> list[Result]:
    """Validated scenarios (``fallback_reason`` None) over one pass of their events: one, or several
    with the same events (``shared.same_events``); each result is :func:`run`'s but for ``wall_seconds``."""
    keep_large_blocks()  # the work arrays of every chunk reuse freed heap (audit_tune/basics/heap.py)
    wall0 = time.perf_counter()
    w = scs[0].workload
    per: list[list[_Lane]] = [[] for _ in scs]
    for i in range(w.instances):
        for k, lane in enumerate(_instance(scs, i, progress if i == 0 else None)):
            per[k].append(lane)
    wall = (time.perf_counter() - wall0) / len(scs)
    out: list[Result] = []
    for sc, lanes in zip(scs, per):
        end = max(ln.end for ln in lanes)
        for ln in lanes:
            ln.st.end_time = end
        res = Result(ENGINE, sc.seed, result_config(sc), [ln.st for ln in lanes],
                     "webhook" if "webhook" in sc.enabled else "log", simulated_seconds=end, wall_seconds=wall,
                     interval=sc.interval)
        if sc.drain:
            res.extra.update(shutdown_report([(ln.plan, ln.refused) for ln in lanes if ln.plan is not None]))
        out.append(res)
    return out


def _instance(scs: Sequence[Scenario], i: int, progress: Callable[[float], None] | None) -> list[_Lane]:
    """Apiserver ``i`` of each scenario, lifetime by lifetime; each chunk fed to every lane's backends."""
    sc = scs[0]
    w = sc.workload
    lanes = [_Lane(s, i) for s in scs]
    plan = lanes[0].plan
    router: EventRouter | None = None  # built for the array path only: a fused stream has no restarts
    while True:
        for ln in lanes:
            ln.start()
        fsrc = arrivals.source(sc, i) if len(lanes) == 1 or all(arrivals.fusable(ln.sc) for ln in lanes) else None
        if fsrc is None and plan is not None and router is None:
            router = EventRouter(w, sc.seed, i, plan)
        src = iter(()) if fsrc is not None else router.chunks() if router is not None else iter_events(w, sc.seed, i)
        if fsrc is not None and len(lanes) == 1:
            _run_fused(fsrc, next(iter(lanes[0].runners.values())), lanes[0].st, progress)
        elif fsrc is not None:
            _run_stream(fsrc, lanes, progress)
        for chunk in src:
            for ln in lanes:
                ln.st.requests_total += add_level_counts(w, ln.st.level_total, chunk.class_counts)
            if plan is None and len(chunk) and chunk.t[-1] >= w.duration:
                chunk = _head(chunk, int(np.searchsorted(chunk.t, w.duration, side="left")))
            if not len(chunk):
                continue
            for ln in lanes:
                ln.push(chunk)
            if progress:
                progress(min(float(chunk.t[-1]) / w.duration, 1.0))
        if all([ln.close(fsrc is not None and len(lanes) == 1) for ln in lanes]):
            break
    for ln in lanes:
        ln.refused = router.refused if router is not None else 0
    return lanes


class _Lane:
    """One scenario's apiserver: statistics, lifetimes, backends, the chunk held back (the last is final)."""

    def __init__(self, sc: Scenario, i: int) -> None:
        self.sc, self.i = sc, i
        self.stats = {name: BackendStats.of(sc, name) for name in sc.enabled}
        self.st = InstanceStats(f"apiserver-{i}", self.stats)
        self.plan = Plan(sc.workload, sc.shutdown, sc.request_timeout, sc.seed, i) if sc.drain else None
        self.runners: dict[str, _Backend] = {}
        self.held: tuple[EventChunk | np.ndarray, int] | None = None
        self.end = math.nan
        self.refused = 0

    def start(self) -> None:
        """The backends of the next lifetime (the whole run without a shutdown plan)."""
        sc, lt = self.sc, self.plan.current if self.plan is not None else None
        self.runners = {name: _Backend(sc, self.i, name, sc.flags.backend(name), self.stats[name], lt)
                        for name in sc.enabled}
        self.held = None

    def push(self, chunk: EventChunk | np.ndarray) -> None:
        if self.held is not None:
            for r in self.runners.values():
                r.feed(self.held[0], self.held[1], final=False)
        self.held = (chunk, self.st.events_total)
        self.st.events_total += len(chunk)

    def close(self, fused: bool) -> bool:
        """Feed the last chunk as final and end the lifetime; True when it was the last one."""
        st, held = self.st, self.held
        for r in self.runners.values():
            if held is not None:
                r.feed(held[0], held[1], final=True)
            elif not fused:
                r.feed(None, st.events_total, final=True)
        plan, self.held = self.plan, None
        if plan is None:
            self.end, self.runners = self.sc.workload.duration, {}
            return True
        last = plan.final
        closed = plan.close(max(r.finish_time() for r in self.runners.values()))
        primary = "webhook" if "webhook" in self.runners else "log"
        for name, r in self.runners.items():
            gone = r.settle(closed, primary=name == primary)
            if name == primary:
                st.events_total -= gone
        if last:
            self.end, self.runners = closed.exit, {}  # only the statistics and the plan outlive the pass
        return last


def _run_stream(src: arrivals.Source, lanes: list[_Lane], progress: Callable[[float], None] | None) -> None:
    """Every event of a fused stream through several lanes' backends (scenarios the fused path serves,
    the same events, other flags): drawn once, by the compiled generator, a block of times at a time,
    each block fed to every lane as the array path feeds a chunk."""
    while True:
        t = arrivals.stream(src, STREAM_BLOCK)
        if len(t):
            for ln in lanes:
                ln.push(t)
            if progress:
                progress(min(float(t[-1]) / src.G[arrivals.G_DUR], 1.0))
        if src.ended:
            break
    for ln in lanes:
        for level, n in zip(src.levels, src.requests()):
            ln.st.level_total[level] += n
            ln.st.requests_total += n


def _run_fused(src: arrivals.Source, backend: _Backend, st: InstanceStats,
               progress: Callable[[float], None] | None) -> None:
    """Every event of a fused stream through its one backend, call by call."""
    while True:
        before = src.drawn
        backend.feed_generated(src)
        st.events_total += src.drawn - before
        if src.ended:
            break
        if progress:
            progress(min(float(src.G[arrivals.G_LAST]) / src.G[arrivals.G_DUR], 1.0))
    for level, n in zip(src.levels, src.requests()):
        st.level_total[level] += n
        st.requests_total += n


class _Backend:
    """One backend of one apiserver, fed chunk by chunk."""

    def __init__(self, sc: Scenario, inst: int, name: str, opts: BackendOptions, stats: BackendStats,
                 life: Lifetime | None) -> None:
        self.sc, self.inst, self.name, self.opts = sc, inst, name, opts
        self.stats = stats
        self.life = life
        c = opts.batch
        self.P = np.array([c.buffer_size, c.max_batch_size, c.max_batch_wait, 1.0 if c.throttle_enable else 0.0,
                           c.effective_qps, float(c.throttle_burst), 0.0 if c.async_delegate else 1.0,
                           sc.log_writer.per_batch])
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
        if nbt:
            nbytes = n * self.size if self.size is not None else col.batch_bytes(asz, acc, a, n)
            seq = np.arange(self.dispatched, self.dispatched + nbt, dtype=np.int64)
            self._batch_sizes(n)
            ev_idx = acc[a[0]:a[-1] + n[-1]]  # batches are consecutive runs of the accepted sequence
            ev_t = at[ev_idx]
            if self.sync:
                end = e
                assert afail is not None  # the sync delegate carries failure flags
                ev_fail = afail[ev_idx]
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
                t_acc = at[new_acc]
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


def _head(c: EventChunk, k: int) -> EventChunk:
    """The events before the horizon (a run that does not drain stops there)."""
    return EventChunk(c.t[:k], c.size[:k], c.meta[:k], c.level[:k], c.req[:k], c.stage[:k], c.class_counts)

