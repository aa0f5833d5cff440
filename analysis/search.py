"""The recommender's search (``docs/recommend.md``, "Search"): analytic bounds first (capacity
``qps x max_size >= peak x headroom``; buffer >= the fluid model's burst backlog, at least two batches
and one second of peak traffic), candidates sorted by their analytic memory, then simulation only for
the cheapest few, doubling the buffer of a candidate that still drops. Among feasible sets: least
memory, then lowest latency. Each evaluation checks every objective of :class:`Objective`.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from audit_tune.analysis.calibrate import InstanceModel
from audit_tune.analysis.evaluation import Evaluation, Explanation, FlagReason, InstanceCheck, SearchTrace, Trial
from audit_tune.analysis.flagsets import MAX_SIZES, MIN_BUFFER, SIZE_MARGIN, WAITS, nice_up, tuned_args, webhook_flags
from audit_tune.analysis.fluid import fluid_drop_probability
from audit_tune.analysis.objective import Objective
from audit_tune.analysis.simrunner import Runner, RunSummary, SimTask
from audit_tune.analysis.taskpool import KeyedRuns, Workers
from audit_tune.basics.errors import InputError
from audit_tune.sim.config import AuditFlags, fmt_float
from audit_tune.sim.units import format_duration, format_size, parse_duration

#: One fluid model computation: instance, flag set, horizon (seconds), seed.
FluidTask = tuple[InstanceModel, AuditFlags, float, int]


def _fluid_task(task: FluidTask) -> dict[str, float]:
    m, f, horizon, seed = task
    return fluid_drop_probability(m, f, horizon, seed=seed)


def choice_key(e: Evaluation) -> tuple[float, float]:
    """What the search minimises among feasible flag sets: memory, then p99 delivery latency."""
    return float(e.memory_bound), e.latency_p99 or 0.0


class Recommender:
    """The search and the evaluations of flag sets, on ``workers`` (default: its own pool of
    ``objective.jobs`` threads, closed by :meth:`close`)."""

    def __init__(self, models: list[InstanceModel], objective: Objective, seed: int = 1, engine: str = "fast",
                 progress: Callable[[str], None] | None = None, workers: Workers | None = None) -> None:
        if not models:
            raise InputError("no instance to recommend for")
        self.models, self.obj, self.seed = models, objective.validated(), seed
        self._own = workers is None
        self.workers = Workers(objective.jobs) if workers is None else workers
        self.runner = Runner(self.workers, engine)
        # the fluid drop probability per instance and flag set, computed once, on the pool
        self._fluids: KeyedRuns[tuple[str, AuditFlags], FluidTask, dict[str, float]] = KeyedRuns(self.workers, _fluid_task)
        #: candidates that pass seed 1 but cannot be chosen (see :meth:`_screened`), and why
        self.dominated: dict[AuditFlags, str] = {}
        self.log = progress or (lambda s: None)
        self.size = max(m.event_size for m in models)
        self.window = max(m.duration for m in models)
        self.horizon = objective.horizon_seconds(self.window)
        self.segments = {m.name: m.busiest_segments(parse_duration(objective.peak_window, "--peak-window"), 1)[0]
                         for m in models}

    # -- analytic bounds ----------------------------------------------------------------------
    def peak(self) -> float:
        return max(m.peak_burst_rate for m in self.models)

    def burst_backlog(self, cap: float, scale: float) -> float:
        """Fluid backlog the busiest observed burst window builds at ``scale`` x load, max over
        instances: ``(peak_burst x scale - C) x w``. Zero once capacity covers the peak x headroom;
        rarer, larger bursts are the drop-probability check's job (:func:`fluid_drop_probability`)."""
        worst = 0.0
        for m in self.models:
            w = m.step / max(m.burst.per_step, 1)
            worst = max(worst, (m.peak_burst_rate * scale - cap) * w)
        return max(worst, 0.0)

    def candidates(self, base: AuditFlags) -> tuple[list[AuditFlags], list[str]]:
        """Analytic candidates, cheapest memory first, and why other max sizes were excluded."""
        h = self.obj.headroom
        need = self.peak() * h
        n_inst = len(self.models)
        out: list[tuple[float, AuditFlags]] = []
        excluded: list[str] = []
        lat_p99 = max(float(np.quantile(m.latency.values, 0.99)) if m.latency.values else m.latency.a
                      for m in self.models)
        retry = 10.0 + lat_p99 if max(m.failure_rate for m in self.models) > 0.001 else 0.0
        wait = next((w for w in WAITS if w + lat_p99 + retry <= self.obj.latency_seconds / 2), WAITS[-1])
        for ms in MAX_SIZES:
            body = ms * self.size * SIZE_MARGIN
            if self.obj.batch_bytes and body > self.obj.batch_bytes:
                excluded.append(f"max-size {ms}: {ms} x {self.size} B x {SIZE_MARGIN} = {format_size(body)} > "
                                f"--max-batch-bytes {self.obj.max_batch_bytes}")
                continue
            qps = max(nice_up(need / ms), 0.5)
            if self.obj.receiver_max_qps and qps * n_inst > self.obj.receiver_max_qps:
                excluded.append(f"max-size {ms}: needs qps {qps:g} x {n_inst} instances = {qps * n_inst:g} > "
                                f"--receiver-max-qps {self.obj.receiver_max_qps:g}")
                continue
            cap = qps * ms
            backlog = self.burst_backlog(cap, h)
            buf = int(nice_up(max(backlog * 1.5, 2 * ms, need * 1.0, MIN_BUFFER)))
            burst = max(int(math.ceil(1.5 * qps)), 2)
            f = webhook_flags(base, buf, ms, wait, qps, burst)
            inflight = max(2.0, qps * (lat_p99 + retry)) * ms
            mem = (buf + ms + inflight) * self.size
            floor = (buf + 2 * ms) * self.size  # buffer + one batch collecting + at least one in flight
            if self.obj.over_budget(floor):
                excluded.append(f"max-size {ms}: buffer {buf} + 2 batches x {self.size} B = "
                                f"{self.obj.memory_factor.explain(floor)} > --memory-budget {self.obj.memory_budget}")
                continue
            out.append((mem, f))
        out.sort(key=lambda x: x[0])
        return [f for _, f in out], excluded

    # -- evaluation ---------------------------------------------------------------------------
    def _tasks(self, flags: AuditFlags, scale: float, shape: str, seeds: int) -> list[SimTask]:
        return [SimTask(m, flags, self.seed + s, scale, *self.segments[m.name], shape)
                for m in self.models for s in range(seeds)]

    def _plan(self, named: list[tuple[str, AuditFlags]], x1: bool,
              seeds: int) -> tuple[list[SimTask], list[tuple[int, str, int, int]]]:
        """The runs behind :meth:`evaluate_many`, and which flag set and load each slice is."""
        tasks: list[SimTask] = []
        index: list[tuple[int, str, int, int]] = []
        for i, (_, f) in enumerate(named):
            if f.webhook.mode != "batch":
                continue
            # x1: the fitted burst model (Monte Carlo); x headroom: the observed peaks, scaled
            loads = [("x1", 1.0, "model")] if x1 else []
            loads.append(("headroom", self.obj.headroom, "observed"))
            for label, scale, shape in loads:
                ts = self._tasks(f, scale, shape, seeds)
                index.append((i, label, len(tasks), len(tasks) + len(ts)))
                tasks.extend(ts)
        return tasks, index

    def prefetch(self, named: list[tuple[str, AuditFlags]], x1: bool = True, idle: bool = True) -> None:
        """Start the runs (and fluid models) a later ``evaluate_many(named, x1)`` needs on threads
        the search leaves idle; with ``idle`` False the runs only ride along with the search's own
        passes over the same events (:meth:`SimRunner.prefetch`)."""
        self.runner.prefetch(self._plan(named, x1, self.obj.seeds)[0], idle)
        self._fluids.prefetch(self._fluid_items(named))

    def _fluid_item(self, m: InstanceModel, f: AuditFlags) -> tuple[tuple[str, AuditFlags], FluidTask]:
        return (m.name, f), (m, f, self.horizon, self.seed)

    def _fluid_items(self, named: list[tuple[str, AuditFlags]]) -> list[tuple[tuple[str, AuditFlags], FluidTask]]:
        return [self._fluid_item(m, f) for _, f in named if f.webhook.mode == "batch" for m in self.models]

    def evaluate_many(self, named: list[tuple[str, AuditFlags]], x1: bool = True,
                      seeds: int | None = None) -> list[Evaluation]:
        """Every flag set against every instance's busiest stretch: at x headroom (observed shape) and,
        with ``x1``, at the observed load (fitted bursts); ``seeds`` runs each (default: the objective's).
        Every flag set runs the same seeds, so comparisons between them are paired."""
        seeds = self.obj.seeds if seeds is None else seeds
        tasks, index = self._plan(named, x1, seeds)
        self._fluids.prefetch(self._fluid_items(named))  # beside the runs, not after them
        res = self.runner.map(tasks)
        out: list[Evaluation] = []
        for i, (name, f) in enumerate(named):
            if f.webhook.mode != "batch":
                out.append(Evaluation(name, f, [], {}, {}, 0.0, 0.0, 0.0, {}, 0, 0, None, [
                    f"--audit-webhook-mode={f.webhook.mode}: every request waits for the webhook; not simulated "
                    "here (use tune simulate); the recommendation is for batch mode"], x1))
                continue
            by_load = {label: res[a:b] for j, label, a, b in index if j == i}
            out.append(self._evaluation(name, f, by_load, x1, seeds))
        return out

    def _fluid(self, m: InstanceModel, f: AuditFlags) -> dict[str, float]:
        """The fluid drop probability of ``m`` under ``f`` (computed once per instance and flag set, on
        the pool beside the flag set's runs: the screen, the full evaluation and the comparison ask
        for the same ones; the same doubles in any process, its generator seeded by ``seed``)."""
        return self._fluids.map([self._fluid_item(m, f)])[0]

    def _evaluation(self, name: str, f: AuditFlags, by_load: dict[str, list[RunSummary]], x1: bool,
                    seeds: int) -> Evaluation:
        h = self.obj.headroom
        c = f.webhook.batch
        per_inst: list[InstanceCheck] = []
        viol: list[str] = []

        def drops(rs: list[RunSummary]) -> tuple[dict[str, float], float]:
            if not rs:
                return {}, 0.0
            mean = {k: float(np.mean([r.errors[k] for r in rs])) for k in ("buffered", "webhook", "truncate")}
            share = float(np.mean([sum(r.errors.values()) > 0 for r in rs]))
            return mean, share

        d1, s1 = drops(by_load.get("x1", []))
        dh, sh = drops(by_load.get("headroom", []))
        mem_bound, sim_mem = 0, 0
        p99s: list[float] = []
        p_worst: float = 0.0
        p_detail: dict[str, float | str] = {}
        for k, m in enumerate(self.models):
            n = seeds
            rh = by_load.get("headroom", [])[k * n:(k + 1) * n]
            r1 = by_load.get("x1", [])[k * n:(k + 1) * n]
            inflight = max((r.max_inflight for r in rh + r1), default=0)
            mb = int((c.buffer_size + c.max_batch_size + inflight * c.max_batch_size) * m.event_size)
            mem_bound = max(mem_bound, mb)
            sim_mem = max(sim_mem, max((r.peak_memory for r in rh + r1), default=0))
            p99 = [r.p99 for r in (r1 or rh) if r.p99 is not None]
            p99s.extend(p99)
            pd = self._fluid(m, f)
            if pd["any"] >= p_worst:
                p_worst, p_detail = pd["any"], {"instance": m.name, **{kk: round(v, 6) if isinstance(v, float) else v
                                                                      for kk, v in pd.items()}}
            lo, hi = self.segments[m.name]
            per_inst.append(InstanceCheck(
                instance=m.name, segment=[m.times[lo], m.times[hi - 1] + m.step],
                buffered_drops_headroom_max=max((r.errors["buffered"] for r in rh), default=0),
                buffered_drops_x1_max=max((r.errors["buffered"] for r in r1), default=0),
                max_buffer_occupancy_headroom=max((r.max_occupancy for r in rh), default=0),
                max_inflight_batches=inflight, memory_bound_bytes=mb,
                p_any_drop_horizon=round(pd["any"], 6),
                capacity_events_per_second=c.drain_capacity,
                peak_burst_event_rate=round(m.peak_burst_rate, 1),
            ))
        lat = float(max(p99s)) if p99s else None
        if dh.get("buffered", 0) > 0:
            viol.append(f"buffered drops at the observed peak x {h:g} ({dh['buffered']:.0f} events per run on average)")
        if d1 and sum(d1.values()) > 0:
            viol.append(f"drops at the observed load ({sum(d1.values()):.0f} events per run on average)")
        if p_worst > self.obj.max_drop_probability:
            viol.append(f"P(any drop over {format_duration(self.horizon)}) = {p_worst:.3g} > {self.obj.max_drop_probability:g}")
        if self.obj.over_budget(mem_bound):
            viol.append(f"memory {self.obj.memory_factor.explain(mem_bound)} > --memory-budget {self.obj.memory_budget}")
        if lat is not None and lat > self.obj.latency_seconds:
            viol.append(f"p99 delivery latency {lat:.1f}s > --max-delivery-latency {self.obj.max_delivery_latency}")
        body = c.max_batch_size * self.size * SIZE_MARGIN
        if self.obj.batch_bytes and body > self.obj.batch_bytes:
            viol.append(f"batch body up to {format_size(body)} > --max-batch-bytes {self.obj.max_batch_bytes}")
        if self.obj.receiver_max_qps and c.throttle_enable and c.throttle_qps * len(self.models) > self.obj.receiver_max_qps:
            viol.append(f"throttle {c.throttle_qps:g} qps x {len(self.models)} instances > --receiver-max-qps {self.obj.receiver_max_qps:g}")
        if not c.throttle_enable and self.obj.receiver_max_qps:
            viol.append("throttle disabled: the receiver's POST rate is unbounded")
        return Evaluation(name, f, per_inst, d1, dh, s1, sh, p_worst, p_detail, mem_bound, sim_mem, lat, viol, x1, seeds)

    # -- the search ---------------------------------------------------------------------------
    def search(self, base: AuditFlags, width: int = 3) -> tuple[Evaluation | None, SearchTrace]:
        cands, excluded = self.candidates(base)
        rounds: list[list[Trial]] = []
        if not cands:
            return None, SearchTrace(0, excluded, rounds, self.runner.runs)
        best: Evaluation | None = None
        pos = 0
        while pos < len(cands) and best is None:
            group = cands[pos:pos + width]
            pos += width
            for _attempt in range(4):
                evs = self._screened([(f"candidate-{i}", f) for i, f in enumerate(group)])
                rounds.append([Trial(tuned_args(e.flags), e.violations, e.seeds, self.dominated.get(e.flags, ""))
                               for e in evs])
                ok = [e for e in evs if e.ok and e.flags not in self.dominated]
                if ok:
                    best = min(ok, key=choice_key)
                    break
                # only drops can be fixed by a bigger buffer; other violations rule the candidate out
                group = [webhook_flags(e.flags, e.flags.webhook.batch.buffer_size * 2, e.flags.webhook.batch.max_batch_size,
                                       e.flags.webhook.batch.max_batch_wait, e.flags.webhook.batch.throttle_qps,
                                       e.flags.webhook.batch.throttle_burst)
                         for e in evs if all(v.startswith(("buffered drops", "drops", "P(any")) for v in e.violations)]
                if not group:
                    break
        return best, SearchTrace(len(cands), excluded, rounds, self.runner.runs)

    def _screened(self, named: list[tuple[str, AuditFlags]]) -> list[Evaluation]:
        """Search evaluations at x headroom, screened on the first seed: every check is monotone in the
        seeds (a mean of drops is > 0 once one run drops; memory, p99 latency and in-flight are maxima
        over runs; the fluid probability does not depend on them), so a flag set that violates the
        objective on seed 1 violates it on all seeds and is not run further.

        The survivors run every seed (seed 1 is reused from the cache) in the order of their seed-1
        :func:`choice_key`, which is a lower bound of their full key (memory and latency are maxima
        over runs, so more seeds can only raise them). A survivor whose seed-1 key is already above
        the full key of a feasible one cannot be chosen and is not run further either: it is recorded
        in :attr:`dominated` (its figures are from seed 1). The chosen flag set is the one the full
        evaluation of every candidate would choose; screened-out candidates report one seed."""
        first = self.evaluate_many(named, x1=False, seeds=1)
        if self.obj.seeds == 1:
            return first
        out = list(first)
        best: tuple[float, float] | None = None
        for k in sorted((k for k, e in enumerate(first) if e.ok), key=lambda k: (choice_key(first[k]), k)):
            low = choice_key(first[k])
            if best is not None and low > best:
                self.dominated[first[k].flags] = (
                    f"not run past seed 1: its seed-1 memory {format_size(int(low[0]))} and p99 latency {low[1]:.1f}s "
                    f"already exceed a feasible candidate's ({format_size(int(best[0]))}, {best[1]:.1f}s)")
                continue
            out[k] = self.evaluate_many([named[k]], x1=False)[0]
            if out[k].ok and (best is None or choice_key(out[k]) < best):
                best = choice_key(out[k])
        return out

    def confirm_many(self, flags: list[AuditFlags]) -> list[bool]:
        """Run candidates :meth:`_screened` left at seed 1 as dominated on every seed, in one round of
        runs; True for each that meets the objective there too (they then stop being dominated)."""
        evs = self.evaluate_many([(f"candidate-{k}", f) for k, f in enumerate(flags)], x1=False)
        for f in flags:
            self.dominated.pop(f, None)
        return [e.ok for e in evs]

    def explain(self, ev: Evaluation, excluded: list[str]) -> Explanation:
        """Why each flag has its value, its headroom, and the binding constraint."""
        c = ev.flags.webhook.batch
        peak = self.peak()
        h = self.obj.headroom
        occ = max((p.max_buffer_occupancy_headroom for p in ev.per_instance), default=0)
        lat = ev.latency_p99
        body = c.max_batch_size * self.size
        out = {
            "audit-webhook-batch-throttle-qps": FlagReason(
                value=fmt_float(c.throttle_qps),
                why=f"capacity qps x max-size = {c.drain_capacity:,.0f} events/s >= observed peak {peak:,.0f} x headroom {h:g}",
                headroom=round(c.drain_capacity / peak, 2) if peak else None,
                headroom_meaning="capacity / observed peak"),
            "audit-webhook-batch-max-size": FlagReason(
                value=c.max_batch_size,
                why="least memory among sizes the receiver limits allow" + (f" ({len(excluded)} excluded)" if excluded else ""),
                headroom=round(self.obj.batch_bytes / body, 2) if self.obj.batch_bytes else None,
                headroom_meaning=f"--max-batch-bytes / (max-size x {self.size} B)"),
            "audit-webhook-batch-buffer-size": FlagReason(
                value=c.buffer_size,
                why=f"fluid burst backlog at peak x headroom, at least 2 batches, 1 s of peak x headroom and {MIN_BUFFER} events; no drops in simulation",
                headroom=round(c.buffer_size / occ, 2) if occ else None,
                headroom_meaning=f"buffer / most events ever waiting (simulated, peak x {h:g})"),
            "audit-webhook-batch-max-wait": FlagReason(
                value=format_duration(c.max_batch_wait),
                why=f"largest wait with wait + webhook p99 (+ one retry when failures are seen) <= half of --max-delivery-latency {self.obj.max_delivery_latency}",
                headroom=round(self.obj.latency_seconds / lat, 2) if lat else None,
                headroom_meaning="--max-delivery-latency / simulated p99 delivery latency"),
            "audit-webhook-batch-throttle-burst": FlagReason(
                value=c.throttle_burst,
                why="1.5 x qps: catches up after a pause without letting a retry storm through",
                headroom=None, headroom_meaning=""),
        }
        slack = {
            "peak x headroom (capacity)": c.drain_capacity / (peak * h) if peak else math.inf,
            "memory budget": (self.obj.memory_bytes / self.obj.memory_factor.apiserver_bytes(ev.memory_bound)
                              if ev.memory_bound else math.inf),
            "delivery latency": self.obj.latency_seconds / lat if lat else math.inf,
            "max batch bytes": self.obj.batch_bytes / (body * SIZE_MARGIN) if self.obj.batch_bytes else math.inf,
            "receiver max qps": (self.obj.receiver_max_qps / (c.throttle_qps * len(self.models))
                                 if self.obj.receiver_max_qps else math.inf),
            "drop probability": (self.obj.max_drop_probability / ev.p_drop) if ev.p_drop > 0 else math.inf,
        }
        binding = min(slack, key=lambda k: slack[k])
        return Explanation(out, binding,
                           {k: (round(v, 3) if math.isfinite(v) else None) for k, v in slack.items()})

    def close(self) -> None:
        self.runner.close()
        self._fluids.close()
        if self._own:
            self.workers.close()
