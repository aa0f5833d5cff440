"""Validation of a calibrated model against the observed window: replay it with the *current* flags
and compare predicted drops by plugin with the snapshot's ``errors_increase``; the calibration
error and a plain confidence level come out of it (``docs/recommend.md``).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TypedDict

import numpy as np

from audit_tune.analysis.calibrate.model import InstanceModel
from audit_tune.sim.api import run
from audit_tune.sim.config import AuditFlags
from audit_tune.sim.units import format_duration

WHOLE_WINDOW_EVENTS = 2_000_000  # up to this, validation replays the whole window
MAX_VALIDATION_EVENTS = 20_000_000  # above this, validation replays the stretches near capacity only


class ValidationDoc(TypedDict):
    """:meth:`Validation.to_dict`."""

    instance: str
    replayed: str
    observed_events: float
    predicted_events: float
    observed_errors: dict[str, float]
    predicted_errors: dict[str, float]
    rate_error: float
    drop_error: float
    confidence: str
    why: str
    partial: bool


@dataclass
class Validation:
    instance: str
    replayed: str  # "whole window" or "N busiest segments of S"
    observed_events: float
    predicted_events: float
    observed_errors: dict[str, float]
    predicted_errors: dict[str, float]
    rate_error: float  # relative error of the replayed event count
    drop_error: float  # sum |pred - obs| over plugins / max(obs, pred, events x 1e-4)
    confidence: str  # high | medium | low
    why: str
    partial: bool = False  # only part of the window could be replayed

    def to_dict(self) -> ValidationDoc:
        return {"instance": self.instance, "replayed": self.replayed, "observed_events": self.observed_events,
                "predicted_events": self.predicted_events, "observed_errors": self.observed_errors,
                "predicted_errors": self.predicted_errors, "rate_error": round(self.rate_error, 4),
                "drop_error": round(self.drop_error, 4), "confidence": self.confidence, "why": self.why,
                "partial": self.partial}


@dataclass(frozen=True)
class ReplayPart:
    """One stretch of a validation replay (picklable: the recommendation's pool runs them)."""

    model: InstanceModel
    flags: AuditFlags
    seed: int
    engine: str
    lo: int
    hi: int

    def key(self) -> tuple[str, float, AuditFlags, int, str, int, int]:
        """What makes two parts the same replay (a model is its instance and its burst sigma here:
        :func:`~analysis.calibrate.model.with_sigma` is the only other model of an instance)."""
        return (self.model.name, self.model.burst.sigma, self.flags, self.seed, self.engine, self.lo, self.hi)


@dataclass(frozen=True)
class PartResult:
    """What validation reads from one replayed stretch."""

    events: int
    errors: dict[str, int]


#: Runs replays: ``mapper(replay_part, parts)`` is ``[replay_part(p) for p in parts]``, possibly on a pool.
Mapper = Callable[[Callable[[ReplayPart], PartResult], list[ReplayPart]], list[PartResult]]


def replay_part(part: ReplayPart) -> PartResult:
    """Replay steps ``lo:hi`` of the model's window (observed shape) under ``flags``."""
    sc = part.model.scenario(part.flags, part.seed, start=part.lo, stop=part.hi, shape="observed")
    t = run(replace(sc, record_latency=False, record_occupancy=False), engine=part.engine).totals()
    return PartResult(t.events_total, t.errors)


def replay_parts(model: InstanceModel, flags: AuditFlags, seed: int = 1, engine: str = "fast",
                 max_events: int = MAX_VALIDATION_EVENTS) -> list[ReplayPart]:
    """The stretches :func:`validate_many` replays for ``model`` (:func:`replay_ranges`)."""
    return [ReplayPart(model, flags, seed, engine, lo, hi) for lo, hi in replay_ranges(model, flags, max_events)[0]]


def validate(model: InstanceModel, flags: AuditFlags, seed: int = 1, engine: str = "fast",
             max_events: int = MAX_VALIDATION_EVENTS,
             mapper: Mapper | None = None) -> Validation:
    """Replay the observed window with the current flags; compare drops with the observed counters.
    ``mapper`` runs the stretches (default: one after the other; the recommendation's pool)."""
    return validate_many([model], flags, seed, engine, max_events, mapper)[0]


def validate_many(models: list[InstanceModel], flags: AuditFlags, seed: int = 1, engine: str = "fast",
                  max_events: int = MAX_VALIDATION_EVENTS, mapper: Mapper | None = None) -> list[Validation]:
    """:func:`validate` for every model, the replayed stretches of all of them in one ``mapper`` call
    (so one model with long stretches does not hold up the others on a pool)."""
    plans = [replay_ranges(m, flags, max_events) for m in models]
    parts = [[ReplayPart(m, flags, seed, engine, lo, hi) for lo, hi in ranges] for m, (ranges, _, _) in zip(models, plans)]
    flat = [p for ps in parts for p in ps]
    results = iter(mapper(replay_part, flat) if mapper is not None else [replay_part(p) for p in flat])
    return [judge(m, ps, [next(results) for _ in ps], replayed, partial)
            for m, ps, (_, replayed, partial) in zip(models, parts, plans)]


def judge(model: InstanceModel, parts: list[ReplayPart], results: list[PartResult], replayed: str,
          partial: bool) -> Validation:
    """The validation of ``model`` from its replayed stretches (:func:`replay_ranges`)."""
    pred: dict[str, float] = {k: 0.0 for k in ("buffered", "webhook", "log", "truncate")}
    pev = 0.0
    obs_in_parts = 0.0
    for part, r in zip(parts, results):
        pev += r.events
        obs_in_parts += float(np.sum(model.rates[part.lo:part.hi])) * model.step
        for k in pred:
            pred[k] += r.errors.get(k, 0)
    whole = float(np.sum(model.rates)) * model.step
    if obs_in_parts < whole and obs_in_parts > 0:
        # webhook failures happen anywhere: scale them to the whole window
        pred["webhook"] *= whole / obs_in_parts
        pev *= whole / obs_in_parts
        obs_in_parts = whole
    obs = model.errors_increase
    obs_events = model.events_increase if not partial else obs_in_parts
    rate_err = abs(pev - obs_events) / obs_events if obs_events > 0 else 0.0
    so, sp = sum(obs.values()), sum(pred.values())
    floor = max(obs_events * 1e-4, 1.0)
    drop_err = sum(abs(pred[k] - obs.get(k, 0.0)) for k in pred) / max(so, sp, floor)
    if so == 0 and sp == 0:
        drop_err = 0.0
    if rate_err <= 0.05 and (drop_err <= 0.25 or (so < floor and sp < floor)):
        conf, why = "high", "replayed events and drops match the observed counters"
    elif rate_err <= 0.15 and drop_err <= 0.6:
        conf, why = "medium", "drops match the observed counters only roughly"
    else:
        conf = "low"
        if so > 0 and sp == 0:
            why = (f"the apiserver lost {so:.0f} events but the model predicts none: bursts shorter than the "
                   f"{format_duration(model.burst.window)} peak window, or receiver outages, are not in the data")
        elif sp > 0 and so == 0:
            why = f"the model predicts {sp:.0f} drops but none were observed: the current flags given may not be the ones in force"
        elif rate_err > 0.15:
            why = f"the replayed event count is off by {100 * rate_err:.0f}% (gaps or resets in the rate series?)"
        else:
            why = f"predicted drops differ from observed by {100 * drop_err:.0f}%"
    if partial and conf != "high":
        conf, why = "low", why + f"; only {replayed} were replayed, so drops elsewhere are not predicted"
    return Validation(model.name, replayed, obs_events, pev, dict(obs), pred, rate_err, drop_err, conf, why, partial)


def replay_ranges(model: InstanceModel, flags: AuditFlags, max_events: float) -> tuple[list[tuple[int, int]], str, bool]:
    """Which steps to replay to predict the window's drops: all of it when small enough; else every
    stretch whose peak reaches half the drain capacity (padded 2 min each side), since buffered
    drops need the rate near capacity; else the busiest segments (partial: said in the output)."""
    n = len(model.rates)
    rates = np.asarray(model.rates, dtype=float)
    if float(rates.sum()) * model.step <= min(max_events, WHOLE_WINDOW_EVENTS):
        return [(0, n)], "whole window", False
    cap = flags.webhook.batch.drain_capacity if flags.webhook.mode == "batch" else math.inf
    peak = np.asarray(model.peak_rates, dtype=float) if model.peak_rates else rates * (model.burst.model_ratio_p90 or 1.0)
    hot = np.flatnonzero(peak >= 0.5 * cap)
    pad = max(1, int(math.ceil(120.0 / model.step)))
    ranges: list[list[int]] = []
    for i in hot.tolist():
        lo, hi = max(i - pad, 0), min(i + pad + 1, n)
        if ranges and lo <= ranges[-1][1]:
            ranges[-1][1] = max(ranges[-1][1], hi)
        else:
            ranges.append([lo, hi])
    ev = sum(float(rates[lo:hi].sum()) * model.step for lo, hi in ranges)
    if ranges and ev <= max_events:
        share = sum(hi - lo for lo, hi in ranges) / n
        return ([(lo, hi) for lo, hi in ranges],
                f"{len(ranges)} stretch(es) at >= 50% of the drain capacity ({100 * share:.0f}% of the window; "
                "the rest is far below capacity)", False)
    if not ranges:
        seg = model.busiest_segments(min(600.0, model.duration), 1)
        return seg, "the busiest 10 minutes (the whole window is far below the drain capacity)", False
    seg_steps = max(1, int(max_events / 3 / max(model.peak_step_rate, 1e-9) / model.step))
    parts = model.busiest_segments(seg_steps * model.step, 3)
    return parts, f"{len(parts)} busiest segments of {format_duration(seg_steps * model.step)}", True
