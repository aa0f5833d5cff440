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
"""
from __future__ import annotations

import math
from dataclasses import replace
from typing import Any, Callable

import numpy as np

from analysis.calibrate import InstanceModel
from sim.api import run
from sim.config import AuditFlags
from sim.latency import Latency

CDF_Q = (0.001, 0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 0.999, 1.0)
WEBHOOK_LATENCIES = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 29.0)  # seconds; attempts time out at 30 s
KNEE_POINTS = 14
DROP_CUTS = 12
QPS_FACTORS = (0.25, 0.4, 0.6, 0.8, 1.0, 1.25, 1.6, 2.5)
SIZE_GRID = (10, 25, 50, 100, 200, 250, 400, 500, 800, 1000, 2000)


def _drop_fraction(d: dict[str, Any]) -> float:
    ev = d["events_total"]
    return sum(d["errors"].values()) / ev if ev else 0.0


class Sims:
    """Runs the report's scenarios for one instance model and stretch ``[lo, hi)`` (step indices)."""

    def __init__(self, model: InstanceModel, segment: tuple[int, int], seed: int, engine: str = "fast",
                 log: Callable[[str], None] | None = None) -> None:
        self.m, self.lo, self.hi, self.seed, self.engine = model, segment[0], segment[1], seed, engine
        self.log = log or (lambda s: None)
        self.runs = 0

    @property
    def seconds(self) -> float:
        return (self.hi - self.lo) * self.m.step

    @property
    def mean_rate(self) -> float:
        r = self.m.rates[self.lo:self.hi]
        return float(np.mean(r)) if len(r) else 0.0

    def _run(self, flags: AuditFlags, scale: float = 1.0, stop: int | None = None, drain: bool = True,
             model: InstanceModel | None = None) -> Any:
        m = model or self.m
        self.runs += 1
        sc = m.scenario(flags, self.seed, scale=scale, start=self.lo, stop=self.hi if stop is None else stop,
                        drain=drain)
        return run(sc, engine=self.engine)

    # -- plots ------------------------------------------------------------------------------
    def knee(self, sets: dict[str, AuditFlags], peak: float) -> dict[str, Any]:
        caps = [f.webhook.batch.drain_capacity for f in sets.values() if f.webhook.mode == "batch"]
        caps = [c for c in caps if math.isfinite(c)] or [max(peak, 1.0)]
        lo = max(0.25 * min(min(caps), self.mean_rate or 1.0), 0.1)
        hi = 2.5 * max(max(caps), peak)
        rates = [float(x) for x in np.geomspace(lo, hi, KNEE_POINTS)]
        out: dict[str, Any] = {"rates": rates, "stretch_seconds": self.seconds, "series": {}}
        base = self.mean_rate or 1.0
        for name, f in sets.items():
            if f.webhook.mode != "batch":
                continue
            self.log(f"knee: {name}")
            out["series"][name] = [_drop_fraction(self._run(f, scale=r / base).to_dict(series=False)) for r in rates]
        return out

    def peak_window(self, sets: dict[str, AuditFlags]) -> dict[str, Any]:
        out: dict[str, Any] = {"seconds": self.seconds, "sets": {}}
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
            drops_t, drops = [0.0], [0]
            for c in cuts:
                dd = self._run(f, stop=self.lo + c, drain=False).to_dict(series=False)
                drops_t.append(c * self.m.step)
                drops.append(int(sum(dd["errors"].values())))
            out["sets"][name] = {
                "buffer_size": f.webhook.batch.buffer_size,
                "occupancy_interval_seconds": d["occupancy"]["interval_seconds"],
                "occupancy_max": d["occupancy"]["max"][:int(math.ceil(self.seconds / d["occupancy"]["interval_seconds"]))],
                "drops_t": drops_t, "drops_cumulative": drops,
                "events_total": d["events_total"], "errors": d["errors"],
                "max_buffer_occupancy": d["max_buffer_occupancy"],
                "delivery_latency_seconds": d["delivery_latency_seconds"],
                "cdf": {"q": list(CDF_Q) if cdf else [], "seconds": cdf},
            }
        return out

    def latency_sweep(self, sets: dict[str, AuditFlags]) -> dict[str, Any]:
        out: dict[str, Any] = {"webhook_latency_seconds": list(WEBHOOK_LATENCIES), "sets": {}}
        for name, f in sets.items():
            if f.webhook.mode != "batch":
                continue
            self.log(f"webhook latency sweep: {name}")
            inflight, mem = [], []
            for lat in WEBHOOK_LATENCIES:
                m = replace(self.m, latency=Latency("fixed", lat), failure_rate=0.0)
                d = self._run(f, model=m).to_dict(series=False)
                inflight.append(d["max_inflight_batches"])
                mem.append(d["peak_memory_bytes"])
            out["sets"][name] = {"max_inflight_batches": inflight, "peak_memory_bytes": mem,
                                 "qps": f.webhook.batch.throttle_qps, "max_size": f.webhook.batch.max_batch_size}
        return out

    def sensitivity(self, chosen: AuditFlags, headroom: float) -> dict[str, Any]:
        c = chosen.webhook.batch
        qps = sorted({float(round(c.throttle_qps * k, 3)) for k in QPS_FACTORS})
        sizes = sorted(SIZE_GRID, key=lambda s: (abs(math.log(s / c.max_batch_size)), s))[:7]
        sizes = sorted(set(sizes) | {c.max_batch_size})
        self.log(f"sensitivity: {len(qps)} x {len(sizes)} grid at peak x {headroom:g}")
        grid = []
        for ms in sizes:
            row = []
            for q in qps:
                b = replace(c, throttle_qps=q, max_batch_size=ms, throttle_burst=max(c.throttle_burst, 1))
                f = replace(chosen, webhook=replace(chosen.webhook, batch=b))
                row.append(_drop_fraction(self._run(f, scale=headroom).to_dict(series=False)))
            grid.append(row)
        return {"qps": qps, "max_size": sizes, "drop_fraction": grid, "scale": headroom,
                "chosen": {"qps": c.throttle_qps, "max_size": c.max_batch_size},
                "other_flags": {"buffer_size": c.buffer_size, "max_wait_seconds": c.max_batch_wait,
                                "burst": c.throttle_burst}}
