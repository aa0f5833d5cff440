"""The report's simulations: each plot's numbers come from the fast engine on a calibrated instance.

All runs replay one calibrated instance (:class:`analysis.calibrate.InstanceModel`), the one with
the highest observed burst rate, over its busiest ``--peak-window`` stretch (the same stretch
``tune recommend`` simulates), with the report's seed. Nothing here decides flags: the flag sets
(current, recommended, rule of thumb) come from ``analysis.recommend.build_report``.

* :func:`knee`: drop fraction against the mean event rate, the busiest stretch rescaled to each
  rate (its burst shape kept), for every flag set;
* :func:`peak_window`: buffer occupancy over the stretch and cumulative drops (runs cut at ``K``
  instants, without the shutdown drain, so each count is "lost by then"), plus the delivery
  latency distribution of the whole run;
* :func:`latency_sweep`: most batches in flight and peak backend memory for a fixed webhook
  latency from 10 ms to the 30 s client timeout;
* :func:`sensitivity`: drop fraction at peak x headroom over a qps x max-size grid around the
  recommended point (other flags as recommended).

Every run replays the stretch with the *observed* burst shape (``InstanceModel.scenario(...,
shape="observed")``: the burstiest shape consistent with the observed mean and short-window peak),
the shape the recommender uses for its validation and its x headroom check. Independent runs (knee,
latency sweep, sensitivity) go over a local process pool of ``--jobs`` workers (fork), results in
task order, so the numbers do not depend on the number of workers.
"""
from __future__ import annotations

import math
import multiprocessing as mp
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from typing import NamedTuple

import numpy as np

from audit_tune.analysis.calibrate import InstanceModel
from audit_tune.basics.jsondata import JsonObject, JsonValue
from audit_tune.sim.api import run
from audit_tune.sim.config import AuditFlags
from audit_tune.sim.latency import Latency
from audit_tune.sim.result import Result

CDF_Q = (0.001, 0.005, *(round(0.01 + 0.02 * k, 2) for k in range(50)), 0.995, 0.999, 1.0)
WEBHOOK_LATENCIES = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 29.0)  # seconds; attempts time out at 30 s
KNEE_POINTS = 14
DROP_CUTS = 12
QPS_FACTORS = (0.25, 0.4, 0.6, 0.8, 1.0, 1.25, 1.6, 2.5)
SIZE_GRID = (10, 25, 50, 100, 200, 250, 400, 500, 800, 1000, 2000)
SHAPE = "observed"


class Task(NamedTuple):
    """One whole-stretch run: the model's steps ``[lo, hi)`` at ``scale`` with ``flags``."""

    model: InstanceModel
    flags: AuditFlags
    seed: int
    scale: float
    lo: int
    hi: int
    engine: str


@dataclass(frozen=True)
class Numbers:
    """What the plots need of one run."""

    events_total: int
    errors: dict[str, int]
    max_inflight: int
    peak_memory: int

    @property
    def drop_fraction(self) -> float:
        return sum(self.errors.values()) / self.events_total if self.events_total else 0.0


def _task(t: Task) -> Numbers:
    """One whole-stretch run (picklable, for the pool)."""
    d = run(t.model.scenario(t.flags, t.seed, scale=t.scale, start=t.lo, stop=t.hi, shape=SHAPE),
            engine=t.engine).to_dict(series=False)
    return Numbers(int(d["events_total"]), {str(k): int(v) for k, v in d["errors"].items()},
                   int(d["max_inflight_batches"]), int(d["peak_memory_bytes"]))


class Sims:
    """Runs the report's scenarios for one instance model and stretch ``[lo, hi)`` (step indices)."""

    def __init__(self, model: InstanceModel, segment: tuple[int, int], seed: int, engine: str = "fast",
                 log: Callable[[str], None] | None = None, jobs: int = 1) -> None:
        self.m, self.lo, self.hi, self.seed, self.engine = model, segment[0], segment[1], seed, engine
        self.log = log or (lambda s: None)
        self.jobs = max(1, min(jobs, os.cpu_count() or 1))
        self._pool: ProcessPoolExecutor | None = None
        self.runs = 0

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None

    def _many(self, runs: list[tuple[AuditFlags, float, InstanceModel | None]]) -> list[Numbers]:
        """Independent whole-stretch runs ``(flags, scale, model or None)``, results in order."""
        tasks = [Task(m or self.m, f, self.seed, scale, self.lo, self.hi, self.engine) for f, scale, m in runs]
        self.runs += len(tasks)
        if self.jobs <= 1 or len(tasks) <= 1:
            return [_task(t) for t in tasks]
        if self._pool is None:
            ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else None
            self._pool = ProcessPoolExecutor(max_workers=self.jobs, mp_context=ctx)
        return list(self._pool.map(_task, tasks, chunksize=max(1, len(tasks) // (4 * self.jobs))))

    @property
    def seconds(self) -> float:
        return (self.hi - self.lo) * self.m.step

    @property
    def mean_rate(self) -> float:
        r = self.m.rates[self.lo:self.hi]
        return float(np.mean(r)) if len(r) else 0.0

    def _run(self, flags: AuditFlags, scale: float = 1.0, stop: int | None = None, drain: bool = True,
             model: InstanceModel | None = None) -> Result:
        m = model or self.m
        self.runs += 1
        sc = m.scenario(flags, self.seed, scale=scale, start=self.lo, stop=self.hi if stop is None else stop,
                        drain=drain, shape=SHAPE)
        return run(sc, engine=self.engine)

    # -- plots ------------------------------------------------------------------------------
    def knee(self, sets: dict[str, AuditFlags], peak: float) -> JsonObject:
        caps = [f.webhook.batch.drain_capacity for f in sets.values() if f.webhook.mode == "batch"]
        caps = [c for c in caps if math.isfinite(c)] or [max(peak, 1.0)]
        lo = max(0.25 * min(min(caps), self.mean_rate or 1.0), 0.1)
        hi = 2.5 * max(max(caps), peak)
        rates = [float(x) for x in np.geomspace(lo, hi, KNEE_POINTS)]
        series: dict[str, JsonValue] = {}
        base = self.mean_rate or 1.0
        names = [n for n, f in sets.items() if f.webhook.mode == "batch"]
        self.log(f"knee: {len(rates)} rates x {len(names)} flag sets")
        res = self._many([(sets[n], r / base, None) for n in names for r in rates])
        for i, n in enumerate(names):
            series[n] = [d.drop_fraction for d in res[i * len(rates):(i + 1) * len(rates)]]
        return {"rates": [*rates], "stretch_seconds": self.seconds, "series": series}

    def peak_window(self, sets: dict[str, AuditFlags]) -> JsonObject:
        per_set: dict[str, JsonValue] = {}
        n = self.hi - self.lo
        cuts = sorted({max(1, int(round(n * k / DROP_CUTS))) for k in range(1, DROP_CUTS + 1)})
        for name, f in sets.items():
            if f.webhook.mode != "batch":
                continue
            self.log(f"peak window: {name}")
            res = self._run(f)
            d = res.to_dict(series=True)
            q = res.instances[0].backends["webhook"].delivery
            cdf = [float(q.quantile(p)) for p in CDF_Q] if q.count else []
            drops_t: list[JsonValue] = [0.0]
            drops: list[JsonValue] = [0]
            for c in cuts:
                dd = self._run(f, stop=self.lo + c, drain=False).to_dict(series=False)
                drops_t.append(c * self.m.step)
                drops.append(int(sum(dd["errors"].values())))
            per_set[name] = {
                "buffer_size": f.webhook.batch.buffer_size,
                "occupancy_interval_seconds": d["occupancy"]["interval_seconds"],
                "occupancy_max": d["occupancy"]["max"][:int(math.ceil(self.seconds / d["occupancy"]["interval_seconds"]))],
                "drops_t": drops_t, "drops_cumulative": drops,
                "events_total": d["events_total"], "errors": d["errors"],
                "max_buffer_occupancy": d["max_buffer_occupancy"],
                "delivery_latency_seconds": d["delivery_latency_seconds"],
                "cdf": {"q": [*CDF_Q] if cdf else [], "seconds": [*cdf]},
            }
        return {"seconds": self.seconds, "sets": per_set}

    def latency_sweep(self, sets: dict[str, AuditFlags]) -> JsonObject:
        per_set: dict[str, JsonValue] = {}
        names = [n for n, f in sets.items() if f.webhook.mode == "batch"]
        self.log(f"webhook latency sweep: {len(WEBHOOK_LATENCIES)} latencies x {len(names)} flag sets")
        models = [replace(self.m, latency=Latency("fixed", lat), failure_rate=0.0) for lat in WEBHOOK_LATENCIES]
        res = self._many([(sets[n], 1.0, m) for n in names for m in models])
        k = len(models)
        for i, n in enumerate(names):
            f, rs = sets[n], res[i * k:(i + 1) * k]
            per_set[n] = {"max_inflight_batches": [d.max_inflight for d in rs],
                          "peak_memory_bytes": [d.peak_memory for d in rs],
                          "qps": f.webhook.batch.throttle_qps, "max_size": f.webhook.batch.max_batch_size}
        return {"webhook_latency_seconds": [*WEBHOOK_LATENCIES], "sets": per_set}

    def sensitivity(self, chosen: AuditFlags, headroom: float) -> JsonObject:
        c = chosen.webhook.batch
        qps = sorted({float(round(c.throttle_qps * k, 3)) for k in QPS_FACTORS})
        sizes = sorted(SIZE_GRID, key=lambda s: (abs(math.log(s / c.max_batch_size)), s))[:7]
        sizes = sorted(set(sizes) | {c.max_batch_size})
        self.log(f"sensitivity: {len(qps)} x {len(sizes)} grid at peak x {headroom:g}")
        runs: list[tuple[AuditFlags, float, InstanceModel | None]] = []
        for ms in sizes:
            for q in qps:
                b = replace(c, throttle_qps=q, max_batch_size=ms, throttle_burst=max(c.throttle_burst, 1))
                runs.append((replace(chosen, webhook=replace(chosen.webhook, batch=b)), headroom, None))
        res = self._many(runs)
        grid: list[JsonValue] = [[d.drop_fraction for d in res[i * len(qps):(i + 1) * len(qps)]]
                                 for i in range(len(sizes))]
        return {"qps": [*qps], "max_size": [*sizes], "drop_fraction": grid, "scale": headroom,
                "chosen": {"qps": c.throttle_qps, "max_size": c.max_batch_size},
                "other_flags": {"buffer_size": c.buffer_size, "max_wait_seconds": c.max_batch_wait,
                                "burst": c.throttle_burst}}
