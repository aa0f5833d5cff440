"""Recommend webhook buffering flags from calibrated instance models (see ``docs/recommend.md``).

The objective (:class:`Objective`; every field is a ``tune recommend`` option):

1. **No buffered drop at the observed peak x headroom**: the busiest ``peak_window`` of every
   instance, rates multiplied by ``headroom``, simulated with ``seeds`` seeds of the fitted bursts
   (fast engine): zero ``buffered`` drops in every run.
2. **P(any drop over the horizon) <= max_drop_probability** at the observed load: a fluid model
   (Lindley recursion per burst window with the fitted lognormal multipliers, Monte Carlo over
   ``FLUID_PATHS`` paths, whole observed window, scaled to ``horizon``) for buffer overflow, plus
   ``1 - (1 - p_fail^5)^batches`` for a batch failing all five webhook attempts.
3. Constraints: ``memory_budget`` per apiserver >= (buffer + one batch being collected + simulated
   peak batches in flight x max size) x event size; p99 delivery latency <= ``max_delivery_latency``
   (batch wait + webhook latency and retries); max size x event size x 1.25 <= ``max_batch_bytes``;
   throttle qps x instances <= ``receiver_max_qps``.

The search: analytic bounds first (capacity ``qps x max_size >= peak x headroom``; buffer >= the
fluid model's burst backlog, at least two batches and one second of peak traffic), candidates
sorted by their analytic memory, then simulation only for the cheapest few (in parallel over a
local process pool), doubling the buffer of a candidate that still drops. Among feasible sets:
least memory, then lowest latency.
"""
from __future__ import annotations

import math
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import numba as nb
import numpy as np

from audit_tune.analysis import check, logbackend, outage
from audit_tune.analysis.calibrate import InstanceModel, lognormal_quantile
from audit_tune.sim.config import AuditFlags, BatchOptions, fmt_float
from audit_tune.basics.errors import InputError
from audit_tune.sim.receiver import ATTEMPTS
from audit_tune.sim.units import format_duration, format_size, parse_duration, parse_size

MAX_SIZES = (50, 100, 200, 250, 400, 500, 800, 1000, 2000)
WAITS = (30.0, 20.0, 10.0, 5.0, 2.0, 1.0)
SIZE_MARGIN = 1.25  # events vary in size: keep max size x mean size x 1.25 under the body limit
FLUID_PATHS = 200
MIN_BUFFER = 1000  # about 1 MiB of events: below that, memory is not worth a thinner safety margin
TUNED = ("audit-webhook-mode", "audit-webhook-initial-backoff", "audit-webhook-batch-buffer-size", "audit-webhook-batch-max-size",
         "audit-webhook-batch-max-wait", "audit-webhook-batch-throttle-enable",
         "audit-webhook-batch-throttle-qps", "audit-webhook-batch-throttle-burst")


def _opt(flag: str, typ: type, help: str) -> dict[str, Any]:
    return {"flag": flag, "type": typ, "help": help}


@dataclass(frozen=True)
class Objective:
    """What "good flags" means. Each field is a ``tune recommend`` option (metadata: flag, help)."""

    headroom: float = field(default=2.0, metadata=_opt(
        "--headroom", float, "No buffered drop at the observed peak times this factor."))
    max_drop_probability: float = field(default=0.01, metadata=_opt(
        "--max-drop-probability", float, "Highest acceptable probability of losing any event over the horizon."))
    horizon: str = field(default="", metadata=_opt(
        "--horizon", str, "Time the drop probability is about, e.g. 30d (default: the snapshot's window)."))
    memory_budget: str = field(default="512MiB", metadata=_opt(
        "--memory-budget", str, "Most bytes of audit events one apiserver may hold (buffer + in flight)."))
    max_delivery_latency: str = field(default="60s", metadata=_opt(
        "--max-delivery-latency", str, "Highest acceptable p99 time from event to receiver."))
    max_batch_bytes: str = field(default="12MiB", metadata=_opt(
        "--max-batch-bytes", str, "Receiver body limit (Falco k8saudit: 12MiB); 0 = none."))
    receiver_max_qps: float = field(default=100.0, metadata=_opt(
        "--receiver-max-qps", float, "Most POSTs/s the receiver takes from all apiservers (throttle qps x instances); 0 = none."))
    seeds: int = field(default=8, metadata=_opt(
        "--seeds", int, "Monte Carlo runs (seeds of the fitted bursts) per instance and load."))
    peak_window: str = field(default="5m", metadata=_opt(
        "--peak-window", str, "Length of the busiest stretch simulated per instance."))
    jobs: int = field(default=2, metadata=_opt(
        "--jobs", int, "Local worker processes for the simulations (1 = in-process)."))
    tolerate_outage: tuple[str, ...] = field(default=(), metadata=_opt(
        "--tolerate-outage", list[str], "Receiver outage the flags must survive: DURATION[:refuse|hang|503|429] "
        "(repeatable; default one 2m outage of the kind the data shows; none = no outage)."))
    tolerate_slowdown: float = field(default=1.0, metadata=_opt(
        "--tolerate-slowdown", float, "Receiver latency x this over the busiest window must lose nothing (1 = off)."))
    tolerate_log_stall: str = field(default="", metadata=_opt(
        "--tolerate-log-stall", str, "With --audit-log-path: a disk that stops for this long (e.g. 30s) must lose nothing."))
    log_write_latency: str = field(default="", metadata=_opt(
        "--log-write-latency", str, "With --audit-log-path: the cost of one audit log write (default: a short probe on this host)."))

    # parsed values, validated once
    def validated(self) -> "Objective":
        if not self.headroom >= 1.0 or not math.isfinite(self.headroom):
            raise InputError(f"--headroom {self.headroom}: must be a number >= 1 (2 = twice the observed peak)")
        if not 0 < self.max_drop_probability < 1:
            raise InputError(f"--max-drop-probability {self.max_drop_probability}: must be within (0, 1), e.g. 0.01")
        if self.horizon:
            if not parse_duration(self.horizon, "--horizon") > 0:
                raise InputError(f"--horizon {self.horizon}: must be > 0, e.g. 30d")
        if not self.memory_bytes > 0:
            raise InputError(f"--memory-budget {self.memory_budget}: must be > 0, e.g. 512MiB")
        if not self.latency_seconds > 0:
            raise InputError(f"--max-delivery-latency {self.max_delivery_latency}: must be > 0, e.g. 60s")
        self.batch_bytes  # noqa: B018 - parse for the error
        if self.receiver_max_qps < 0 or not math.isfinite(self.receiver_max_qps):
            raise InputError(f"--receiver-max-qps {self.receiver_max_qps}: must be >= 0 (0 = no limit)")
        if not 1 <= self.seeds <= 1000:
            raise InputError(f"--seeds {self.seeds}: must be within 1..1000")
        if not parse_duration(self.peak_window, "--peak-window") > 0:
            raise InputError(f"--peak-window {self.peak_window}: must be > 0, e.g. 5m")
        if not 1 <= self.jobs <= 64:
            raise InputError(f"--jobs {self.jobs}: must be within 1..64")
        outage.parse_scenarios(self.tolerate_outage, self.tolerate_slowdown, {})
        logbackend.parse_stall(self.tolerate_log_stall)
        if self.log_write_latency:
            logbackend.write_cost(self.log_write_latency, 1000, 100)
        return self

    @property
    def memory_bytes(self) -> int:
        return parse_size(self.memory_budget, "--memory-budget")

    @property
    def latency_seconds(self) -> float:
        return parse_duration(self.max_delivery_latency, "--max-delivery-latency")

    @property
    def batch_bytes(self) -> int:
        return parse_size(self.max_batch_bytes, "--max-batch-bytes")

    def horizon_seconds(self, window: float) -> float:
        return parse_duration(self.horizon, "--horizon") if self.horizon else window

    def to_dict(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in self.__dataclass_fields__}


# ------------------------------------------------------------------------------------------------
# Flag sets
# ------------------------------------------------------------------------------------------------
def webhook_flags(base: AuditFlags, buffer: int, max_size: int, wait: float, qps: float, burst: int) -> AuditFlags:
    b = BatchOptions(int(buffer), int(max_size), float(wait), True, float(qps), int(burst), async_delegate=True)
    return replace(base, webhook=replace(base.webhook, mode="batch", batch=b)).validate()


def tuned_args(flags: AuditFlags) -> list[str]:
    return flags.to_flags(include=TUNED)


def nice_up(x: float) -> float:
    """Round up to 1, 1.5, 2, 2.5, 3, 4, 5, 6, 8 x 10^k (qps, buffer sizes people can read)."""
    if x <= 0:
        return 0.0
    e = math.floor(math.log10(x))
    for m in (1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10):
        v = m * 10 ** e
        if v >= x * (1 - 1e-12):
            return float(round(v, 6))
    return float(10 ** (e + 1))


def rule_of_thumb(models: list[InstanceModel], base: AuditFlags) -> tuple[AuditFlags, dict[str, Any]]:
    """kubernetes.io "Parameter tuning": batches of 100, qps = rate / 100, buffer = 5 s of events.
    The rate is each instance's busiest step (what a dashboard shows); flags are cluster-wide."""
    rate = max(m.peak_step_rate for m in models)
    qps = max(math.ceil(rate / 100 * 10) / 10, 0.1)
    buffer = max(int(math.ceil(5 * rate)), 100)
    cur = base.webhook.batch
    f = webhook_flags(base, buffer, 100, cur.max_batch_wait, qps, max(cur.throttle_burst, 1))
    return f, {"rate_events_per_second": round(rate, 1), "max_size": 100, "qps": qps, "buffer": buffer,
               "derivation": f"qps = {rate:.0f} ev/s / 100 per batch; buffer = 5 s x {rate:.0f} ev/s (kubernetes.io audit page)"}


# ------------------------------------------------------------------------------------------------
# The fluid model
# ------------------------------------------------------------------------------------------------
def fluid_drop_probability(m: InstanceModel, flags: AuditFlags, horizon: float, paths: int = FLUID_PATHS,
                           seed: int = 1, scale: float = 1.0) -> dict[str, float]:
    """P(any buffered drop over ``horizon``) in the fluid model, and P(a batch fails all attempts)."""
    c = flags.webhook.batch
    cap = c.drain_capacity
    n = max(m.burst.per_step, 1)
    w = m.step / n
    rates = np.asarray(m.rates, dtype=float) * scale
    room = c.buffer_size + (c.throttle_burst * c.max_batch_size if c.throttle_enable else 0)
    g = np.random.default_rng([int(seed), 31337])
    q = np.zeros(paths)
    dropped = np.zeros(paths, dtype=bool)
    chunk = max(1, 20000 // n)
    sig = m.burst.sigma
    xmax = lognormal_quantile(sig, 1 - 1e-7) if n > 1 and sig > 0 else 1.0
    for lo in range(0, len(rates), chunk):
        r = rates[lo:lo + chunk]
        if not q.any() and float(r.max()) * min(xmax, n) <= cap:
            continue  # even the largest plausible window stays under capacity: nothing builds up
        if n > 1 and sig > 0:
            x = np.exp(sig * g.standard_normal((paths, len(r), n)) - sig * sig / 2)
            x /= x.mean(axis=2, keepdims=True)
            a = (r[None, :, None] * x).reshape(paths, -1) * w
        else:
            a = np.broadcast_to(np.repeat(r, n)[None, :] * w, (paths, len(r) * n))
        _fluid_walk(q, dropped, np.ascontiguousarray(a - cap * w), float(room))
    p_window = float(dropped.mean())
    reps = max(horizon / m.duration, 1e-9) if m.duration > 0 else 1.0
    p_buf = 1 - (1 - p_window) ** reps
    if p_window == 0:
        p_buf_upper = 1 - (1 - min(3.0 / paths, 1.0)) ** reps  # rule of three
    else:
        p_buf_upper = p_buf
    # batches failing every attempt
    pf = m.failure_rate
    batches = _batch_count(rates, float(m.step), int(c.max_batch_size), float(c.max_batch_wait))
    batches *= horizon / m.duration if m.duration > 0 else 1.0
    p_wh = 1 - math.exp(batches * math.log1p(-pf ** ATTEMPTS)) if 0 < pf < 1 else (1.0 if pf >= 1 else 0.0)
    return {"buffered": p_buf, "buffered_upper_rule_of_three": p_buf_upper, "webhook": p_wh,
            "any": 1 - (1 - p_buf) * (1 - p_wh), "paths": paths}


@nb.njit(cache=True)
def _fluid_walk(q: np.ndarray, dropped: np.ndarray, net: np.ndarray, room: float) -> None:
    """Reflected random walk per path, q <- max(q + net, 0), marking paths that ever exceed ``room``
    (the same arithmetic, step by step, as the numpy loop it replaces; compiled because it runs
    once per sub-step of every busy stretch)."""
    for p in range(net.shape[0]):
        x = q[p]
        hit = dropped[p]
        for k in range(net.shape[1]):
            x = max(x + net[p, k], 0.0)
            if x > room:
                hit = True
        q[p] = x
        dropped[p] = hit


@nb.njit(cache=True)
def _batch_count(rates: np.ndarray, step: float, max_size: int, wait: float) -> float:
    """Batches the observed window sends: per step, rate x step / (events a batch collects in
    max-wait at that rate, between 1 and max-size)."""
    total = 0.0
    for r in rates:
        if r <= 0:
            continue
        b = min(float(max_size), max(r * wait, 1.0)) if max_size > 1 else 1.0
        total += r * step / b
    return total


# ------------------------------------------------------------------------------------------------
# Simulation tasks (picklable, for the process pool)
# ------------------------------------------------------------------------------------------------
def _sim_task(args: tuple) -> dict[str, Any]:
    from audit_tune.sim.api import run

    model, flags, seed, scale, lo, hi, shape, engine = args
    d = run(model.scenario(flags, seed, scale=scale, start=lo, stop=hi, shape=shape), engine=engine).to_dict(series=False)
    return {"events": d["events_total"], "errors": d["errors"], "peak_memory": d["peak_memory_bytes"],
            "max_inflight": d["max_inflight_batches"], "max_occupancy": d["max_buffer_occupancy"],
            "p99": d["delivery_latency_seconds"]["p99"], "max_latency": d["delivery_latency_seconds"]["max"]}


class Runner:
    """Runs simulation tasks, in-process (jobs=1) or over a local process pool."""

    def __init__(self, jobs: int, engine: str = "fast", progress: Callable[[str], None] | None = None) -> None:
        self.jobs, self.engine, self.progress = jobs, engine, progress
        self._pool: ProcessPoolExecutor | None = None
        self._cache: dict[tuple, dict[str, Any]] = {}
        self.runs = 0

    def map(self, tasks: list[tuple]) -> list[dict[str, Any]]:
        """Results in task order; a task already run (same instance, flags, seed, scale, stretch) is reused."""
        keys = [(t[0].name, t[1], *t[2:]) for t in tasks]
        todo = [(k, t + (self.engine,)) for k, t in zip(keys, tasks) if k not in self._cache]
        todo = list({k: t for k, t in todo}.items())
        self.runs += len(todo)
        if self.jobs <= 1 or len(todo) <= 1:
            res = [_sim_task(t) for _, t in todo]
        else:
            if self._pool is None:
                import multiprocessing as mp

                ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else None
                self._pool = ProcessPoolExecutor(max_workers=min(self.jobs, os.cpu_count() or 1), mp_context=ctx)
            res = list(self._pool.map(_sim_task, [t for _, t in todo], chunksize=max(1, len(todo) // (4 * self.jobs))))
        for (k, _), r in zip(todo, res):
            self._cache[k] = r
        return [self._cache[k] for k in keys]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None


@dataclass
class Evaluation:
    """A flag set run against every instance's busiest stretch at x1 and x headroom."""

    name: str
    flags: AuditFlags
    per_instance: list[dict[str, Any]]
    drops_x1: dict[str, float]  # mean events lost per run, by plugin (all instances)
    drops_headroom: dict[str, float]
    runs_with_drops_x1: float  # share of runs with any loss
    runs_with_drops_headroom: float
    p_drop: float  # fluid model, any drop over the horizon, worst instance
    p_drop_detail: dict[str, Any]
    memory_bound: int  # bytes per apiserver, worst instance
    sim_peak_memory: int
    latency_p99: float | None
    violations: list[str]
    evaluated_x1: bool = True
    seeds: int = 0  # runs per instance and load behind the figures

    @property
    def ok(self) -> bool:
        return not self.violations

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "flags": tuned_args(self.flags), "ok": self.ok, "violations": self.violations,
            "drops_per_run_x1": self.drops_x1, "drops_per_run_headroom": self.drops_headroom,
            "runs_with_drops_x1": self.runs_with_drops_x1, "runs_with_drops_headroom": self.runs_with_drops_headroom,
            "p_any_drop_horizon": self.p_drop, "p_drop_detail": self.p_drop_detail,
            "memory_bound_bytes": self.memory_bound, "sim_peak_memory_bytes": self.sim_peak_memory,
            "delivery_latency_p99_seconds": self.latency_p99, "per_instance": self.per_instance,
            "seeds": self.seeds,
        }


class Recommender:
    def __init__(self, models: list[InstanceModel], objective: Objective, seed: int = 1, engine: str = "fast",
                 progress: Callable[[str], None] | None = None) -> None:
        if not models:
            raise InputError("no instance to recommend for")
        self.models, self.obj, self.seed = models, objective.validated(), seed
        self.runner = Runner(objective.jobs, engine, progress)
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
            if floor > self.obj.memory_bytes:
                excluded.append(f"max-size {ms}: buffer {buf} + 2 batches x {self.size} B = {format_size(floor)} > "
                                f"--memory-budget {self.obj.memory_budget}")
                continue
            out.append((mem, f))
        out.sort(key=lambda x: x[0])
        return [f for _, f in out], excluded

    # -- evaluation ---------------------------------------------------------------------------
    def _tasks(self, flags: AuditFlags, scale: float, shape: str, seeds: int) -> list[tuple]:
        return [(m, flags, self.seed + s, scale, *self.segments[m.name], shape)
                for m in self.models for s in range(seeds)]

    def evaluate_many(self, named: list[tuple[str, AuditFlags]], x1: bool = True,
                      seeds: int | None = None) -> list[Evaluation]:
        """Every flag set against every instance's busiest stretch: at x headroom (observed shape) and,
        with ``x1``, at the observed load (fitted bursts); ``seeds`` runs each (default: the objective's)."""
        seeds = self.obj.seeds if seeds is None else seeds
        tasks, index = [], []
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
        res = self.runner.map(tasks)
        out = []
        for i, (name, f) in enumerate(named):
            if f.webhook.mode != "batch":
                out.append(Evaluation(name, f, [], {}, {}, 0.0, 0.0, 0.0, {}, 0, 0, None, [
                    f"--audit-webhook-mode={f.webhook.mode}: every request waits for the webhook; not simulated "
                    "here (use tune simulate); the recommendation is for batch mode"], x1))
                continue
            by_load = {label: res[a:b] for j, label, a, b in index if j == i}
            out.append(self._evaluation(name, f, by_load, x1, seeds))
        return out

    def _evaluation(self, name: str, f: AuditFlags, by_load: dict[str, list[dict]], x1: bool,
                    seeds: int) -> Evaluation:
        h = self.obj.headroom
        c = f.webhook.batch
        per_inst = []
        viol: list[str] = []

        def drops(rs: list[dict]) -> tuple[dict[str, float], float]:
            if not rs:
                return {}, 0.0
            mean = {k: float(np.mean([r["errors"][k] for r in rs])) for k in ("buffered", "webhook", "truncate")}
            share = float(np.mean([sum(r["errors"].values()) > 0 for r in rs]))
            return mean, share

        d1, s1 = drops(by_load.get("x1", []))
        dh, sh = drops(by_load.get("headroom", []))
        mem_bound, sim_mem, p99s = 0, 0, []
        p_worst, p_detail = 0.0, {}
        for k, m in enumerate(self.models):
            n = seeds
            rh = by_load.get("headroom", [])[k * n:(k + 1) * n]
            r1 = by_load.get("x1", [])[k * n:(k + 1) * n]
            inflight = max((r["max_inflight"] for r in rh + r1), default=0)
            mb = int((c.buffer_size + c.max_batch_size + inflight * c.max_batch_size) * m.event_size)
            mem_bound = max(mem_bound, mb)
            sim_mem = max(sim_mem, max((r["peak_memory"] for r in rh + r1), default=0))
            p99 = [r["p99"] for r in (r1 or rh) if r["p99"] is not None]
            p99s.extend(p99)
            pd = fluid_drop_probability(m, f, self.horizon, seed=self.seed)
            if pd["any"] >= p_worst:
                p_worst, p_detail = pd["any"], {"instance": m.name, **{kk: round(v, 6) if isinstance(v, float) else v
                                                                      for kk, v in pd.items()}}
            per_inst.append({
                "instance": m.name, "segment": [m.times[self.segments[m.name][0]], m.times[self.segments[m.name][1] - 1] + m.step],
                "buffered_drops_headroom_max": max((r["errors"]["buffered"] for r in rh), default=0),
                "buffered_drops_x1_max": max((r["errors"]["buffered"] for r in r1), default=0),
                "max_buffer_occupancy_headroom": max((r["max_occupancy"] for r in rh), default=0),
                "max_inflight_batches": inflight, "memory_bound_bytes": mb,
                "p_any_drop_horizon": round(pd["any"], 6),
                "capacity_events_per_second": c.drain_capacity,
                "peak_burst_event_rate": round(m.peak_burst_rate, 1),
            })
        lat = float(max(p99s)) if p99s else None
        if dh.get("buffered", 0) > 0:
            viol.append(f"buffered drops at the observed peak x {h:g} ({dh['buffered']:.0f} events per run on average)")
        if d1 and sum(d1.values()) > 0:
            viol.append(f"drops at the observed load ({sum(d1.values()):.0f} events per run on average)")
        if p_worst > self.obj.max_drop_probability:
            viol.append(f"P(any drop over {format_duration(self.horizon)}) = {p_worst:.3g} > {self.obj.max_drop_probability:g}")
        if mem_bound > self.obj.memory_bytes:
            viol.append(f"memory {format_size(mem_bound)} > --memory-budget {self.obj.memory_budget}")
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
    def search(self, base: AuditFlags, width: int = 3) -> tuple[Evaluation | None, dict[str, Any]]:
        cands, excluded = self.candidates(base)
        trace: dict[str, Any] = {"analytic_candidates": len(cands), "excluded": excluded, "rounds": []}
        if not cands:
            return None, trace
        best: Evaluation | None = None
        pos = 0
        while pos < len(cands) and best is None:
            group = cands[pos:pos + width]
            pos += width
            for attempt in range(4):
                evs = self._screened([(f"candidate-{i}", f) for i, f in enumerate(group)])
                trace["rounds"].append([{"flags": tuned_args(e.flags), "violations": e.violations,
                                         "seeds": e.seeds} for e in evs])
                ok = [e for e in evs if e.ok]
                if ok:
                    best = min(ok, key=lambda e: (e.memory_bound, e.latency_p99 or 0.0))
                    break
                # only drops can be fixed by a bigger buffer; other violations rule the candidate out
                group = [webhook_flags(e.flags, e.flags.webhook.batch.buffer_size * 2, e.flags.webhook.batch.max_batch_size,
                                       e.flags.webhook.batch.max_batch_wait, e.flags.webhook.batch.throttle_qps,
                                       e.flags.webhook.batch.throttle_burst)
                         for e in evs if all(v.startswith(("buffered drops", "drops", "P(any")) for v in e.violations)]
                if not group:
                    break
        trace["simulation_runs"] = self.runner.runs
        return best, trace

    def _screened(self, named: list[tuple[str, AuditFlags]]) -> list[Evaluation]:
        """Search evaluations at x headroom, screened on the first seed: every check is monotone in the
        seeds (a mean of drops is > 0 once one run drops; memory, p99 latency and in-flight are maxima
        over runs; the fluid probability does not depend on them), so a flag set that violates the
        objective on seed 1 violates it on all seeds and is not run further. Only the survivors run
        every seed (seed 1 is reused from the cache). The chosen flag set is the one the full
        evaluation of every candidate would choose; screened-out candidates report one seed."""
        first = self.evaluate_many(named, x1=False, seeds=1)
        if self.obj.seeds == 1:
            return first
        keep = [k for k, e in enumerate(first) if e.ok]
        full = self.evaluate_many([named[k] for k in keep], x1=False) if keep else []
        out = list(first)
        for k, e in zip(keep, full):
            out[k] = e
        return out

    def explain(self, ev: Evaluation, excluded: list[str]) -> dict[str, Any]:
        """Why each flag has its value, its headroom, and the binding constraint."""
        c = ev.flags.webhook.batch
        peak = self.peak()
        h = self.obj.headroom
        occ = max((p["max_buffer_occupancy_headroom"] for p in ev.per_instance), default=0)
        lat = ev.latency_p99
        body = c.max_batch_size * self.size
        out = {
            "audit-webhook-batch-throttle-qps": {
                "value": fmt_float(c.throttle_qps),
                "why": f"capacity qps x max-size = {c.drain_capacity:,.0f} events/s >= observed peak {peak:,.0f} x headroom {h:g}",
                "headroom": round(c.drain_capacity / peak, 2) if peak else None,
                "headroom_meaning": "capacity / observed peak"},
            "audit-webhook-batch-max-size": {
                "value": c.max_batch_size,
                "why": "least memory among sizes the receiver limits allow" + (f" ({len(excluded)} excluded)" if excluded else ""),
                "headroom": round(self.obj.batch_bytes / body, 2) if self.obj.batch_bytes else None,
                "headroom_meaning": f"--max-batch-bytes / (max-size x {self.size} B)"},
            "audit-webhook-batch-buffer-size": {
                "value": c.buffer_size,
                "why": f"fluid burst backlog at peak x headroom, at least 2 batches, 1 s of peak x headroom and {MIN_BUFFER} events; no drops in simulation",
                "headroom": round(c.buffer_size / occ, 2) if occ else None,
                "headroom_meaning": f"buffer / most events ever waiting (simulated, peak x {h:g})"},
            "audit-webhook-batch-max-wait": {
                "value": format_duration(c.max_batch_wait),
                "why": f"largest wait with wait + webhook p99 (+ one retry when failures are seen) <= half of --max-delivery-latency {self.obj.max_delivery_latency}",
                "headroom": round(self.obj.latency_seconds / lat, 2) if lat else None,
                "headroom_meaning": "--max-delivery-latency / simulated p99 delivery latency"},
            "audit-webhook-batch-throttle-burst": {
                "value": c.throttle_burst,
                "why": "1.5 x qps: catches up after a pause without letting a retry storm through",
                "headroom": None, "headroom_meaning": ""},
        }
        slack = {
            "peak x headroom (capacity)": c.drain_capacity / (peak * h) if peak else math.inf,
            "memory budget": self.obj.memory_bytes / ev.memory_bound if ev.memory_bound else math.inf,
            "delivery latency": self.obj.latency_seconds / lat if lat else math.inf,
            "max batch bytes": self.obj.batch_bytes / (body * SIZE_MARGIN) if self.obj.batch_bytes else math.inf,
            "receiver max qps": (self.obj.receiver_max_qps / (c.throttle_qps * len(self.models))
                                 if self.obj.receiver_max_qps else math.inf),
            "drop probability": (self.obj.max_drop_probability / ev.p_drop) if ev.p_drop > 0 else math.inf,
        }
        binding = min(slack, key=lambda k: slack[k])
        return {"flags": out, "binding_constraint": binding,
                "slack": {k: (round(v, 3) if math.isfinite(v) else None) for k, v in slack.items()}}

    def close(self) -> None:
        self.runner.close()


# ------------------------------------------------------------------------------------------------
# The whole recommendation: calibrate, validate, search, compare
# ------------------------------------------------------------------------------------------------
def calibrate_all(snap: dict[str, Any], current: AuditFlags, seed: int = 1, engine: str = "fast",
                  log: Callable[[str], None] | None = None) -> tuple[list[InstanceModel], list[Any], list[dict[str, str]]]:
    """Calibrate and validate every instance. Returns (models, validations, skipped instances with why).
    Raises :class:`NotEnoughData` (exit 4) when no instance can be calibrated."""
    from audit_tune.analysis.calibrate import calibrate, validate, with_sigma
    from audit_tune.basics.errors import NotEnoughData

    log = log or (lambda s: None)
    models, vals, skipped = [], [], []
    for name in sorted(snap["instances"]):
        try:
            m = calibrate(snap, name)
        except NotEnoughData as e:
            skipped.append({"instance": name, "why": str(e).removeprefix(f"instance {name}: ")})
            continue
        log(f"calibrated {name}: mean {m.mean_rate:,.0f} ev/s, peak {m.peak_burst_rate:,.0f} ev/s, "
            f"sigma {m.burst.sigma:.2f}, event {m.event_size} B")
        if current.webhook.mode != "batch":
            from audit_tune.analysis.calibrate import Validation

            models.append(m)
            vals.append(Validation(name, "not replayed", m.events_increase, 0.0, dict(m.errors_increase),
                                   {k: 0.0 for k in m.errors_increase}, 0.0, 0.0, "medium",
                                   f"current --audit-webhook-mode={current.webhook.mode}: validation needs batch mode"))
            continue
        v = validate(m, current, seed=seed, engine=engine)
        obs_buf = m.errors_increase.get("buffered", 0.0)
        tries = 0
        while (obs_buf > 0 and v.predicted_errors["buffered"] < 0.5 * obs_buf and tries < 3 and m.burst.per_step > 1
               and not v.partial):
            tries += 1
            sig = min(max(m.burst.sigma, 0.2) * 1.5, 2.5)
            m = with_sigma(m, sig, f"raised to {sig:.2f} to reproduce the observed buffered drops")
            v = validate(m, current, seed=seed, engine=engine)
        models.append(m)
        vals.append(v)
    if not models:
        from audit_tune.analysis.calibrate import missing_items

        reasons = [f"{s['instance']}: {s['why']}" for s in skipped] + missing_items(snap)
        raise NotEnoughData("not enough data to recommend: " + ("; ".join(reasons) if reasons else
                            "the snapshot has no instances (no apiserver_audit_event_total series matched the selector)"))
    return models, vals, skipped


def build_report(snap: dict[str, Any], current: AuditFlags, current_source: str, objective: Objective,
                 seed: int = 1, source: dict[str, Any] | None = None, engine: str = "fast",
                 log: Callable[[str], None] | None = None, evaluate: AuditFlags | None = None) -> dict[str, Any]:
    from audit_tune import __version__

    log = log or (lambda s: None)
    obj = objective.validated()
    source = dict(source or {})
    src = snap.get("source") or {}
    source.setdefault("selector", src.get("selector"))
    source.setdefault("window", src.get("window"))
    models, vals, skipped = calibrate_all(snap, current, seed, engine, log)
    rec = Recommender(models, obj, seed=seed, engine=engine, progress=log)
    try:
        log(f"searching: {len(models)} instance(s), {obj.seeds} seeds, peak window {obj.peak_window}")
        best, trace = rec.search(current)
        rot_flags, rot = rule_of_thumb(models, current)
        named = [("current", current)]
        if best is not None:
            named.append(("recommended", best.flags))
        named.append(("rule-of-thumb", rot_flags))
        if evaluate is not None:  # --evaluate: judged like the others, without the observed drops
            named.append(("evaluated", evaluate))
        # ---- receiver failures (analysis/outage.py) ----
        failures = _assess_failures(snap, models, obj, rec, named, best, trace, seed, engine, log)
        if best is not None and failures.survivor_flags is not None and failures.survivor != "recommended":
            named[1] = ("recommended", failures.survivor_flags)
            failures.promote()
        evs = rec.evaluate_many(named, x1=True)
        trace["simulation_runs"] = rec.runner.runs
    finally:
        rec.close()
    for e in evs:
        e.violations.extend(failures.violations_for(e.name))
    by = {e.name: e for e in evs}
    log_part = logbackend.assess_log(current, max(m.peak_burst_rate for m in models), obj.headroom,
                                     max(m.epr for m in models), max(m.event_size for m in models), obj.memory_bytes,
                                     obj.log_write_latency, obj.tolerate_log_stall)
    if log_part:
        by["current"].violations.extend(log_part["flag_sets"][0]["violations"])
    observed_drops = {m.name: {k: v for k, v in m.errors_increase.items() if v} for m in models
                      if any(m.errors_increase.values())}
    cur_viol = list(by["current"].violations)
    if observed_drops:
        cur_viol.insert(0, "observed drops in the snapshot window: " + "; ".join(
            f"{i}: {', '.join(f'{k}={v:.0f}' for k, v in d.items())}" for i, d in observed_drops.items()))
    by["current"].violations = cur_viol
    conf_rank = {"high": 2, "medium": 1, "low": 0}
    confidence = min((v.confidence for v in vals), key=lambda c: conf_rank[c])
    warnings = [f"{m.name}: {w}" for m in models for w in m.warnings]
    if any("default" in m.sources.get("event_size", "") or "default" in m.sources.get("webhook_latency", "")
           for m in models) and confidence == "high":
        confidence = "medium"
        warnings.append("confidence lowered to medium: event size or webhook latency are defaults, not measured")
    warnings += [f"{s['instance']}: skipped, {s['why']}" for s in skipped]
    for miss in snap.get("missing") or []:  # apiservers the snapshot itself could not read
        if miss.get("instance") not in snap["instances"] and miss.get("instance") not in ("*", "", None):
            warnings.append(f"{miss.get('instance')}: not in the recommendation, {miss.get('item')}: {miss.get('why')}"
                            + (f" (fix: {miss['fix']})" if miss.get("fix") else ""))
    if current_source.startswith("kube-apiserver defaults") and any(v.confidence == "low" for v in vals):
        warnings.append("the current flags were not given and the defaults do not explain the observed counters: "
                        "pass --current-flags (flags, a flags file or the kube-apiserver manifest) and re-run")
    recommended = None
    if best is not None:
        ev = by["recommended"]
        recommended = {
            "flags": tuned_args(ev.flags),
            "flags_changed_from_current": [a for a in tuned_args(ev.flags) if a not in tuned_args(current)],
            "explanation": rec.explain(ev, trace["excluded"]),
            "ok": ev.ok, "violations": ev.violations,
        }
        if log_part:  # both backends' flags in every output
            recommended["flags"] += log_part["recommended_flags"]
    blockers = [] if best is not None else why_nothing_fits(trace, models, obj)
    return {
        "kind": "AuditTuneRecommendation",
        "tool": "audit-tune",
        "tool_version": __version__,
        "config": {
            "seed": seed, "engine": engine,
            "source": source,
            "objective": obj.to_dict(),
            "horizon_seconds": rec.horizon,
            "current_flags": tuned_args(current),
            "current_flags_source": current_source,
        },
        "confidence": confidence,
        "calibration": [dict(m.to_dict(), validation=v.to_dict()) for m, v in zip(models, vals)],
        "skipped_instances": skipped,
        "recommended": recommended,
        "no_recommendation_why": blockers,
        "rule_of_thumb": {**rot, "flags": tuned_args(rot_flags)},
        "comparison": [e.to_dict() for e in evs],
        "current_ok": by["current"].ok,
        "current_violations": cur_viol,
        "search": trace,
        "failures": failures.to_dict(),
        "log_backend": log_part,
        "evaluated": _evaluated(by, failures) if evaluate is not None else None,
        "warnings": warnings,
    }


def _evaluated(by: dict[str, "Evaluation"], failures: "outage.FailureAssessment") -> dict[str, Any]:
    cs = check.checks(by["evaluated"].to_dict(), failures.to_dict())
    return {"flags": tuned_args(by["evaluated"].flags), "ok": all(c.ok for c in cs), "checks": [c.to_dict() for c in cs]}


def _assess_failures(snap: dict[str, Any], models: list[InstanceModel], obj: Objective, rec: "Recommender",
                     named: list[tuple[str, AuditFlags]], best: "Evaluation | None", trace: dict[str, Any],
                     seed: int, engine: str, log: Callable[[str], None]) -> "outage.FailureAssessment":
    """The shown flag sets and the search's healthy-feasible candidates under the failure scenarios."""
    from audit_tune.sim.config import parse_flags

    scenarios = outage.parse_scenarios(obj.tolerate_outage, obj.tolerate_slowdown, snap)
    feasible: list[tuple[str, AuditFlags]] = [("recommended", best.flags)] if best is not None else []
    base = named[0][1]
    for r, rnd in enumerate(trace.get("rounds", [])):
        for k, c in enumerate(rnd):
            if not c["violations"]:
                feasible.append((f"candidate-{r}.{k}", parse_flags(c["flags"], base=base)))
    return outage.assess(models, scenarios, named, feasible, obj.memory_bytes,
                         parse_duration(obj.peak_window, "--peak-window"), seed, obj.jobs, engine, log)


def why_nothing_fits(trace: dict[str, Any], models: list[InstanceModel], obj: Objective) -> list[str]:
    """Plain reasons no flag set met the objective: the violations every simulated candidate shared,
    and what would change them."""
    rounds = [c for r in trace.get("rounds", []) for c in r]
    out: list[str] = []
    if not rounds:
        out.append("every max-size was excluded before simulation: " + "; ".join(trace.get("excluded", [])))
        return out
    every = lambda prefix: all(any(v.startswith(prefix) for v in c["violations"]) for c in rounds)  # noqa: E731
    pf = max(m.failure_rate for m in models)
    if every("P(any") and pf > 0:
        out.append(f"the receiver fails {100 * pf:.1f}% of POST attempts, so some batch fails all {ATTEMPTS} attempts "
                   "whatever the buffering flags: fix the receiver, or raise --max-drop-probability")
    if every("p99 delivery latency"):
        out.append("webhook latency and retry backoffs (10 s, 15 s, 22.5 s, 33.75 s) alone exceed "
                   f"--max-delivery-latency {obj.max_delivery_latency}: raise it, or fix the receiver")
    if every("memory"):
        out.append(f"every candidate needs more than --memory-budget {obj.memory_budget}")
    if every("buffered drops") or every("drops at the observed"):
        out.append("drops remain at the largest buffer tried: raise --receiver-max-qps or --max-batch-bytes "
                   "so the drain capacity can grow")
    return out or ["each candidate failed a different constraint; see search.rounds in -f json"]
